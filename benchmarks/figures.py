"""Shared by the benchmark scripts: how a figure over data seeds is written, and the finished cells a script
keeps so that a stopped run continues."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def sample_std(values: Iterable[float]) -> float:
    """The sample standard deviation over seeds (0 for a single seed, which the row's seed count shows)."""
    vals = list(values)
    return statistics.stdev(vals) if len(vals) > 1 else 0.0


def mean_std(values: Iterable[float], digits: int = 4) -> str:
    """``"mean ± sample std"`` over seeds."""
    vals = list(values)
    return f"{statistics.mean(vals):.{digits}f} ± {sample_std(vals):.{digits}f}"


def load_cells(path: Path) -> dict[str, dict[str, Any]]:
    """The finished cells in a ``.jsonl`` of benchmark rows, by their ``cell`` key (empty if there is none)."""
    done = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            done[row["cell"]] = row
    return done
