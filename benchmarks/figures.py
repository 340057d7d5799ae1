"""Shared by the benchmark scripts: how a figure over data seeds is written."""

from __future__ import annotations

import statistics
from collections.abc import Iterable


def sample_std(values: Iterable[float]) -> float:
    """The sample standard deviation over seeds (0 for a single seed, which the row's seed count shows)."""
    vals = list(values)
    return statistics.stdev(vals) if len(vals) > 1 else 0.0


def mean_std(values: Iterable[float], digits: int = 4) -> str:
    """``"mean ± sample std"`` over seeds."""
    vals = list(values)
    return f"{statistics.mean(vals):.{digits}f} ± {sample_std(vals):.{digits}f}"
