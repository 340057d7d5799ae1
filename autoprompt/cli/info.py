"""Commands that describe what is installed: tasks, models, strategies."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from autoprompt.cli.common import (
    AsJson,
    DataDir,
    app,
    friendly,
    out,
    print_json,
)


@app.command()
@friendly
def tasks(data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """List the built-in tasks, their labels, metric, default prompt and what data exists locally."""
    from autoprompt.api import describe_tasks  # noqa: PLC0415 - keep `--help` fast

    rows = describe_tasks(data_dir)
    if as_json:
        return print_json(rows)
    table = Table("task", "metric", "k-shot", "data available", "default template", show_lines=True)
    for r in rows:
        table.add_row(r["task"], r["metric"], ",".join(map(str, r["shots"])) or "-", r["data"], r["template"])
    out.print(table)
    return None


@app.command()
@friendly
def models(as_json: AsJson = False) -> None:
    """List model aliases, their licences and whether the offline ones are already provisioned."""
    from autoprompt.backends.store import list_models  # noqa: PLC0415

    rows = list_models()
    if as_json:
        return print_json(rows)
    table = Table("alias", "kind", "source", "licence", "cached", "description")
    for r in rows:
        table.add_row(r["alias"], r["kind"], r["source"], r["licence"], r["cached"], r["description"])
    out.print(table)
    return None


@app.command()
@friendly
def strategies(
    name: Annotated[str | None, typer.Argument(help="A strategy: list its parameters with their help.")] = None,
    as_json: AsJson = False,
) -> None:
    """List search strategies: what each does and its parameters with defaults (NAME: one strategy in full)."""
    from autoprompt.search import available, describe_params, describe_strategy, get_strategy  # noqa: PLC0415

    if name is not None:
        cls = get_strategy(name)
        params = describe_strategy(cls)
        if as_json:
            return print_json({"strategy": name, "summary": cls.summary, "default_budget": cls.default_budget,
                                "params": params})
        out.print(f"{name}: {cls.summary} (default budget {cls.default_budget} example-forwards)", highlight=False)
        table = Table("parameter (--param k=v)", "type", "default", "what it does", show_lines=True)
        for p in params:
            bound = f" (at least {p['low']:g})" if p["low"] is not None else ""
            table.add_row(p["name"], p["type"], repr(p["default"]), p["help"].replace("``", "") + bound)
        out.print(table)
        return None
    rows: list[dict[str, Any]] = [
        {"strategy": key, "summary": cls.summary, "default_budget": cls.default_budget,
         "params": describe_params(cls)} for key, cls in available().items()]
    if as_json:
        return print_json(rows)
    table = Table("strategy", "what it does", "default budget", "parameters (--param k=v)", show_lines=True)
    for r in rows:
        table.add_row(r["strategy"], r["summary"], str(r["default_budget"]), r["params"])
    out.print(table)
    out.print("`autoprompt strategies NAME` explains each parameter of one strategy.", highlight=False)
    out.print("Pipelines: --strategy verbalizer,demos,gradient runs stages in order, each from the previous stage's "
              "prompt (--param demos.method=search for one stage); --strategy auto chooses the stages from the task "
              "(--param auto.effort=light|medium|heavy, auto.soft=true). --from prompt.json starts any of them from a "
              "saved prompt.", highlight=False, markup=False)
    return None
