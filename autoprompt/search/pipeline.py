"""Pipelines: strategies run in order, each from the previous stage's reported prompt; one gate at the end::

    autoprompt search --task sst2 --shots 16 --strategy verbalizer,demos,gradient --param demos.method=search

The data each stage may see is fixed here, not by the stages, so that the final gate's evidence
is read once:

* train is split once, stratified and seeded, into a *fit* part and a *check* part (``holdout``,
  default half). A stage searches on the fit part (its ``ctx.train``) and its gate compares its
  prompt with the stage's start on the check part (its ``ctx.dev``); the next stage starts from
  what that gate reported. Stages never see dev or test.
* dev is read once, by the pipeline's final gate (`autoprompt.search.final_gate`).

With ``crossfit=true`` (``auto``'s choice where dev is small) train and dev form two folds, the
stages run on each, and each fold's prompt is gated on the other fold, pooled (`autoprompt.search.crossfit`).

The run folder holds ``pipeline.json`` (the stages, their budgets, the auto features), one
sub-folder per stage under ``stages/`` (each a run folder with its own checkpoints and
``stage.json``), and the pipeline's own ``prompt.json`` and ``result.json``, whose
``details.stages`` lists each stage's strategy, parameters, budget, gain over its start with a
95% interval on the check part, and whether its gate passed.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autoprompt import events
from autoprompt.backends import ScoringModel
from autoprompt.backends.aliases import default_budget
from autoprompt.backends.store import load_model
from autoprompt.errors import AutopromptError
from autoprompt.io import atomic_write_json, check_writable_folder, read_json
from autoprompt.prompts import Prompt
from autoprompt.results.record import Interrupted, RunRecord
from autoprompt.scoring.generation import scoring_forwards
from autoprompt.search.auto import AutoPlan, plan_auto
from autoprompt.search.crossfit import run_crossfit
from autoprompt.search.estimate import seconds_per_forward
from autoprompt.search.final_gate import Pipeline, final_record, offered_prompts
from autoprompt.search.loop import limit_test, load_start
from autoprompt.search.parts import present_parts
from autoprompt.search.registry import create
from autoprompt.search.runs import RunDir, SearchSpec, locked_on_resume
from autoprompt.search.stages import (
    PIPELINE_PARAMS,
    PipelineSettings,
    Stage,
    StageRunner,
    check_flow,
    is_pipeline,
    parse_stages,
    split_train,
    stage_budgets,
    stage_data,
)
from autoprompt.tasks import load_task
from autoprompt.tasks.base import TaskData


def plan_pipeline(spec: SearchSpec, data: TaskData, lm: ScoringModel | None = None,
                  start: Prompt | None = None) -> dict[str, Any]:
    """What a pipeline would run, without running it: the stages, their parameters and budgets at
    their minimum spend (a stage that spends less leaves more to the next), and for ``auto`` the
    task's features and why each stage was chosen. ``auto`` scores the manual prompt on the train
    inputs (labels unused) to see its class bias."""
    settings = PipelineSettings.parse(spec.params)
    if start is None and spec.start is not None:
        start = load_start(spec.start, data.task, create("manual"))
    fit, check = split_train(data.train, settings.holdout, spec.seed)
    auto = None
    if spec.strategy == "auto":
        lm = lm or load_model(spec.model, device_map=spec.device_map)
        auto = plan_auto(lm, data, settings.effort, settings.soft, spec.model)
        stages = [Stage(s, p) for s, p in auto.stages]
        stages = parse_stages(",".join(s.strategy for s in stages),
                              {**_auto_params(stages), **_user_stage_params(spec.params, stages)})
    else:
        stages = parse_stages(spec.strategy, spec.params)
    stages = [Stage(s.strategy, {"min_gain": settings.stage_min_gain, **s.params}) for s in stages]
    dev_cost = scoring_forwards(check)
    searchers = [create(s.strategy, s.params) for s in stages]
    check_flow(searchers, present_parts(start, data.task.default_prompt) if start is not None else set())
    minimums = [s.minimum_budget(len(fit), dev_cost) for s in searchers]
    weights = list(settings.budget_split or [float(default_budget(s.default_budget, spec.model)) for s in searchers])
    if len(weights) != len(stages):
        raise AutopromptError(f"budget_split has {len(weights)} weights for {len(stages)} stages; give one per stage")
    spent_on_plan = auto.budget_spent if auto is not None else 0
    if spec.budget is not None:
        total = spec.budget
    elif auto is not None:
        total = auto.total_budget
    else:
        total = sum(default_budget(s.default_budget, spec.model) for s in searchers)
    crossfit = settings.crossfit if settings.crossfit is not None else bool(auto and auto.crossfit)
    runs = 2 if crossfit else 1  # cross-fitting runs the stages once per fold
    minimums_all = runs * sum(minimums)
    if total - spent_on_plan < minimums_all:
        raise AutopromptError(
            f"budget {total} is below the sum of the stages' minimums ({' + '.join(map(str, minimums))} = "
            f"{sum(minimums)} example-forwards on {len(fit)} fit and {len(check)} check examples"
            + (", once per fold" if crossfit else "")
            + (f", after {spent_on_plan} spent choosing the stages" if spent_on_plan else "")
            + f"); give a budget of at least {minimums_all + spent_on_plan}")
    return {"stages": [{"strategy": s.strategy, "params": s.params} for s in stages],
            "total_budget": total, "minimums": minimums, "weights": weights,
            # cross-fitted: each fold's stages get half of the total (what the first fold leaves goes to the second)
            "planned_budgets": _planned(spent_on_plan + (total - spent_on_plan) // runs, spent_on_plan, minimums,
                                        weights),
            "settings": dataclasses.asdict(settings), "crossfit": crossfit, "fit": len(fit), "check": len(check),
            "auto": auto.to_json() if auto is not None else None, "spent_choosing": spent_on_plan}


def estimate_pipeline(spec: SearchSpec, lm: ScoringModel | None = None, data: TaskData | None = None) -> dict[str, Any]:
    """What a pipeline would cost: its plan, and each stage's budget and seconds from one timing of
    example-forwards here (`autoprompt.search.estimate`)."""
    data = data or load_task(spec.task, spec.data_dir, spec.shots, spec.data_seed, spec.model)
    lm = lm or load_model(spec.model, device_map=spec.device_map)
    plan = plan_pipeline(spec, data, lm)
    per_forward = seconds_per_forward(lm, data)
    stages = [{"strategy": stage["strategy"], "params": stage["params"], "budget": budget, "minimum_budget": minimum,
               "estimated_search_s": round(budget * per_forward, 1)}
              for stage, budget, minimum in zip(plan["stages"], plan["planned_budgets"], plan["minimums"], strict=True)]
    return {"task": data.task.name, "strategy": spec.strategy, "budget": plan["total_budget"], "stages": stages,
            "crossfit": plan["crossfit"], "estimated_search_s": round(
                sum(s["estimated_search_s"] for s in stages) * (2 if plan["crossfit"] else 1), 1),
            "fit": plan["fit"], "check": plan["check"], "dev": len(data.dev), "auto": plan["auto"],
            "seconds_per_forward": round(per_forward, 4),
            "note": "budgets as planned at each stage's minimum spend; a stage that spends less leaves more to "
                    "the next. Test and baseline scoring come on top"}


def _planned(total: int, spent: int, minimums: list[int], weights: list[float]) -> list[int]:
    out = []
    for i in range(len(minimums)):
        out.append(stage_budgets(total, spent, minimums[i:], weights[i:]))
        spent += out[-1]
    return out


def _user_stage_params(params: Mapping[str, Any], chosen: list[Stage]) -> dict[str, Any]:
    """The user's stage parameters for ``auto``; those of a stage it did not choose are dropped, with a warning."""
    names = {s.strategy for s in chosen}
    out = {}
    for key, value in params.items():
        if key.removeprefix("auto.") in PIPELINE_PARAMS:
            continue
        stage, dot, _ = key.partition(".")
        if dot and stage not in names:
            events.warn(f"auto did not choose a {stage} stage for this task ({', '.join(names)}); {key} is not used")
            continue
        out[key] = value
    return out


def _auto_params(stages: list[Stage]) -> dict[str, Any]:
    """``auto``'s own choice of stage parameters, as ``stage.param`` (the user's override them)."""
    return {f"{s.strategy}.{k}": v for s in stages for k, v in s.params.items()}


@locked_on_resume
def run_pipeline(spec: SearchSpec, *, lm: ScoringModel | None = None, data: TaskData | None = None,
                 resume: str | Path | None = None, progress: bool = False, stop_after: int | None = None,
                 on_step: Any = None) -> RunRecord | Interrupted:
    """Run (or resume) a pipeline; returns the finished run (`RunRecord`), as `run_search` does (and, as
    there, recording it is the caller's).

    ``stop_after`` and ``on_step`` apply to each stage's steps (an interrupted stage returns
    `Interrupted` with its stage; `resume` continues inside it).
    """
    started = time.perf_counter()
    folder = RunDir(resume) if resume is not None else None
    if folder is not None:
        spec = folder.resumed_spec()  # a resumed pipeline runs the spec it was started with, recorded where it is
        if (done := folder.result()) is not None:
            return RunRecord.from_json(done)
        check_writable_folder(folder.path, "run folder")  # read-only, or a full disk: say so before any work
    else:
        check_writable_folder(spec.out, "run folder")
    data = data or load_task(spec.task, spec.data_dir, spec.shots, spec.data_seed, spec.model)
    if data.members:
        raise AutopromptError("pipelines search one task at a time; give one task, not a task set")
    if spec.test_limit is not None:
        data = limit_test(data, spec.test_limit)
    settings = PipelineSettings.parse(spec.params)
    start = None
    if spec.start is not None:  # its task and labels here; what each stage can keep, by `check_flow` in the plan
        start = load_start(spec.start, data.task, create("manual"))
    lm = lm or load_model(spec.model, device_map=spec.device_map)
    plan_path = folder.path / "pipeline.json" if folder is not None else None
    if plan_path is not None and plan_path.is_file():
        plan = read_json(plan_path)  # as first planned: `auto`'s choice is not made again on resume
    else:
        plan = plan_pipeline(spec, data, lm, start)  # every error in the plan comes before the run folder
    if folder is None:
        folder = RunDir.create(spec, data.task.name)
    atomic_write_json(folder.path / "pipeline.json", plan)
    stages = [Stage(s["strategy"], s["params"]) for s in plan["stages"]]
    before = lm.weights_checksum()
    spent = int(plan.get("spent_choosing", 0))
    runner = StageRunner(spec, lm, folder, stages, plan, progress, stop_after, on_step)
    if plan.get("crossfit"):
        return run_crossfit(runner, data, settings, start, before, spent, started)
    fit, check = split_train(data.train, settings.holdout, spec.seed)
    summaries = runner.run(stage_data(data, fit, check), folder.path / "stages", plan["total_budget"], spent)
    if isinstance(summaries, Interrupted):
        return summaries
    offered = offered_prompts(summaries, start or data.task.default_prompt, settings.ensemble)
    protocol = {"stages_fit_on": len(fit), "stages_checked_on": len(check), "final_gate_on": "dev",
                "holdout": settings.holdout}
    pipeline = Pipeline(spec, data, lm, folder, settings, protocol, plan)
    result = final_record(pipeline, offered, summaries, start, before, started, progress, seen=data.train)
    folder.write_result(result.to_json())
    return result


__all__ = ["AutoPlan", "estimate_pipeline", "is_pipeline", "plan_pipeline", "run_pipeline"]
