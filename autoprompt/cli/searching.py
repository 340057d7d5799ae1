"""The command that searches: search (tune and suite are in `autoprompt.cli.experiments`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from autoprompt.cli.common import (
    AsJson,
    DataDir,
    DataSeed,
    DeviceMap,
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
             "min_gain, ensemble, refit=false (report the gated prompt, its statistics not refitted).")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for run artifacts.")] = Path("runs"),
    resume: Annotated[Path | None, typer.Option(help="Continue an interrupted run from its folder.")] = None,
    dry_run: Annotated[bool, typer.Option(help="Print the budget and a time estimate; search nothing.")] = False,
    db: Annotated[str | None, typer.Option(help="Leaderboard database to record the run in: a file or SQLAlchemy "
                                                "URL (default: $AUTOPROMPT_DB, else <out>/leaderboard.db).")] = None,
    data_dir: DataDir = None,
    dtype: Dtype = "fp32",
    device_map: DeviceMap = None,
    as_json: AsJson = False,
) -> None:
    """Search for a prompt, then score it and the manual baseline on dev and test.

    Writes runs/<task>/<strategy>/<run-id>/ with spec.json, trace.jsonl, prompt.json, result.json.
    """
    from autoprompt.api import estimate  # noqa: PLC0415
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
        "model": model, "data_seed": data_seed, "seed": seed, "out": out_dir, "data_dir": data_dir,
        "start": start, "dtype": dtype, "device_map": device_map}
    if dry_run:
        plan = estimate(task, strategy, param or [], shots=shots, budget=budget, max_seconds=max_seconds,
                        test_limit=test_limit, **settings)
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
        finished = run(task, strategy, param or [], shots=shots, budget=budget, max_seconds=max_seconds,
                       test_limit=test_limit, resume=resume, progress=True, db=db, **settings)
    except SearchInterrupted as stop:
        err.print("interrupted: the last step is checkpointed; continue with "
                  f"`autoprompt search --resume {stop.run_dir}`")
        raise typer.Exit(130) from None
    if not finished.recorded and finished.leaderboard is not None:
        err.print(f"the run is complete in {finished.run_dir}; once the database is fixed, add it with "
                  f"`autoprompt leaderboard import {finished.run_dir} --db {finished.leaderboard['db']}`",
                  highlight=False, soft_wrap=True)
    if as_json:
        return print_json(finished.to_json())
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
    start = run.start
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
    if refit := details.get("refit"):
        out.print(f"refitted after the gate: {', '.join(refit['what'])} on the {refit['on']} examples the stages could "
                  f"see (the prompt as gated: {refit['gated_prompt']})", highlight=False, markup=False)
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
    generation = run.generation
    if generation:
        found, base = generation["found"], generation["baseline"]
        out.print(f"test ROUGE-L {found['rougeL']:.2f} (manual {base['rougeL']:.2f}); outputs next to the manual "
                  f"prompt's: {generation['outputs']}", highlight=False)
    for name, member in (run.members or {}).items():
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
