"""Commands that compare finished runs: leaderboard (and its import), report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from autoprompt.cli.common import (
    Db,
    app,
    friendly,
    out,
    print_json,
)
from autoprompt.errors import AutopromptError

leaderboard_app = typer.Typer(help="Compare strategies: mean ± std over seeds of every recorded run.",
                              no_args_is_help=False, add_completion=False, rich_markup_mode=None)
app.add_typer(leaderboard_app, name="leaderboard")
@leaderboard_app.callback(invoke_without_command=True)
@friendly
def leaderboard(
    ctx: typer.Context,
    task: Annotated[str | None, typer.Option(help="Only this task.")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, md, csv or json.")] = "table",
    wide: Annotated[bool, typer.Option(help="One table with every column (needs a wide terminal).")] = False,
    db: Db = None,
) -> None:
    """Per task × model × strategy: test score mean ± std over seeds, gain over the manual prompt,
    runs, median budget and time; best first. Different split protocols are never averaged together."""
    if ctx.invoked_subcommand is not None:
        return None
    from autoprompt.results import leaderboard as lb  # noqa: PLC0415
    from autoprompt.results import tables  # noqa: PLC0415

    if fmt not in ("table", "md", "csv", "json"):
        raise AutopromptError(f"--format {fmt!r} is not one of table, md, csv, json")
    rows = tables.aggregate(lb.load_rows(db, task, model))
    if not rows:
        raise AutopromptError(f"no runs recorded in {lb.db_url(db)}"
                              + (f" for task {task}" if task else "")
                              + "; run `autoprompt search` or `autoprompt leaderboard import runs/`")
    if fmt == "json":
        return print_json(rows)
    if fmt in ("md", "csv"):
        sys.stdout.write(tables.to_markdown(rows) if fmt == "md" else tables.to_csv(rows))
        return None
    if wide:
        table = Table(*tables.COLUMNS)
        for r in rows:
            table.add_row(*tables.table_cells(r))
        out.print(table)
        return None
    # one narrow table per task × model × protocol, so it reads in 80 columns
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["model"], r["protocol"]), []).append(r)
    for (task_name, model_name, protocol), members in groups.items():
        table = Table("strategy", "n", f"test {members[0]['metric']}", "gain", "budget", "tokens", "s",
                      title=f"{task_name} · {model_name} · {protocol}", title_justify="left")
        for r in members:
            table.add_row(*tables.table_cells(r)[3:])
        out.print(table)
    return None


@leaderboard_app.command("import")
@friendly
def leaderboard_import(
    folder: Annotated[Path, typer.Argument(help="A folder of run folders (e.g. runs/).")],
    db: Db = None,
) -> None:
    """(Re)build the leaderboard from run folders: every result.json under FOLDER, once."""
    from autoprompt.api import import_runs  # noqa: PLC0415
    from autoprompt.results import leaderboard as lb  # noqa: PLC0415

    added, seen = import_runs(folder, db)
    out.print(f"{added} runs added, {seen} already recorded, in {lb.db_url(db)}", highlight=False)


@app.command()
@friendly
def report(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for report.html, report.md and the PNGs.")] = Path(
        "report"),
    task: Annotated[str | None, typer.Option(help="Only this task.")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    study: Annotated[list[str] | None, typer.Option(help="Add a tuning study's section (repeatable).")] = None,
    storage: Annotated[str | None, typer.Option(help="The studies' optuna storage URL.")] = None,
    db: Db = None,
) -> None:
    """Write the benchmark report: leaderboard tables, charts, best prompts, environment, paper anchors,
    and for each --study its optimisation history and parameter importances."""
    from autoprompt.results.report import write  # noqa: PLC0415

    sections = []
    if study:
        from autoprompt.experiments.tune import study_section  # noqa: PLC0415

        if storage is None:
            raise AutopromptError("--study needs --storage, the URL the study was run with")
        sections = [study_section(name, storage) for name in study]
    written = write(out_dir, db, task, model, sections)
    out.print(f"report: {written['html']} (self-contained) and {written['markdown']}, "
              f"{written['images']} images", highlight=False)
