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
import json
import platform
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from autoprompt.errors import AutopromptError
from autoprompt.io import atomic_write_bytes, check_writable_folder
from autoprompt.results import charts, tables
from autoprompt.results import leaderboard as lb

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
        images[bar] = charts.bar_chart(group, title)
        md += [f"![test score by strategy, {title}]({bar})", ""]
        members = [run for run in runs if (run["task"], run["model"], run["protocol"]) == (t, m, protocol)]
        curve = charts.budget_curves(members, f"{title}: best dev so far vs budget")
        if curve is not None:
            name = f"budget-{_slug(t, m, protocol)}.png"
            images[name] = curve
            md += [f"![best dev score vs budget, {title}]({name})", ""]
        native = [run for run in members if not run.get("source_model")]
        overfit = charts.overfitting(native, f"{title}: how far dev and test disagree")
        if overfit is not None:
            name = f"overfit-{_slug(t, m, protocol)}.png"
            images[name] = overfit
            md += [f"![dev gain vs test gain per run, and the dev − test gap per strategy, {title}]({name})", ""]
        md += ["Best prompt per strategy (by dev):", "", "| strategy | prompt |", "|---|---|"]
        md += [f"| {r['strategy']} | `{_md_code(r['best_prompt'])}` |" for r in group]
        md.append("")
    matrices = charts.transfer_matrix(runs)
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
