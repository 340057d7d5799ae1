"""Fair aggregates of leaderboard rows and their tables (markdown, CSV).

Aggregates group runs by task × model × split protocol × strategy variant (the strategy with the
parameters that differ from its defaults): rows whose protocols differ (16-shot vs full data, a
different test set) are never averaged together.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Iterable, Sequence
from typing import Any


def aggregate(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± std (sample, over runs) of the test score per task × model × protocol × variant.

    ``gain`` is the mean of (test − the same run's manual-baseline test); budget and time are
    medians. Sorted by task, then best mean test score first. One run recorded twice (a run folder
    copied and imported again: the same prompt fingerprint, search seed and data seed) counts once.
    """
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    seen: set[tuple[Any, ...]] = set()
    for r in rows:
        key = (r["task"], r["model"], r["protocol"], r["variant"])
        same_run = (*key, r["prompt_fingerprint"], r["seed"], r["data_seed"])
        if r["prompt_fingerprint"] is not None and same_run in seen:
            continue
        seen.add(same_run)
        groups.setdefault(key, []).append(r)
    out = []
    for (task, model, protocol, variant), members in groups.items():
        tests = [m["test"] for m in members]
        gains = [m["test"] - m["baseline_test"] for m in members]
        out.append({
            "task": task, "model": model, "protocol": protocol, "strategy": variant, "metric": members[0]["metric"],
            "n": len(members), "seeds": sorted({m["data_seed"] for m in members if m["data_seed"] is not None}),
            "test_mean": statistics.mean(tests), "test_std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
            "dev_mean": statistics.mean(m["dev"] for m in members),
            "baseline_mean": statistics.mean(m["baseline_test"] for m in members),
            "gain_mean": statistics.mean(gains),
            "budget_median": statistics.median(m["budget_used"] or 0 for m in members),
            # tokens the budget's forwards ran: a long demonstration block costs more than a short query
            "tokens_median": _median_known(m["tokens"] for m in members),
            "wall_s_median": statistics.median(m["wall_s"] or 0 for m in members),
            "trainable_params": members[0]["trainable_params"],
            "best_prompt": max(members, key=lambda m: m["dev"])["prompt_text"],
        })
    return sorted(out, key=lambda r: (r["task"], r["model"], r["protocol"], -r["test_mean"]))


COLUMNS = ("task", "model", "protocol", "strategy", "n", "test", "gain", "budget", "tokens", "time_s")


def table_cells(r: dict[str, Any]) -> list[str]:
    return [r["task"], r["model"], r["protocol"], r["strategy"], str(r["n"]),
            f"{r['test_mean']:.4f} ± {r['test_std']:.4f}", f"{r['gain_mean']:+.4f}",
            f"{r['budget_median']:.0f}", _si(r["tokens_median"]), f"{r['wall_s_median']:.0f}"]


def _median_known(values: Iterable[int | None]) -> float | None:
    """The median of the counts recorded; runs from before a count was kept (None or 0) are left out."""
    known = [v for v in values if v]
    return statistics.median(known) if known else None


def _si(n: float | None) -> str:
    """A count in 4 characters or so: 950, 12k, 3.4M; ``–`` when not recorded."""
    if n is None:
        return "–"
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}" if n < 10 * size else f"{n / size:.0f}{unit}"
    return f"{n:.0f}"


def to_markdown(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in table_cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    keys = ["task", "model", "protocol", "strategy", "metric", "n", "seeds", "test_mean", "test_std", "gain_mean",
            "baseline_mean", "dev_mean", "budget_median", "tokens_median", "wall_s_median", "trainable_params",
            "best_prompt"]
    writer = csv.DictWriter(buffer, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({**r, "seeds": " ".join(map(str, r["seeds"]))})
    return buffer.getvalue()
