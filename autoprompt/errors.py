"""The one exception type users see: a one-line message that names the problem and the fix."""

from __future__ import annotations


class AutopromptError(ValueError):
    """Bad input or an unusable environment, reported as one line (the CLI exits with code 2)."""


class BudgetExhausted(RuntimeError):
    """Raised by `Budget.charge` when a search has spent its forwards or its wall-clock limit."""


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C during a search, after its last step was checkpointed; ``run_dir`` resumes it."""

    def __init__(self, run_dir: str) -> None:
        super().__init__(run_dir)
        self.run_dir = run_dir
