"""Benchmark reports: the leaderboard as a self-contained HTML page and the same in Markdown.

Per task (and model and split protocol): the leaderboard table; a bar chart of the test score by
strategy with error bars over seeds and the manual baseline as a line; best-so-far dev score
against budget from the runs' traces; dev gain against test gain per run and the dev − test gap per
strategy (how far the few-shot dev set misleads); the best prompt of each strategy as text (soft prompts by
their nearest tokens); then the environment, and the papers' anchor numbers in a table of their
own — their models and splits differ from ours, so they are never mixed with our rows. Prompts
transferred to another model get a matrix of their own (source model · strategy → target model).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import platform
import re
import statistics
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoprompt.errors import AutopromptError
from autoprompt.io import atomic_write_bytes, check_writable_folder
from autoprompt.results import leaderboard as lb
from autoprompt.results import tables

if TYPE_CHECKING:  # for annotations only: matplotlib is imported lazily, where used
    from matplotlib.figure import Figure

# Published numbers, for orientation only: other models, other splits, other budgets.
ANCHORS: list[dict[str, str]] = [
    {"paper": "AutoPrompt (Shin et al., 2020)", "task": "SST-2", "model": "RoBERTa-large",
     "split": "full train, GLUE dev as test", "score": "91.4 accuracy"},
    {"paper": "AutoPrompt (Shin et al., 2020)", "task": "SST-2", "model": "BERT-base",
     "split": "full train, GLUE dev as test", "score": "80.9 accuracy"},
    {"paper": "AutoPrompt (Shin et al., 2020)", "task": "LAMA T-REx (41 relations)", "model": "BERT-base",
     "split": "original LAMA test", "score": "43.3 P@1 (manual LAMA prompts 31.1, LPAQA 34.1)"},
    {"paper": "LM-BFF (Gao et al., 2021), zero-shot prompt", "task": "SST-2", "model": "RoBERTa-large",
     "split": "GLUE dev as test", "score": "83.6 accuracy"},
    {"paper": "LM-BFF (Gao et al., 2021), zero-shot prompt", "task": "RTE", "model": "RoBERTa-large",
     "split": "GLUE dev as test", "score": "51.3 accuracy"},
    {"paper": "P-tuning (Liu et al., 2021), abstract of v1", "task": "LAMA", "model": "best GPT (Megatron 11B)",
     "split": "LAMA test", "score": "64 P@1"},
]


def _slug(*parts: str) -> str:
    return "-".join("".join(c if c.isalnum() else "_" for c in p) for p in parts)[:120]


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def _bar_chart(rows: Sequence[dict[str, Any]], title: str) -> bytes:
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
    data = _png(fig)
    plt.close(fig)
    return data


def _budget_curves(runs: Sequence[dict[str, Any]], title: str) -> bytes | None:
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
    data = _png(fig)
    plt.close(fig)
    return data


def _overfitting(runs: Sequence[dict[str, Any]], title: str) -> bytes | None:
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
    data = _png(fig)
    plt.close(fig)
    return data


def _transfer_matrix(runs: Sequence[dict[str, Any]]) -> list[tuple[str, str, bytes]]:
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
        out.append((f"{task} · {protocol}", "\n".join(table), _png(fig)))
        plt.close(fig)
    return out


def _environment(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    import torch  # noqa: PLC0415

    versions = sorted({r["versions"] for r in runs})
    return {"generated": datetime.now(UTC).isoformat(timespec="seconds"), "platform": platform.platform(),
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else
            f"CPU ({platform.processor() or platform.machine()})",
            "run versions": [json.loads(v) for v in versions]}


def build(db: str | Path | None = None, task: str | None = None, model: str | None = None,
          extra_sections: Sequence[tuple[str, str, dict[str, bytes]]] = ()) -> tuple[str, str, dict[str, bytes]]:
    """The report as (HTML, Markdown, images by file name).

    Args:
        db: the leaderboard database.
        task: only this task.
        model: only this model.
        extra_sections: (title, markdown body, images) appended, e.g. a tuning study.
    """
    runs = lb.load_rows(db, task, model)
    if not runs:
        raise AutopromptError(f"no runs recorded in {lb.db_url(db)}; run searches or `autoprompt leaderboard "
                              "import runs/` first")
    rows = tables.aggregate(runs)
    images: dict[str, bytes] = {}
    md: list[str] = ["# autoprompt benchmark report", "",
                     "Test scores of the prompt each strategy found (chosen on dev), mean ± std over runs; "
                     "gain = found − manual prompt on the same split. Runs with different split protocols "
                     "are never averaged together.", ""]
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["model"], r["protocol"]), []).append(r)
    for (t, m, protocol), group in groups.items():
        title = f"{t} · {m} · {protocol}"
        md += [f"## {title}", "", tables.to_markdown(group)]
        bar = f"bar-{_slug(t, m, protocol)}.png"
        images[bar] = _bar_chart(group, title)
        md += [f"![test score by strategy, {title}]({bar})", ""]
        members = [run for run in runs if (run["task"], run["model"], run["protocol"]) == (t, m, protocol)]
        curve = _budget_curves(members, f"{title}: best dev so far vs budget")
        if curve is not None:
            name = f"budget-{_slug(t, m, protocol)}.png"
            images[name] = curve
            md += [f"![best dev score vs budget, {title}]({name})", ""]
        native = [run for run in members if not run.get("source_model")]
        overfit = _overfitting(native, f"{title}: how far dev and test disagree")
        if overfit is not None:
            name = f"overfit-{_slug(t, m, protocol)}.png"
            images[name] = overfit
            md += [f"![dev gain vs test gain per run, and the dev − test gap per strategy, {title}]({name})", ""]
        md += ["Best prompt per strategy (by dev):", "", "| strategy | prompt |", "|---|---|"]
        md += [f"| {r['strategy']} | `{_md_code(r['best_prompt'])}` |" for r in group]
        md.append("")
    matrices = _transfer_matrix(runs)
    if matrices:
        md += ["## Prompt transfer", "", "Prompts found on one model scored on another (`autoprompt transfer`): mean "
               "test gain over the target model's own manual prompt on the same examples; the diagonal is the "
               "prompts' own model. Triggers travel as their text, soft prompts as their nearest tokens.", ""]
    for title, table, png in matrices:
        name = f"transfer-{_slug(title)}.png"
        images[name] = png
        md += [f"### {title}", "", table, "", f"![transfer matrix, {title}]({name})", ""]
    for section_title, body, section_images in extra_sections:
        md += [f"## {section_title}", "", body, ""]
        images.update(section_images)
    md += ["## Published anchor numbers (not comparable to the rows above)", "",
           "Other models, splits and budgets; shown for orientation, never averaged with our runs.", "",
           "| paper | task | model | split | reported |", "|---|---|---|---|---|"]
    md += [f"| {a['paper']} | {a['task']} | {a['model']} | {a['split']} | {a['score']} |" for a in ANCHORS]
    env = _environment(runs)
    md += ["", "## Environment", "", f"- generated: {env['generated']}", f"- platform: {env['platform']}",
           f"- device: {env['device']}"]
    md += [f"- versions of recorded runs: `{json.dumps(v, sort_keys=True)}`" for v in env["run versions"]]
    markdown = "\n".join(md) + "\n"
    return _html(markdown, images), markdown, images


def _md_code(text: str) -> str:
    # every character str.splitlines() breaks on, not only "\n": a U+2028 in a prompt would start a new line
    return _LINE_BREAKS.sub("\\\\n", text.replace("`", "'").replace("|", "\\|"))


_LINE_BREAKS = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


def _html(markdown: str, images: dict[str, bytes]) -> str:
    """A small Markdown → HTML rendering (headings, tables, images, lists, paragraphs), images inline."""
    body: list[str] = []
    table: list[list[str]] = []

    def cells(line: str) -> list[str]:
        parts = line.strip().strip("|").replace("\\|", "\x00").split("|")
        return [html.escape(p.strip().replace("\x00", "|")) for p in parts]

    def flush_table() -> None:
        if table:
            head, *rest = table
            body.append("<table><thead><tr>" + "".join(f"<th>{c}</th>" for c in head) + "</tr></thead><tbody>"
                        + "".join("<tr>" + "".join(f"<td>{_code(c)}</td>" for c in row) + "</tr>" for row in rest)
                        + "</tbody></table>")
            table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            if not set(line.replace("|", "").strip()) <= {"-", ":"}:
                table.append(cells(line))
            continue
        flush_table()
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line[level:].strip())}</h{level}>")
        elif line.startswith("![") and "](" in line and line[2:].split("](", 1)[1].rstrip(")") in images:
            alt, src = line[2:].split("](", 1)  # only the report's own figures: user text is never an image
            data = base64.b64encode(images[src.rstrip(")")]).decode()
            body.append(f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>')
        elif line.startswith("- "):
            body.append(f"<ul><li>{_code(html.escape(line[2:]))}</li></ul>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    flush_table()
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px;"
             "text-align:left;vertical-align:top}th{background:#f3f3f3}img{max-width:100%}code{font-size:13px}"
             "h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:2em}")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>autoprompt benchmark report"
            f"</title><style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _code(text: str) -> str:
    """Markdown inline code (`x`) as <code>."""
    parts = text.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def write(out: str | Path, db: str | Path | None = None, task: str | None = None, model: str | None = None,
          extra_sections: Sequence[tuple[str, str, dict[str, bytes]]] = ()) -> dict[str, str]:
    """Write ``report.html`` (self-contained), ``report.md`` and the PNGs it links into ``out``."""
    check_writable_folder(out, "report folder")
    page, markdown, images = build(db, task, model, extra_sections)
    folder = Path(out)
    for name, data in images.items():
        atomic_write_bytes(folder / name, data)
    atomic_write_bytes(folder / "report.md", markdown.encode())
    atomic_write_bytes(folder / "report.html", page.encode())
    return {"html": str(folder / "report.html"), "markdown": str(folder / "report.md"), "images": str(len(images))}
