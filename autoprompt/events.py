"""Progress and warnings as events: the core reports them, a listener decides how they look.

The core never draws the screen. A long job opens a `Progress` and advances it; a problem the
user should know about goes to `warn`. Both reach the listener installed with `listening` (the
CLI installs one that draws progress bars); without one, progress is dropped and warnings go to
the ``autoprompt`` logger, which Python prints to stderr unless configured otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

logger = logging.getLogger("autoprompt")


class Listener:
    """Receives the core's events; override what you want to show. The base class shows nothing
    but warnings (through `logger`)."""

    def started(self, job: str, total: int | None, unit: str, initial: int = 0) -> None:
        """A job of ``total`` units (``None``: unknown) began, ``initial`` of them already done."""

    def advanced(self, job: str, done: int, info: dict[str, Any]) -> None:
        """``done`` units of ``job`` are finished; ``info`` says how it stands (e.g. ``best_dev``)."""

    def ended(self, job: str) -> None:
        """``job`` finished or stopped."""

    def warned(self, message: str) -> None:
        """Something the user should read (it is also kept in the result it concerns)."""
        logger.warning(message)


_listener: ContextVar[Listener] = ContextVar("autoprompt_listener", default=Listener())  # noqa: B039


@contextmanager
def listening(listener: Listener) -> Iterator[Listener]:
    """Send the events of the code run inside the ``with`` block to ``listener``."""
    token = _listener.set(listener)
    try:
        yield listener
    finally:
        _listener.reset(token)


def warn(message: str) -> None:
    """Tell the user ``message`` through the current listener."""
    _listener.get().warned(message)


class Progress:
    """A job's progress, reported to the current listener (nothing at all when not ``enabled``).

    Use as a context manager: ``with Progress("scoring", total, "ex") as p: ... p.advance(n)``.
    """

    def __init__(self, job: str, total: int | None, unit: str, initial: int = 0, enabled: bool = True) -> None:
        self.job, self.total, self.unit, self.done, self.enabled = job, total, unit, initial, enabled
        self._listener = _listener.get()

    def __enter__(self) -> Progress:
        if self.enabled:
            self._listener.started(self.job, self.total, self.unit, self.done)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._listener.ended(self.job)

    def advance(self, units: int, **info: Any) -> None:
        """``units`` more are done."""
        self.update(self.done + units, **info)

    def update(self, done: int, **info: Any) -> None:
        """``done`` units are done in all."""
        self.done = done
        if self.enabled:
            self._listener.advanced(self.job, done, info)
