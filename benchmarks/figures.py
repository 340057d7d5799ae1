"""Shared by the benchmark scripts: how a figure over data seeds is written."""

from __future__ import annotations

import statistics
from collections.abc import Iterable


def mean_std(values: Iterable[float], digits: int = 4) -> str:
    """``"mean ± sample std"`` over seeds (std 0 for a single seed, which the row's seed count shows)."""
    vals = list(values)
    std = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{statistics.mean(vals):.{digits}f} ± {std:.{digits}f}"
