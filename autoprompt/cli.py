"""The ``autoprompt`` command line: thin wrappers over `autoprompt.api`.

Errors in the input print one line (``error: ...``) and exit with code 2.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from autoprompt.errors import AutopromptError, SearchInterrupted

if TYPE_CHECKING:  # the run-time class of `_UsageError` under the typer installed here (>= 0.29)
    from typer._click.exceptions import UsageError

out = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


# click's UsageError, whichever click typer runs on (typer >= 0.29 vendors its own): BadParameter's parent
_UsageError = cast("type[UsageError]", typer.BadParameter.__mro__[1])


class _Commands(TyperGroup):
    """Usage errors (a bad option value, an unknown option) as one line and exit 2, like every other error."""

    # ignore: the base method is typed with click's Context; typer passes its own subclass, which this names
    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except _UsageError as e:
            where = f" (see `{e.ctx.command_path} --help`)" if e.ctx is not None else ""
            err.print(f"[bold red]error:[/] {e.format_message()}{where}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None


app = typer.Typer(
    name="autoprompt",
    help="Search, score and compare prompts for frozen language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_Commands,
    rich_markup_mode=None,  # help texts are shown as written: "[param]", "[P]" are not markup
)
BatchSize = Annotated[int, typer.Option(min=1, help="Examples per forward pass.")]


# the settings core errors name (in backticks) that are options of some command here
_FLAGS = {"data_dir", "data_seed", "data_seeds", "shots", "split", "limit", "prompt", "template", "verbalizer",
          "strategy", "storage", "study", "sampler", "pruner", "space", "test_limit", "budget", "model", "task"}


_RENAMED = {"params": "--param", "resume": "--resume", "out": "--out"}


def _as_flag(name: str, value: str | None, is_param: bool) -> str | None:
    """A core error's ```data_seed``` as ``--data-seed``, a strategy's ```clip=1``` as ``--param clip=1``."""
    if is_param:
        return f"--param {name}" + (f"={value}" if value is not None else "")
    if name in _RENAMED:
        return _RENAMED[name] + (f"={value}" if value is not None else "")
    if name in _FLAGS:
        return f"--{name.replace('_', '-')}" + (f" {value}" if value is not None else "")
    return None


def friendly(fn: F) -> F:
    """Draw the core's progress and warnings; `AutopromptError` as one line on stderr and exit code 2;
    Ctrl-C as exit 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from autoprompt.events import listening  # noqa: PLC0415 - keep `--help` fast
        from autoprompt.terminal import Terminal  # noqa: PLC0415

        try:
            with listening(Terminal()):
                return fn(*args, **kwargs)
        except AutopromptError as e:
            err.print(f"[bold red]error:[/] {e.worded(_as_flag)}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


DataDir = Annotated[Path | None, typer.Option(help="Local data folder (default: $AUTOPROMPT_DATA_DIR, else the hub).")]
Model = Annotated[str, typer.Option(help="Model alias, local folder or hub id (see `autoprompt models`).")]
Shots = Annotated[int | None, typer.Option(help="k-shot protocol: 16 reads LM-BFF's splits (32: FewGLUE).")]
DataSeed = Annotated[int, typer.Option(help="Which k-shot split (13/21/42/87/100), or the dev-slice seed.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


@app.command()
@friendly
def tasks(data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """List the built-in tasks, their labels, metric, default prompt and what data exists locally."""
    from autoprompt.api import describe_tasks  # noqa: PLC0415 - keep `--help` fast

    rows = describe_tasks(data_dir)
    if as_json:
        return _print_json(rows)
    table = Table("task", "metric", "k-shot", "data available", "default template", show_lines=True)
    for r in rows:
        table.add_row(r["task"], r["metric"], ",".join(map(str, r["shots"])) or "-", r["data"], r["template"])
    out.print(table)
    return None


@app.command()
@friendly
def models(as_json: AsJson = False) -> None:
    """List model aliases and whether the offline default is already provisioned."""
    from autoprompt.model_store import list_models  # noqa: PLC0415

    rows = list_models()
    if as_json:
        return _print_json(rows)
    table = Table("alias", "kind", "source", "cached", "description")
    for r in rows:
        table.add_row(r["alias"], r["kind"], r["source"], r["cached"], r["description"])
    out.print(table)
    return None


@app.command()
@friendly
def evaluate(
    task: Annotated[str, typer.Option(help="Task name (sst2, rte, lama:P19, lama) or a task .toml file.")],
    template: Annotated[str | None, typer.Option(help="Template, e.g. '{sentence} It was [P]'.")] = None,
    verbalizer: Annotated[
        str | None, typer.Option(help='Label words as JSON, e.g. \'{"0": ["bad"], "1": ["good"]}\'.')
    ] = None,
    prompt: Annotated[Path | None, typer.Option(help="A prompt.json artifact to score instead.")] = None,
    model: Model = "smollm2-135m",
    split: Annotated[str, typer.Option(help="train, dev or test.")] = "test",
    shots: Shots = None,
    data_seed: DataSeed = 13,
    limit: Annotated[int | None, typer.Option(
        min=1, help="Score a seeded, class-stratified sample of N examples (data files are often sorted by "
                    "label, so never the first N).")] = None,
    batch_size: BatchSize = 32,
    calibration: Annotated[str | None, typer.Option(
        help="Calibrate the prompt: none, contextual (content-free inputs, Zhao et al. 2021) or prior (mean class "
             "distribution over the task's train inputs); default: the prompt's own.")] = None,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Score a prompt (the task's manual prompt by default) on one split."""
    from autoprompt.api import evaluate as run  # noqa: PLC0415

    result = run(task, template=template, verbalizer=verbalizer, prompt=prompt, model=model, split=split,
                 shots=shots, data_seed=data_seed, limit=limit, batch_size=batch_size, data_dir=data_dir,
                 progress=True, calibration=calibration)
    if as_json:
        return _print_json(result)
    rows = result.get("relations", [result])
    table = Table("task", "split", "n", "metric", "score", "extra")
    for r in rows:
        extra = " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.get("lama", {}).items())
        table.add_row(r["task"], r["split"], str(r["n"]), r["metric"], f"{r['score']:.4f}", extra)
    if "relations" in result:
        table.add_row("lama (mean)", result["split"], str(result["n"]), "P@1", f"{result['score']:.4f}", "")
    out.print(table)
    if "template" in result:
        words = result["verbalizer"]
        shown = (json.dumps(words) if len(words) <= 8  # LAMA has hundreds of candidate objects
                 else f"{len(words)} labels, e.g. {json.dumps(dict(list(words.items())[:3]))}")
        out.print(f"template: {result['template']!r}  verbalizer: {shown}  "
                  f"calibration: {result['calibration']['method']}", highlight=False)
    out.print(f"model {result['model']}, {result['wall_s']:.1f} s", highlight=False)
    return None


@app.command()
@friendly
def predict(
    prompt: Annotated[Path, typer.Option(help="A prompt.json artifact (discrete, soft or ensemble).")],
    input_file: Annotated[Path, typer.Option("--input", help="JSONL, one object per line with the template's fields.")],
    model: Annotated[str | None, typer.Option(help="Backbone (default: the one the prompt was searched on).")] = None,
    output: Annotated[Path | None, typer.Option(help="Write JSONL here (atomically) instead of stdout.")] = None,
    batch_size: BatchSize = 32,
) -> None:
    """Label new inputs with a saved prompt: one JSON line per input with its label and probabilities."""
    from autoprompt.api import predict as run  # noqa: PLC0415
    from autoprompt.io import atomic_write_bytes, check_writable_file  # noqa: PLC0415

    if output is not None:
        check_writable_file(output, "--output")
    rows = run(prompt, input_file, model=model, batch_size=batch_size, progress=output is not None)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if output is None:
        sys.stdout.write(text)
    else:
        atomic_write_bytes(output, text.encode())
        err.print(f"{len(rows)} predictions written to {output}", highlight=False)


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
            return _print_json({"strategy": name, "summary": cls.summary, "default_budget": cls.default_budget,
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
        return _print_json(rows)
    table = Table("strategy", "what it does", "default budget", "parameters (--param k=v)", show_lines=True)
    for r in rows:
        table.add_row(r["strategy"], r["summary"], str(r["default_budget"]), r["params"])
    out.print(table)
    out.print("`autoprompt strategies NAME` explains each parameter of one strategy.", highlight=False)
    return None


@app.command()
@friendly
def search(
    task: Annotated[str | None, typer.Option(help="Task name (sst2, rte, lama:P19) or a task .toml file.")] = None,
    strategy: Annotated[str | None, typer.Option(
        help="Search strategy (see `autoprompt strategies`); default gradient.")] = None,
    model: Model = "smollm2-135m",
    shots: Shots = None,
    data_seed: DataSeed = 13,
    seed: Annotated[int, typer.Option(help="Search seed: the same seed gives the same result.")] = 0,
    budget: Annotated[int | None, typer.Option(
        help="Example-forwards the search may spend (a backward counts as two); default: the strategy's.")] = None,
    max_seconds: Annotated[float | None, typer.Option(
        min=0.001, help="Optional wall-clock limit for the search steps (the start always runs).")] = None,
    test_limit: Annotated[int | None, typer.Option(
        min=1, help="Score the result on a seeded random N test examples (quick runs; its own leaderboard rows).")
    ] = None,
    param: Annotated[list[str] | None, typer.Option(help="Strategy parameter k=v (repeatable).")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for run artifacts.")] = Path("runs"),
    resume: Annotated[Path | None, typer.Option(help="Continue an interrupted run from its folder.")] = None,
    dry_run: Annotated[bool, typer.Option(help="Print the budget and a time estimate; search nothing.")] = False,
    db: Annotated[str | None, typer.Option(help="Leaderboard database to record the run in: a file or SQLAlchemy "
                                                "URL (default: $AUTOPROMPT_DB, else <out>/leaderboard.db).")] = None,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Search for a prompt, then score it and the manual baseline on dev and test.

    Writes runs/<task>/<strategy>/<run-id>/ with spec.json, trace.jsonl, prompt.json, result.json.
    """
    from autoprompt.api import search as run  # noqa: PLC0415

    settings: dict[str, Any] = {
        "model": model, "data_seed": data_seed, "seed": seed, "out": out_dir, "data_dir": data_dir, "db": db}
    if dry_run:
        plan = run(task, strategy, param or [], shots=shots, budget=budget, max_seconds=max_seconds,
                   test_limit=test_limit, dry_run=True, **settings)
        return _print_json(plan) if as_json else out.print(
            f"{plan['strategy']} on {plan['task']}: budget {plan['budget']} example-forwards (minimum "
            f"{plan['minimum_budget']}), at most {plan['steps']} steps, train {plan['train']}, dev {plan['dev']}; "
            f"about {plan['estimated_search_s']:.0f} s of search "
            f"({plan['seconds_per_forward'] * 1000:.1f} ms per example-forward measured here)", highlight=False)
    try:
        result = run(task, strategy, param or [], shots=shots, budget=budget, max_seconds=max_seconds,
                     test_limit=test_limit, resume=resume, progress=True, **settings)
    except SearchInterrupted as stop:
        err.print("interrupted: the last step is checkpointed; continue with "
                  f"`autoprompt search --resume {stop.run_dir}`")
        raise typer.Exit(130) from None
    if not result.get("leaderboard", {"recorded": True})["recorded"]:
        err.print(f"the run is complete in {result['run_dir']}; once the database is fixed, add it with "
                  f"`autoprompt leaderboard import {result['run_dir']} --db {result['leaderboard']['db']}`",
                  highlight=False, soft_wrap=True)
    if as_json:
        return _print_json(result)
    metric = result["metric"]
    table = Table("prompt", f"dev {metric}", f"test {metric}")
    table.add_row("manual baseline", f"{result['baseline']['dev']:.4f}", f"{result['baseline']['test']:.4f}")
    table.add_row(f"found ({result['strategy']})", f"{result['scores']['dev']:.4f}", f"{result['scores']['test']:.4f}")
    deltas = result.get("deltas")
    if deltas:
        table.add_row("found − manual (95% CI)", *(f"{d['delta']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
                                                   for d in (deltas["dev"], deltas["test"])))
    out.print(table)
    selection = result.get("selection") or {}
    if selection.get("message"):
        out.print(selection["message"], highlight=False)
    words = (result["prompt"].get("verbalizer") or (result["prompt"].get("ensemble") or [{}])[0].get("verbalizer"))
    out.print(f"prompt: {result['prompt_text']!r}  label words: {json.dumps(words, ensure_ascii=False)}  "
              f"calibration: {result.get('calibration', 'none')}", highlight=False)
    if result.get("trigger_text"):
        out.print(f"triggers: {result['trigger_text']!r}", highlight=False)
    details = result.get("details", {})
    if "trainable_parameters" in details:
        out.print(f"trainable parameters: {details['trainable_parameters']:,} "
                  f"(backbone {details['backbone_parameters']:,}, frozen and unchanged)", highlight=False)
    if "readout" in details:
        readout = details["readout"]
        out.print(f"nearest tokens: {readout['discrete_prompt']!r} (dev {readout['discrete_dev']:.4f} as a discrete "
                  "prompt)", highlight=False)
    for warning in result.get("warnings", []):
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    spent = result["budget"]
    out.print(f"budget: {spent['used']} of {spent['limit']} example-forwards ({spent['forwards']} forwards, "
              f"{spent['backwards']} backwards), {result['steps']} steps, {result['wall_s']:.0f} s", highlight=False)
    out.print(f"artifacts: {result['run_dir']}", highlight=False)
    return None


leaderboard_app = typer.Typer(help="Compare strategies: mean ± std over seeds of every recorded run.",
                              no_args_is_help=False, add_completion=False, rich_markup_mode=None)
app.add_typer(leaderboard_app, name="leaderboard")
Db = Annotated[str | None, typer.Option(help="Leaderboard database: a file or SQLAlchemy URL "
                                             "(default: $AUTOPROMPT_DB, else runs/leaderboard.db).")]


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
    from autoprompt import leaderboard as lb  # noqa: PLC0415

    if fmt not in ("table", "md", "csv", "json"):
        raise AutopromptError(f"--format {fmt!r} is not one of table, md, csv, json")
    rows = lb.aggregate(lb.load_rows(db, task, model))
    if not rows:
        raise AutopromptError(f"no runs recorded in {lb.db_url(db)}"
                              + (f" for task {task}" if task else "")
                              + "; run `autoprompt search` or `autoprompt leaderboard import runs/`")
    if fmt == "json":
        return _print_json(rows)
    if fmt in ("md", "csv"):
        sys.stdout.write(lb.to_markdown(rows) if fmt == "md" else lb.to_csv(rows))
        return None
    if wide:
        table = Table(*lb.COLUMNS)
        for r in rows:
            table.add_row(*lb.table_cells(r))
        out.print(table)
        return None
    # one narrow table per task × model × protocol, so it reads in 80 columns
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["model"], r["protocol"]), []).append(r)
    for (task_name, model_name, protocol), members in groups.items():
        table = Table("strategy", "n", f"test {members[0]['metric']}", "gain", "budget", "s",
                      title=f"{task_name} · {model_name} · {protocol}", title_justify="left")
        for r in members:
            table.add_row(*lb.table_cells(r)[3:])
        out.print(table)
    return None


@leaderboard_app.command("import")
@friendly
def leaderboard_import(
    folder: Annotated[Path, typer.Argument(help="A folder of run folders (e.g. runs/).")],
    db: Db = None,
) -> None:
    """(Re)build the leaderboard from run folders: every result.json under FOLDER, once."""
    from autoprompt import leaderboard as lb  # noqa: PLC0415
    from autoprompt.api import import_runs  # noqa: PLC0415

    added, seen = import_runs(folder, db)
    out.print(f"{added} runs added, {seen} already recorded, in {lb.db_url(db)}", highlight=False)


@app.command()
@friendly
def tune(
    task: Annotated[str, typer.Option(help="Task name or a task .toml file.")],
    strategy: Annotated[str, typer.Option(help="Strategy whose parameters to tune.")] = "gradient",
    n_trials: Annotated[int, typer.Option(help="Complete or pruned trials the study should have.")] = 20,
    space: Annotated[Path | None, typer.Option(
        help="Search space TOML ([param] type=int|float|categorical, low/high/log or choices); "
             "default: the strategy's own.")] = None,
    storage: Annotated[str | None, typer.Option(
        help="optuna storage URL (postgresql://... to share a study between machines); default <out>/tune.db.")] = None,
    study: Annotated[str | None, typer.Option(help="Study name (default: <task>-<strategy>-<shots>shot).")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes on this machine.")] = 1,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the trials' run artifacts.")] = Path("runs"),
    model: Model = "smollm2-135m",
    shots: Shots = None,
    data_seeds: Annotated[str, typer.Option(help="Data seeds; a trial scores the mean dev over them.")] = "13",
    sampler: Annotated[str, typer.Option(help="tpe, random or grid.")] = "tpe",
    pruner: Annotated[str, typer.Option(help="median, halving or none (pruning uses best-so-far dev).")] = "median",
    seed: Annotated[int, typer.Option(help="Search seed of every trial, and the sampler's seed.")] = 0,
    budget: Annotated[int | None, typer.Option(help="Budget of each search (default: the strategy's).")] = None,
    param: Annotated[list[str] | None, typer.Option(help="A fixed (untuned) strategy parameter k=v.")] = None,
    heartbeat: Annotated[int, typer.Option(help="Seconds between worker heartbeats.")] = 10,
    grace: Annotated[int, typer.Option(help="Seconds without a heartbeat before a trial counts as failed.")] = 30,
    data_dir: DataDir = None,
    db: Db = None,
    as_json: AsJson = False,
) -> None:
    """Tune a strategy's parameters with optuna: each trial is a search (dev score optimised, test recorded).

    Run the same command on several machines with a shared --storage postgresql://... to work on one study.
    """
    from autoprompt.api import tune as run  # noqa: PLC0415

    result = run(task, strategy, n_trials=n_trials, space=space, storage=storage, study=study, workers=workers,
                 out=out_dir, model=model, shots=shots, data_seeds=data_seeds, sampler=sampler, pruner=pruner,
                 seed=seed, budget=budget, params=param or [], heartbeat=heartbeat, grace=grace, data_dir=data_dir,
                 db=db)
    if as_json:
        return _print_json(result)
    out.print(f"study {result['study']} ({result['storage']}): {result['states']}", highlight=False)
    best = result.get("best")
    if best is None:
        raise AutopromptError("no trial completed; see the errors above")
    out.print(f"best trial #{best['number']}: dev {best['dev']:.4f} (mean over {len(best['dev_per_seed'])} seeds), "
              f"test {best['test_mean']:.4f} (recorded, not optimised)", highlight=False)
    out.print(f"params: {best['params']}", highlight=False)
    out.print(f"reproduce: {best['command']}", highlight=False)
    return None


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
    from autoprompt.report import write  # noqa: PLC0415

    sections = []
    if study:
        from autoprompt.tune import study_section  # noqa: PLC0415

        if storage is None:
            raise AutopromptError("--study needs --storage, the URL the study was run with")
        sections = [study_section(name, storage) for name in study]
    written = write(out_dir, db, task, model, sections)
    out.print(f"report: {written['html']} (self-contained) and {written['markdown']}, "
              f"{written['images']} images", highlight=False)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
