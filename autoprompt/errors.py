"""The one exception type users see: a one-line message that names the problem and the fix."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

_NAMED = re.compile(r"`([a-z_][a-z0-9_]*)(?:=([^`]*))?`")


class AutopromptError(ValueError):
    """Bad input or an unusable environment, reported as one line (the CLI exits with code 2).

    The message names settings as the Python API spells them, in backticks (```data_seed```,
    ```clip=1```), so each front end can word them its own way (`worded`): the CLI writes
    ``--data-seed``, and ``--param clip=1`` for the strategy parameters listed in ``params``.

    Args:
        message: what is wrong and how to fix it.
        params: the backticked names in ``message`` that are a strategy's hyper-parameters.
    """

    def __init__(self, message: str, *, params: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.params = tuple(params)

    def worded(self, name: Callable[[str, str | None, bool], str | None]) -> str:
        """The message with every backticked setting replaced by ``name(setting, value, is_param)``
        (``None`` keeps it as written)."""

        def replace(match: re.Match[str]) -> str:
            worded = name(match[1], match[2], match[1] in self.params)
            return match[0] if worded is None else worded

        return _NAMED.sub(replace, str(self))


class BudgetExhausted(RuntimeError):
    """Raised by `Budget.require` (before the work, never after it) when a search has spent its forwards or
    its wall-clock limit."""


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C during a search, after its last step was checkpointed; ``run_dir`` resumes it."""

    def __init__(self, run_dir: str) -> None:
        super().__init__(run_dir)
        self.run_dir = run_dir
