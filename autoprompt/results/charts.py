"""The report's figures, each a PNG: test score by strategy, best-so-far dev against budget, dev gain
against test gain (overfitting), and the matrix of prompts transferred between models."""

from __future__ import annotations

import io
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for annotations only: matplotlib is imported lazily, where used
    from matplotlib.figure import Figure


def png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def bar_chart(rows: Sequence[dict[str, Any]], title: str) -> bytes:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(rows) + 2), 3.6))
    names = [r["strategy"] for r in rows]
    ax.bar(names, [r["test_mean"] for r in rows], yerr=[r["test_std"] for r in rows], capsize=4,
           color="#4c72b0", label="found prompt (mean ± std over runs)")
    baseline = sum(r["baseline_mean"] * r["n"] for r in rows) / sum(r["n"] for r in rows)
    ax.axhline(baseline, color="#c44e52", linestyle="--", label=f"manual prompt ({baseline:.3f})")
    ax.set_ylabel(f"test {rows[0]['metric']}")
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", rotation=20, labelsize=8)
    ax.legend(fontsize=8, loc="lower right")
    data = png(fig)
    plt.close(fig)
    return data


def budget_curves(runs: Sequence[dict[str, Any]], title: str) -> bytes | None:
    """Best-so-far dev score against example-forwards used, one line per run, a colour per strategy."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    colours: dict[str, Any] = {}
    drawn = False
    for run in runs:
        trace = Path(run["run_dir"]) / "trace.jsonl"
        if not trace.is_file():
            continue
        points = []
        for line in trace.read_text().splitlines():
            try:
                step = json.loads(line)
            except json.JSONDecodeError:
                continue
            if step.get("best_dev") is not None:
                points.append((step["budget"], step["best_dev"]))
        if not points:
            continue
        xs, ys, best = [], [], float("-inf")
        for x, y in points:
            best = max(best, y)
            xs.append(x)
            ys.append(best)
        colour = colours.setdefault(run["variant"], f"C{len(colours) % 10}")
        ax.plot(xs, ys, color=colour, alpha=0.8, marker=".", label=run["variant"])
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), fontsize=8)
    ax.set_xlabel("example-forwards used (a backward counts as two)")
    ax.set_ylabel("best dev score so far")
    ax.set_title(title, fontsize=10)
    data = png(fig)
    plt.close(fig)
    return data


def overfitting(runs: Sequence[dict[str, Any]], title: str) -> bytes | None:
    """Left: dev gain vs test gain over the manual prompt, a point per run, a colour per strategy, with
    the diagonal (points below it gained more on dev than on test). Right: per strategy, the dev − test
    gap of its runs as a box (above zero: fitted to dev)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    points = [(r["strategy"], r["dev"] - r["baseline_dev"], r["test"] - r["baseline_test"]) for r in runs
              if None not in (r["dev"], r["baseline_dev"], r["test"], r["baseline_test"])]
    if not points:
        return None
    strategies = sorted({s for s, _, _ in points})
    colours = {s: f"C{i % 10}" for i, s in enumerate(strategies)}
    fig, (scatter, boxes) = plt.subplots(1, 2, figsize=(10.5, 3.8), gridspec_kw={"width_ratios": [1.1, 1]})
    for strategy in strategies:
        xs = [x for s, x, _ in points if s == strategy]
        ys = [y for s, _, y in points if s == strategy]
        scatter.scatter(xs, ys, color=colours[strategy], label=f"{strategy} ({len(xs)})", alpha=0.8, s=28)
    low = min(min(x, y) for _, x, y in points) - 0.01
    high = max(max(x, y) for _, x, y in points) + 0.01
    scatter.plot([low, high], [low, high], color="#555", linestyle="--", linewidth=1, label="test gain = dev gain")
    scatter.axhline(0, color="#bbb", linewidth=0.8)
    scatter.axvline(0, color="#bbb", linewidth=0.8)
    scatter.set_xlim(low, high)
    scatter.set_ylim(low, high)
    scatter.set_xlabel("dev gain over the manual prompt")
    scatter.set_ylabel("test gain over the manual prompt")
    scatter.legend(fontsize=7, loc="upper left")
    gaps = [[x - y for s, x, y in points if s == strategy] for strategy in strategies]
    drawn = boxes.boxplot(gaps, patch_artist=True, widths=0.6)
    for i, (patch, strategy) in enumerate(zip(drawn["boxes"], strategies, strict=True), start=1):
        patch.set_facecolor(colours[strategy])
        patch.set_alpha(0.5)
        boxes.scatter([i] * len(gaps[i - 1]), gaps[i - 1], color=colours[strategy], s=14, zorder=3)  # few runs
    boxes.set_xticks(range(1, len(strategies) + 1), strategies, rotation=20, fontsize=8)
    boxes.axhline(0, color="#555", linestyle="--", linewidth=1)
    boxes.set_ylabel("dev gain − test gain")
    fig.suptitle(title, fontsize=10)
    data = png(fig)
    plt.close(fig)
    return data


def transfer_matrix(runs: Sequence[dict[str, Any]]) -> list[tuple[str, str, bytes]]:
    """Per task and protocol with transferred prompts: (title, Markdown table, heatmap PNG) of the mean
    test gain over the *target's* manual prompt, rows source model · strategy, columns target model
    (the diagonal: prompts scored on the model they were found on). A row is the leaderboard row the
    prompt had on its own model (strategy and non-default parameters)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    out = []
    for task, protocol in sorted({(r["task"], r["protocol"]) for r in runs if r.get("source_model")}):
        here = [r for r in runs if (r["task"], r["protocol"]) == (task, protocol)]
        gains: dict[tuple[str, str], dict[str, list[float]]] = {}
        for r in here:
            source = r.get("source_model") or r["model"]
            found_as = r["variant"].split(" (from ")[0]  # the row the prompt had on its own model
            gains.setdefault((source, found_as), {}).setdefault(r["model"], []).append(
                r["test"] - r["baseline_test"])
        rows = sorted(gains)
        targets = sorted({t for cells in gains.values() for t in cells})
        means = [[statistics.mean(gains[row][t]) if t in gains[row] else float("nan") for t in targets]
                 for row in rows]
        table = ["| found on · leaderboard row | " + " | ".join(f"on {t}" for t in targets) + " |",
                 "|---|" + "---|" * len(targets)]
        for row, values in zip(rows, means, strict=True):
            cells = [f"{v:+.4f} (n={len(gains[row][t])})" if t in gains[row] else "–"
                     for t, v in zip(targets, values, strict=True)]
            table.append(f"| {row[0]} · {row[1]} | " + " | ".join(cells) + " |")
        fig, ax = plt.subplots(figsize=(2.2 + 1.6 * len(targets), 1.2 + 0.38 * len(rows)))
        limit = max((abs(v) for values in means for v in values if not math.isnan(v)), default=0.01) or 0.01
        ax.imshow(means, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
        for i, values in enumerate(means):
            for j, v in enumerate(values):
                ax.text(j, i, "–" if math.isnan(v) else f"{v:+.3f}", ha="center", va="center", fontsize=8,
                        color="white" if not math.isnan(v) and abs(v) > 0.6 * limit else "black")
        ax.set_xticks(range(len(targets)), [f"on {t}" for t in targets], fontsize=8)
        ax.set_yticks(range(len(rows)), [f"{s} · {k}" for s, k in rows], fontsize=7)
        ax.set_title(f"{task} · {protocol}: test gain over the target's manual prompt", fontsize=9)
        out.append((f"{task} · {protocol}", "\n".join(table), png(fig)))
        plt.close(fig)
    return out
