"""Commands that run many searches: tune (a strategy's hyper-parameters) and suite (a benchmark matrix)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from autoprompt.cli.common import AsJson, DataDir, Db, Dtype, Model, Shots, app, friendly, out, print_json
from autoprompt.errors import AutopromptError


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
    dtype: Dtype = "fp32",
    as_json: AsJson = False,
) -> None:
    """Tune a strategy's parameters with optuna: each trial is a search (dev score optimised, test recorded).

    Run the same command on several machines with a shared --storage postgresql://... to work on one study.
    """
    from autoprompt.api import tune as run  # noqa: PLC0415

    result = run(task, strategy, n_trials=n_trials, space=space, storage=storage, study=study, workers=workers,
                 out=out_dir, model=model, shots=shots, data_seeds=data_seeds, sampler=sampler, pruner=pruner,
                 seed=seed, budget=budget, params=param or [], heartbeat=heartbeat, grace=grace, data_dir=data_dir,
                 db=db, dtype=dtype)
    if as_json:
        return print_json(result)
    out.print(f"study {result['study']} ({result['storage']}): {result['states']}", highlight=False)
    best = result.get("best")
    if best is None:
        raise AutopromptError("no trial completed; see the errors above")
    out.print(f"best trial #{best['number']}: dev {best['dev']:.4f} (mean over {len(best['dev_per_seed'])} seeds), "
              f"test {best['test_mean']:.4f} (recorded, not optimised)", highlight=False)
    out.print(f"params: {best['params']}", highlight=False)
    out.print(f"reproduce: {best['command']}", highlight=False)
    return None


suite_app = typer.Typer(help="Benchmark suites (tasks × data seeds × strategies): run them on one or many machines.",
                        no_args_is_help=True, add_completion=False, rich_markup_mode=None)
app.add_typer(suite_app, name="suite")
Suites = Annotated[Path | None, typer.Option(help="The TOML file of suites (default benchmarks/suite.toml).")]


@suite_app.command("run")
@friendly
def suite_run(
    suite: Annotated[str, typer.Argument(help="A suite's name in --suites (quick, full), or a TOML file.")],
    suites: Suites = None,
    storage: Annotated[str | None, typer.Option(
        help="optuna storage URL shared by every worker (postgresql://... for several machines); default "
             "<out>/tune.db.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes on this machine (cores shared out).")] = 1,
    study: Annotated[str | None, typer.Option(
        help="Study name (default suite-<name>-<digest of its cells>, so an edited suite gets a new study; cells "
             "the leaderboard has are never run again).")] = None,
    heartbeat: Annotated[int, typer.Option(help="Seconds between worker heartbeats.")] = 10,
    grace: Annotated[int, typer.Option(help="Seconds without a heartbeat before a worker counts as dead.")] = 30,
    report: Annotated[Path | None, typer.Option(help="Report folder (default <out>/report).")] = None,
    dry_run: Annotated[bool, typer.Option(help="List the cells and which are done; run nothing.")] = False,
    data_dir: DataDir = None,
    db: Annotated[str | None, typer.Option(help="The leaderboard every cell lands in (default: the --storage "
                                                "server's database, else <out>/leaderboard.db).")] = None,
    as_json: AsJson = False,
) -> None:
    """Run a benchmark suite: every cell a search, each done exactly once however many workers share it.

    The same command on N machines with one --storage postgresql://... shares the cells; a killed worker's
    cell is retried. Finished cells are skipped, so a stopped suite continues where it was.
    """
    from autoprompt.api import suite_run as run  # noqa: PLC0415
    from autoprompt.results.leaderboard import load_rows  # noqa: PLC0415
    from autoprompt.results.report import write as write_report  # noqa: PLC0415
    from autoprompt.results.tables import aggregate, to_markdown  # noqa: PLC0415

    result = run(suite, suites=suites, storage=storage, db=db, workers=workers, study=study, heartbeat=heartbeat,
                 grace=grace, data_dir=data_dir, dry_run=dry_run)
    states = result["states"]
    counts = {s: list(states.values()).count(s) for s in ("done", "resume", "todo")}
    if not dry_run and counts["done"] == result["cells"]:
        folder = report or Path(result["out"]) / "report"
        result["report"] = write_report(folder, result["db"])["html"]
    if as_json:
        return print_json(result)
    out.print(f"suite {result['suite']}: {result['cells']} cells, {counts['done']} done, {counts['resume']} to "
              f"resume, {counts['todo']} to run (study {result['study']}, leaderboard {result['db']})", highlight=False)
    if dry_run:
        for cell, state in states.items():
            out.print(f"  {state:6} {cell}", highlight=False)
        return None
    out.print(f"wall time {result['wall_s']:.0f} s on {result['workers']} worker(s) here; cells recorded by worker: "
              f"{result['by_worker']}", highlight=False)
    if "report" in result:
        sys.stdout.write(to_markdown(aggregate(load_rows(result["db"]))))
        out.print(f"report: {result['report']}", highlight=False)
    return None
