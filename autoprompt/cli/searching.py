"""Commands that search: search, tune, suite."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from autoprompt.cli.common import (
    AsJson,
    DataDir,
    DataSeed,
    Db,
    Dtype,
    Model,
    Shots,
    app,
    err,
    error_line,
    friendly,
    out,
    print_json,
)
from autoprompt.errors import AutopromptError, SearchInterrupted
from autoprompt.results.record import RunRecord


@app.command()
@friendly
def search(
    ctx: typer.Context,
    task: Annotated[str | None, typer.Option(help="Task name (sst2, rte, lama:P19) or a task .toml file.")] = None,
    strategy: Annotated[str | None, typer.Option(
        help="Search strategy (see `autoprompt strategies`); default gradient. A comma list "
             "(verbalizer,demos,gradient) runs a pipeline, each stage from the previous stage's prompt; `auto` "
             "chooses the pipeline from the task (--param auto.effort=light|medium|heavy, auto.soft=true).")] = None,
    start: Annotated[Path | None, typer.Option(
        "--from", help="A prompt.json to build on (a warm start): the search keeps the parts it does not search "
                       "and its gate must beat this prompt.")] = None,
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
    param: Annotated[list[str] | None, typer.Option(
        help="Strategy parameter k=v (repeatable); in a pipeline stage.k=v for one stage (demos.method=search), "
             "or the pipeline's own: budget_split=1,2 (default: the stages' default budgets), holdout=0.5, "
             "min_gain, ensemble.")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for run artifacts.")] = Path("runs"),
    resume: Annotated[Path | None, typer.Option(help="Continue an interrupted run from its folder.")] = None,
    dry_run: Annotated[bool, typer.Option(help="Print the budget and a time estimate; search nothing.")] = False,
    db: Annotated[str | None, typer.Option(help="Leaderboard database to record the run in: a file or SQLAlchemy "
                                                "URL (default: $AUTOPROMPT_DB, else <out>/leaderboard.db).")] = None,
    data_dir: DataDir = None,
    dtype: Dtype = "fp32",
    as_json: AsJson = False,
) -> None:
    """Search for a prompt, then score it and the manual baseline on dev and test.

    Writes runs/<task>/<strategy>/<run-id>/ with spec.json, trace.jsonl, prompt.json, result.json.
    """
    from autoprompt.api import search as run  # noqa: PLC0415

    if resume is not None:  # a resume runs the spec it was started with: a setting given now would be ignored
        changed = [f"--{name.replace('_', '-')}" if name != "out_dir" else "--out"
                   for name in ("model", "data_seed", "seed", "out_dir", "data_dir", "start")
                   # by name: typer >= 0.29 vendors click, so the enum class depends on the version
                   if getattr(ctx.get_parameter_source(name), "name", "") == "COMMANDLINE"]
        if changed:
            raise AutopromptError(f"resuming continues a run with the spec it was started with; {', '.join(changed)} "
                                  "cannot change it: leave them out, or start a new run")
    settings: dict[str, Any] = {
        "model": model, "data_seed": data_seed, "seed": seed, "out": out_dir, "data_dir": data_dir, "db": db,
        "start": start, "dtype": dtype}
    if dry_run:
        plan = run(task, strategy, param or [], shots=shots, budget=budget, max_seconds=max_seconds,
                   test_limit=test_limit, dry_run=True, **settings)
        if as_json:
            return print_json(plan)
        if "stages" in plan:
            return _show_plan(plan)
        return out.print(
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
    finished = RunRecord.from_json(result)
    if not finished.recorded and finished.leaderboard is not None:
        err.print(f"the run is complete in {finished.run_dir}; once the database is fixed, add it with "
                  f"`autoprompt leaderboard import {finished.run_dir} --db {finished.leaderboard['db']}`",
                  highlight=False, soft_wrap=True)
    if as_json:
        return print_json(result)
    _show_run(finished)
    return None


def _show_plan(plan: dict[str, Any]) -> None:
    """A pipeline's dry run: each stage with its budget and time."""
    if plan.get("crossfit"):
        out.print(f"{plan['strategy']} on {plan['task']}: budget {plan['budget']} example-forwards in "
                  f"{len(plan['stages'])} stages, cross-fitted: the stages run on each of two folds of train and dev, "
                  "and each fold's prompt is gated on the other fold; budgets of the first fold:",
                  highlight=False, markup=False)
    else:
        out.print(f"{plan['strategy']} on {plan['task']}: budget {plan['budget']} example-forwards in "
                  f"{len(plan['stages'])} stages; stages fit on {plan['fit']} train examples and their gates check "
                  f"on {plan['check']}; the final gate reads the {plan['dev']} dev examples once",
                  highlight=False, markup=False)
    for i, stage in enumerate(plan["stages"], 1):
        out.print(f"  {i}. {stage['strategy']} {stage['params']}: budget {stage['budget']} (minimum "
                  f"{stage['minimum_budget']}), about {stage['estimated_search_s']:.0f} s",
                  highlight=False, markup=False)
    if plan.get("auto"):
        for reason in plan["auto"]["reasons"]:
            out.print(f"  auto: {reason}", highlight=False, markup=False)
    out.print(f"about {plan['estimated_search_s']:.0f} s of search; {plan['note']}", highlight=False, markup=False)


def _show_stages(run: RunRecord) -> None:
    """Each stage of a pipeline: its gain over its start on the check part, with its interval."""
    stages = run.details.get("stages")
    if not stages:
        return
    table = Table("stage", "budget", f"gain over its start ({stages[0]['objective']}, 95% CI)", "gate")
    for s in stages:
        ci = s["ci95"]
        gain = f"{s['gain']:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else f"{s['gain']:+.3f}"
        fold = f" (fold {s['fold']})" if "fold" in s else ""
        table.add_row(f"{s['stage']}. {s['strategy']}{fold}", f"{s['budget']} of {s['budget_given']}", gain,
                      "passed" if s["passed"] else "kept its start")
    out.print(table)


def _show_run(run: RunRecord) -> None:
    """The human table of one finished search: scores, deltas, the verdict, the prompt, the spend."""
    table = Table("prompt", f"dev {run.metric}", f"test {run.metric}")
    table.add_row("manual baseline", f"{run.baseline.dev:.4f}", f"{run.baseline.test:.4f}")
    table.add_row(f"found ({run.strategy})", f"{run.scores.dev:.4f}", f"{run.scores.test:.4f}")
    if run.deltas:
        table.add_row("found − manual (95% CI)", *(f"{d['delta']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
                                                   for d in (run.deltas["dev"], run.deltas["test"])))
    start = run.extra.get("start")
    if start:
        d = start["deltas"]["test"]
        out.print(f"start prompt ({start['path']}): dev {start['dev']:.4f}, test {start['test']:.4f}; found − start "
                  f"on test {d['delta']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]",
                  highlight=False, markup=False)
    _show_stages(run)
    out.print(table)
    if run.selection.get("message"):
        out.print(run.selection["message"], highlight=False)
    details = run.details
    words = (f"label words: {json.dumps(run.label_words, ensure_ascii=False)}" if run.label_words
             else f"a linear head of {details['head_parameters']:,} parameters (no label words)"
             if "head_parameters" in details else "generated text (no label words)")
    rules = {(m.get("rule") or {}).get("name", "direct") for m in run.prompt.get("ensemble", [run.prompt])}
    out.print(f"prompt: {run.prompt_text!r}  {words}  calibration: {run.calibration}  rule: {'/'.join(sorted(rules))}",
              highlight=False)
    if run.trigger_text:
        out.print(f"triggers: {run.trigger_text!r}", highlight=False)
    members = run.prompt.get("ensemble", [run.prompt])
    shown = [len(m["demos"].get("examples", [])) or m["demos"].get("k", 0) for m in members if m.get("demos")]
    if shown:
        out.print(f"demonstrations: {' + '.join(map(str, shown))} per query (in prompt.json)", highlight=False)
    if len(members) > 1:
        out.print(f"an ensemble of {len(members)} prompts (mean of their calibrated class log-probs)", highlight=False)
    auto = run.details.get("auto")
    if auto:
        out.print(f"auto ({', '.join(s['strategy'] for s in auto['stages'])}): {'; '.join(auto['reasons'])}",
                  highlight=False, markup=False)
    generation = run.extra.get("generation")
    if generation:
        found, base = generation["found"], generation["baseline"]
        out.print(f"test ROUGE-L {found['rougeL']:.2f} (manual {base['rougeL']:.2f}); outputs next to the manual "
                  f"prompt's: {generation['outputs']}", highlight=False)
    for name, member in run.extra.get("members", {}).items():
        delta = member["delta"]
        out.print(f"member {name}: test {member['test']:.4f} vs its manual prompt {member['manual_test']:.4f} "
                  f"({delta['delta']:+.4f} [{delta['ci95'][0]:+.4f}, {delta['ci95'][1]:+.4f}], n={member['n']})",
                  highlight=False)
    if "trainable_parameters" in details:
        out.print(f"trainable parameters: {details['trainable_parameters']:,} "
                  f"(backbone {details['backbone_parameters']:,}, frozen and unchanged)", highlight=False)
    if "readout" in details:
        readout = details["readout"]
        out.print(f"nearest tokens: {readout['discrete_prompt']!r} (dev {readout['discrete_dev']:.4f} as a discrete "
                  "prompt)", highlight=False)
    for warning in run.warnings:
        err.print(error_line(warning, "warning:", "yellow"))
    spent = run.budget
    out.print(f"budget: {spent.used} of {spent.limit} example-forwards ({spent.forwards} forwards, "
              f"{spent.backwards} backwards), {run.steps} steps, {run.wall_s:.0f} s", highlight=False)
    out.print(f"artifacts: {run.run_dir}", highlight=False)


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
    from autoprompt.results.leaderboard import aggregate, load_rows, to_markdown  # noqa: PLC0415
    from autoprompt.results.report import write as write_report  # noqa: PLC0415

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
