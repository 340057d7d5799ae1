"""`Budget`: the compute a search may spend, in example-forwards, and an optional wall-clock limit."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from autoprompt.errors import BudgetExhausted


class Budget:
    """Compute spent by a search, in example-forwards (a backward counts as two).

    The tokens those forwards ran are counted beside them (``tokens``): an example shown with eight
    demonstrations is one example-forward, as for every strategy, but many more tokens.

    Args:
        max_forwards: the limit in example-forwards, or None for no limit.
        max_seconds: an optional wall-clock limit.
    """

    def __init__(self, max_forwards: int | None = None, max_seconds: float | None = None) -> None:
        self.max_forwards = max_forwards
        self.max_seconds = max_seconds
        self.forwards = 0
        self.backwards = 0
        self.tokens = 0
        self.started = time.monotonic()

    @property
    def used(self) -> int:
        return self.forwards + 2 * self.backwards

    @property
    def remaining(self) -> float:
        return float("inf") if self.max_forwards is None else self.max_forwards - self.used

    @property
    def exhausted(self) -> bool:
        late = self.max_seconds is not None and time.monotonic() - self.started >= self.max_seconds
        return self.remaining <= 0 or late

    def require(self, forwards: int = 0, backwards: int = 0) -> None:
        """Raise `BudgetExhausted` unless this much work still fits (free work always fits)."""
        cost = forwards + 2 * backwards
        if cost and (cost > self.remaining or self.exhausted):
            raise BudgetExhausted(f"budget spent: {self.used} of {self.max_forwards} example-forwards")

    @contextmanager
    def paying(self, forwards: int = 0, backwards: int = 0) -> Iterator[None]:
        """Check this much work fits (`require`), run the ``with`` block, then `charge` for it."""
        self.require(forwards, backwards)
        yield
        self.charge(forwards, backwards)

    def charge(self, forwards: int = 0, backwards: int = 0, tokens: int = 0) -> None:
        self.forwards += forwards
        self.backwards += backwards
        self.tokens += tokens

    def to_json(self) -> dict[str, Any]:
        return {"forwards": self.forwards, "backwards": self.backwards, "used": self.used,
                "limit": self.max_forwards, "max_seconds": self.max_seconds, "tokens": self.tokens}
