"""The one exception type users see: a one-line message that names the problem and the fix."""

from __future__ import annotations


class AutopromptError(ValueError):
    """Bad input or an unusable environment, reported as one line (the CLI exits with code 2)."""


class BudgetExhausted(RuntimeError):
    """Raised by `Budget.charge` when a search has spent its forwards or its wall-clock limit."""
