"""Pipelines: strategies run in order, each from the previous stage's reported prompt, and one
gate at the end.

    autoprompt search --task sst2 --shots 16 --strategy verbalizer,demos,gradient --param demos.method=search

The data each stage may see is fixed here, not by the stages, so that the final gate's evidence
is read once:

* train is split once, stratified and seeded, into a *fit* part and a *check* part (``holdout``,
  default half). A stage searches on the fit part (its ``ctx.train``) and its gate compares its
  prompt with the stage's start on the check part (its ``ctx.dev``); the next stage starts from
  what that gate reported. Stages never see dev or test.
* dev is read once, by the pipeline's final gate: the last stage's prompt, the earlier stages'
  prompts and an ensemble of them (mean of calibrated class log-probs) against the manual prompt
  (or the warm start given with ``start``), with the core's paired-SE gate.

With ``crossfit=true`` (``auto``'s choice where dev is small) every labelled example is evidence
instead: train and dev together form two folds, the stages run on each, and each fold's prompt is
gated on the other fold, pooled (`_crossfit`).

The run folder holds ``pipeline.json`` (the stages, their budgets, the auto features), one
sub-folder per stage under ``stages/`` (each a run folder with its own checkpoints and
``stage.json``), and the pipeline's own ``prompt.json`` and ``result.json``, whose
``details.stages`` lists each stage's strategy, parameters, budget, gain over its start with a
95% interval on the check part, and whether its gate passed.
"""

from __future__ import annotations

import dataclasses
import math
import random
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, cast

import torch

from autoprompt import events
from autoprompt.backends import FrozenLM, weights_checksum
from autoprompt.backends.store import default_budget, load_model
from autoprompt.errors import AutopromptError, SearchInterrupted
from autoprompt.io import atomic_write_json, check_writable_folder, path_part, read_json
from autoprompt.prompts import AnyPrompt, Ensemble, Prompt, load_prompt
from autoprompt.results.record import RunRecord
from autoprompt.scoring.budget import Budget
from autoprompt.scoring.evaluator import Evaluator
from autoprompt.scoring.generation import scoring_forwards
from autoprompt.search.auto import EFFORTS, AutoPlan, plan_auto
from autoprompt.search.base import SearchContext, Searcher, SearchState
from autoprompt.search.estimate import seconds_per_forward
from autoprompt.search.finish import SearchRun, finish
from autoprompt.search.loop import limit_test, load_start, run_search
from autoprompt.search.parts import present_parts
from autoprompt.search.registry import create, get_strategy, parse_bool
from autoprompt.search.runs import RunDir, SearchSpec, locked_on_resume
from autoprompt.search.selection import Objective, Selection, objective_values, paired_gain
from autoprompt.tasks import load_task
from autoprompt.tasks.base import Example, TaskData

#: parameters of the pipeline itself (the rest go to its stages, as ``stage.param`` or to every
#: stage that has the parameter)
PIPELINE_PARAMS = ("budget_split", "holdout", "min_gain", "stage_min_gain", "objective", "ensemble", "crossfit",
                   "effort", "soft")


def is_pipeline(strategy: str) -> bool:
    """Whether ``strategy`` names a pipeline (``a,b,c``) or ``auto`` rather than one strategy."""
    return strategy == "auto" or "," in strategy


@dataclass(frozen=True)
class Stage:
    """One stage: a strategy and its parameters."""

    strategy: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PipelineSettings:
    """The pipeline's own parameters.

    Args:
        budget_split: relative budget weights of the stages, comma-separated (default: each stage's
            own default budget, so a stage gets the share it would get alone).
        holdout: the share of train each stage's gate checks on (the rest is what stages fit on).
        min_gain: the final gate's threshold in paired standard errors (the core's `min_gain`).
        stage_min_gain: each stage gate's threshold on the check part (default 0: a stage is kept if it
            gains at all on examples it did not fit on; the final gate on dev is the strict one).
        objective: what the final gate compares (`margin`, `loglik` or `accuracy`).
        ensemble: also offer the ensemble of the stages' prompts to the final gate.
        crossfit: run the stages twice, on two folds of train and dev together, and gate each fold's
            prompt on the other fold (every labelled example is evidence; twice the compute).
        effort: ``auto`` only: ``light``, ``medium`` or ``heavy`` (the total budget and stages).
        soft: ``auto`` only: allow a continuous stage (the result then holds a soft prompt).
    """

    budget_split: tuple[float, ...] | None = None
    holdout: float = 0.5
    min_gain: float = 1.0
    stage_min_gain: float = 0.0
    objective: str = "margin"
    ensemble: bool = True
    crossfit: bool | None = None  # None: False, or auto's choice
    effort: str = "light"
    soft: bool = False

    @classmethod
    def parse(cls, params: Mapping[str, Any]) -> PipelineSettings:
        own = {k.removeprefix("auto."): v for k, v in params.items()
               if k.removeprefix("auto.") in PIPELINE_PARAMS}
        try:
            split = own.get("budget_split")
            settings = cls(
                budget_split=tuple(float(w) for w in str(split).split(",")) if split is not None else None,
                holdout=float(own.get("holdout", 0.5)), min_gain=float(own.get("min_gain", 1.0)),
                stage_min_gain=float(own.get("stage_min_gain", 0.0)),
                objective=str(own.get("objective", "margin")), ensemble=parse_bool(own.get("ensemble", True)),
                crossfit=parse_bool(own["crossfit"]) if "crossfit" in own else None,
                effort=str(own.get("effort", "light")), soft=parse_bool(own.get("soft", False)))
        except ValueError as err:
            raise AutopromptError(f"pipeline parameter: {err}; budget_split takes comma-separated weights, "
                                  "holdout a share of train, min_gain a number, ensemble and soft true/false") \
                from None
        if not 0 < settings.holdout < 1:
            raise AutopromptError(f"holdout must be a share of train between 0 and 1, got {settings.holdout}")
        if settings.effort not in EFFORTS:
            raise AutopromptError(f"auto.effort must be one of {', '.join(EFFORTS)}, not {settings.effort!r}")
        if settings.budget_split is not None and (any(not w > 0 for w in settings.budget_split)
                                                  or any(math.isinf(w) for w in settings.budget_split)):
            raise AutopromptError(f"budget_split weights must be positive numbers, got {list(settings.budget_split)}")
        return settings


def parse_stages(strategy: str, params: Mapping[str, Any]) -> list[Stage]:
    """The stages of ``a,b,c`` with their parameters: ``b.k=v`` goes to every stage named ``b``;
    a plain ``k=v`` that is not the pipeline's own goes to every stage that has ``k``."""
    names = [s.strip() for s in strategy.split(",")]
    if any(not n for n in names):
        raise AutopromptError(f"pipeline {strategy!r} has an empty stage; give strategies separated by commas")
    for name in names:
        if name in {"auto", "pipeline"}:
            raise AutopromptError(f"{name} cannot be a stage of a pipeline; list strategies, e.g. verbalizer,demos")
        get_strategy(name)  # an unknown stage: one line naming the strategies there are
    staged: dict[str, dict[str, Any]] = {n: {} for n in names}
    for key, value in params.items():
        stage, dot, param = key.partition(".")
        if dot and stage != "auto":
            if stage not in staged:
                raise AutopromptError(f"parameter {key} is for stage {stage}, which is not in this pipeline "
                                      f"({', '.join(names)}); add the stage or drop the parameter")
            staged[stage][param] = value
        elif key.removeprefix("auto.") not in PIPELINE_PARAMS:
            takers = [n for n in staged if key in {f.name for f in dataclasses.fields(get_strategy(n))}]
            if not takers:
                raise AutopromptError(f"no stage of {', '.join(names)} has a parameter {key!r}; give it to a stage "
                                      f"as <stage>.{key}, or use a pipeline parameter: {', '.join(PIPELINE_PARAMS)}")
            for n in takers:
                staged[n].setdefault(key, value)
    out = [Stage(n, dict(staged[n])) for n in names]
    for one in out:
        create(one.strategy, one.params)  # a bad stage parameter fails here, before any work
    return out


def split_train(train: Sequence[Example], holdout: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Train split once into (fit, check): each class split in the ``holdout`` share, seeded, each
    part in train's order."""
    by_class: dict[int, list[int]] = {}
    for i, ex in enumerate(train):
        by_class.setdefault(ex.label, []).append(i)
    rng = random.Random(f"pipeline-split:{seed}")
    check: set[int] = set()
    for _, idx in sorted(by_class.items()):
        n = round(len(idx) * holdout) if len(idx) > 1 else 0
        check |= set(rng.sample(idx, n))
    fit = [ex for i, ex in enumerate(train) if i not in check]
    held = [ex for i, ex in enumerate(train) if i in check]
    if not fit or not held:
        raise AutopromptError(f"train holds {len(train)} examples: too few to split into a part the stages fit on "
                              "and a part their gates check on; give more shots")
    return fit, held


def stage_data(data: TaskData, fit: list[Example], check: list[Example]) -> TaskData:
    """The splits a stage sees: train is the fit part, dev the check part, and there is no test."""

    def no_test() -> list[Example]:
        raise AutopromptError("a pipeline stage never reads test; this is a bug in the pipeline")

    return TaskData(data.task, {**data.protocol, "pipeline_stage": {"train": len(fit), "check": len(check)}},
                    {"train": lambda: fit, "dev": lambda: check, "test": no_test})


def stage_budgets(total: int, spent: int, minimums: Sequence[int], weights: Sequence[float]) -> int:
    """The budget of the next stage, given the pipeline's ``total``, what earlier stages ``spent``, and the
    remaining stages' minimums and weights (the next one first): its minimum, plus its weight's share of
    what is left above the remaining minimums. What a stage leaves unspent goes to the stages after it,
    and the stages together never spend more than ``total``."""
    free = total - spent - sum(minimums)
    return minimums[0] + max(0, math.floor(free * weights[0] / sum(weights)))


@dataclass
class Pipeline:
    """A pipeline run: its spec, stages, settings and run folder (`run_pipeline` drives it)."""

    spec: SearchSpec
    data: TaskData
    lm: FrozenLM
    folder: RunDir
    settings: PipelineSettings
    protocol: dict[str, Any]  # what the stages and the final gate saw
    plan: dict[str, Any]


PART_NAMES = {"template": "template text", "triggers": "trigger tokens", "verbalizer": "label words",
              "demos": "demonstrations", "soft": "soft part"}


def check_flow(searchers: Sequence[Searcher], present: set[str]) -> None:
    """Refuse, before any work, a pipeline whose stage could not keep a part an earlier stage (or the
    start) may hand it: each stage must search or carry every part that may reach it."""
    origin = dict.fromkeys(sorted(present), "the start prompt")
    for i, searcher in enumerate(searchers, 1):
        lost = [p for p in origin if p not in searcher.searches | searcher.carries]
        if lost:
            what = " and ".join(f"the {PART_NAMES[p]} {origin[p]} adds" if origin[p] != "the start prompt"
                                else f"the start prompt's {PART_NAMES[p]}" for p in lost)
            raise AutopromptError(f"stage {i} ({searcher.name}) cannot keep {what}; put {searcher.name} earlier in "
                                  "the pipeline, or drop one of them")
        for part in searcher.searches:
            origin[part] = f"stage {i} ({searcher.name})"


def plan_pipeline(spec: SearchSpec, data: TaskData, lm: FrozenLM | None = None,
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
        lm = lm or load_model(spec.model)
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
            + (", once per fold" if runs == 2 else "")
            + (f", after {spent_on_plan} spent choosing the stages" if spent_on_plan else "")
            + f"); give a budget of at least {minimums_all + spent_on_plan}")
    return {"stages": [{"strategy": s.strategy, "params": s.params} for s in stages],
            "total_budget": total, "minimums": minimums, "weights": weights,
            # cross-fitted: each fold's stages get half of the total (what the first fold leaves goes to the second)
            "planned_budgets": _planned(spent_on_plan + (total - spent_on_plan) // runs, spent_on_plan, minimums,
                                        weights),
            "settings": dataclasses.asdict(settings), "crossfit": crossfit, "fit": len(fit), "check": len(check),
            "auto": auto.to_json() if auto is not None else None, "spent_choosing": spent_on_plan}


def estimate_pipeline(spec: SearchSpec, lm: FrozenLM | None = None, data: TaskData | None = None) -> dict[str, Any]:
    """What a pipeline would cost: its plan, and each stage's budget and seconds from one timing of
    example-forwards here (`autoprompt.search.estimate`)."""
    data = data or load_task(spec.task, spec.data_dir, spec.shots, spec.data_seed, spec.model)
    lm = lm or load_model(spec.model)
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
def run_pipeline(spec: SearchSpec, *, lm: FrozenLM | None = None, data: TaskData | None = None,
                 resume: str | Path | None = None, progress: bool = False, stop_after: int | None = None,
                 on_step: Any = None) -> dict[str, Any]:
    """Run (or resume) a pipeline; returns ``result.json``'s content, as `run_search` does (and, as
    there, recording it is the caller's).

    ``stop_after`` and ``on_step`` apply to each stage's steps (an interrupted stage returns
    ``{"interrupted": True, ...}``; `resume` continues inside it).
    """
    started = time.perf_counter()
    folder = RunDir(resume) if resume is not None else None
    if folder is not None:
        spec = folder.resumed_spec()  # a resumed pipeline runs the spec it was started with, recorded where it is
        if (done := folder.result()) is not None:
            return done
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
    lm = lm or load_model(spec.model)
    plan_path = folder.path / "pipeline.json" if folder is not None else None
    if plan_path is not None and plan_path.is_file():
        plan = read_json(plan_path)  # as first planned: `auto`'s choice is not made again on resume
    else:
        plan = plan_pipeline(spec, data, lm, start)  # every error in the plan comes before the run folder
    if folder is None:
        folder = RunDir.create(spec, data.task.name)
    atomic_write_json(folder.path / "pipeline.json", plan)
    stages = [Stage(s["strategy"], s["params"]) for s in plan["stages"]]
    before = weights_checksum(lm.model)
    spent = int(plan.get("spent_choosing", 0))
    runner = _StageRunner(spec, lm, folder, stages, plan, progress, stop_after, on_step)
    if plan.get("crossfit"):
        return _crossfit(runner, data, settings, start, before, spent, started)
    fit, check = split_train(data.train, settings.holdout, spec.seed)
    summaries = runner.run(stage_data(data, fit, check), folder.path / "stages", plan["total_budget"], spent)
    if summaries is None:
        return runner.interrupted
    offered = _offered(summaries, start or data.task.default_prompt, settings.ensemble)
    protocol = {"stages_fit_on": len(fit), "stages_checked_on": len(check), "final_gate_on": "dev",
                "holdout": settings.holdout}
    pipeline = Pipeline(spec, data, lm, folder, settings, protocol, plan)
    result = _final(pipeline, offered, summaries, start, before, started, progress)
    folder.write_result(result.to_json())
    return result.to_json()


@dataclass
class _StageRunner:
    """Runs a list of stages on one view of the data, each from the previous stage's prompt."""

    spec: SearchSpec
    lm: FrozenLM
    folder: RunDir
    stages: list[Stage]
    plan: dict[str, Any]
    progress: bool
    stop_after: int | None
    on_step: Any
    interrupted: dict[str, Any] = field(default_factory=dict)

    def run(self, view: TaskData, base: Path, total: int, spent: int, tag: str = "") -> list[dict[str, Any]] | None:
        """Each stage's summary (``stage.json``), or None if a stage was interrupted (`interrupted` says where)."""
        spec, plan = self.spec, self.plan
        previous = spec.start
        summaries: list[dict[str, Any]] = []
        for i, stage in enumerate(self.stages):
            path = base / f"{i + 1}-{path_part(stage.strategy)}"
            budget = stage_budgets(total, spent, plan["minimums"][i:], plan["weights"][i:])
            # a time limit is the whole pipeline's: a stage gets what the stages before it left
            seconds = (max(1e-3, spec.max_seconds - sum(s["wall_s"] for s in summaries))
                       if spec.max_seconds is not None else None)
            stage_spec = SearchSpec(task=spec.task, strategy=stage.strategy, params=dict(stage.params),
                                    model=spec.model, shots=spec.shots, data_seed=spec.data_seed, seed=spec.seed,
                                    budget=budget, max_seconds=seconds, out=str(base), data_dir=spec.data_dir,
                                    start=str(Path(previous).resolve()) if previous else None, dtype=spec.dtype)
            resume = path if (path / "spec.json").is_file() else None
            try:
                summary = run_search(stage_spec, lm=self.lm, data=view, resume=resume, progress=self.progress,
                                     stop_after=self.stop_after, on_step=self.on_step, stage_dir=path)
            except SearchInterrupted:
                raise SearchInterrupted(str(self.folder.path)) from None
            except AutopromptError as err:
                raise AutopromptError(f"stage {i + 1}{tag} ({stage.strategy}): {err}") from None
            if summary.get("interrupted"):
                self.interrupted = {"interrupted": True, "run_dir": str(self.folder.path), "stage": i + 1,
                                    "step": summary["step"]}
                return None
            summaries.append({**summary, "stage": i + 1, "budget_given": budget})
            spent += int(summary["budget"]["used"])
            previous = str(path / "prompt.json")
        return summaries


def _crossfit(runner: _StageRunner, data: TaskData, settings: PipelineSettings, start: Prompt | None, before: str,
              spent: int, started: float) -> dict[str, Any]:
    """Cross-fitting: the labelled examples (train and dev) are split in two folds; the stages run on
    each fold (its own fit and check parts), and the gate weighs each fold's prompt on the *other* fold,
    pooled over every labelled example against the start. Each example is scored by a prompt that never
    saw it, and the gate has twice dev's examples. Passed: the ensemble of the two folds' prompts."""
    spec, folder, lm = runner.spec, runner.folder, runner.lm
    labelled = data.train + data.dev
    one, two = split_train(labelled, 0.5, spec.seed + 1)
    total = runner.plan["total_budget"]
    reference = start or data.task.default_prompt
    found: list[AnyPrompt] = []
    summaries: list[dict[str, Any]] = []
    for k, own in enumerate((one, two), 1):
        fit, check = split_train(own, settings.holdout, spec.seed)
        fold_total = spent + (total - spent) // (3 - k)  # half of what is left, then the rest
        fold = runner.run(stage_data(data, fit, check), folder.path / "stages" / f"fold{k}", fold_total, spent,
                          tag=f" of fold {k}")
        if fold is None:
            return runner.interrupted
        spent += sum(int(s["budget"]["used"]) for s in fold)
        summaries += [{**s, "fold": k} for s in fold]
        found.append(load_prompt(Path(fold[-1]["run_dir"]) / "prompt.json"))
    decided = _out_of_fold_gate(Evaluator(lm, data.task), found, (two, one), reference, settings,
                                "start prompt" if start is not None else "manual prompt")
    protocol = {"crossfit": True, "folds": [len(one), len(two)], "holdout": settings.holdout,
                "final_gate_on": f"out of fold, {len(labelled)} labelled examples (train and dev)"}
    pipeline = Pipeline(spec, data, lm, folder, settings, protocol, runner.plan)
    result = _final(pipeline, [decided.chosen], summaries, start, before, started, runner.progress, decided)
    runner.folder.write_result(result.to_json())
    return result.to_json()


def _out_of_fold_gate(ev: Evaluator, found: list[AnyPrompt], others: tuple[list[Example], list[Example]],
                      reference: Prompt, settings: PipelineSettings, against: str) -> Selection:
    """The core's paired gate on out-of-fold objective values: fold k's prompt on the other fold's
    examples, pooled, against ``reference`` on the same examples; passed, the folds' ensemble is chosen."""
    objective = cast(Objective, settings.objective)
    mine, base = [], []
    for prompt, examples in zip(found, others, strict=True):
        scored, ref = ev.score_many([prompt, reference], examples)
        mine.append(objective_values(scored, objective))
        base.append(objective_values(ref, objective))
    values, reference_values = torch.cat(mine), torch.cat(base)
    gain, se = paired_gain(values, reference_values)
    n = len(values)
    distinct = list({p.fingerprint: p for p in found if p.fingerprint != reference.fingerprint}.values())
    chosen: AnyPrompt = _ensemble_of(distinct, "cross-fitted folds") or (distinct[0] if distinct else reference)
    passed = bool(distinct) and gain > 0 and gain > settings.min_gain * se
    rows = [{"fingerprint": p.fingerprint, "template": p.template.source, "fold": k + 1, "manual": False,
             "objective": round(float(v.mean()), 6), "prompt": p.to_json()} for k, (p, v) in enumerate(zip(
                 found, mine, strict=True))]
    if passed:
        message = (f"found prompts beat the {against} out of fold on {n} labelled examples: {gain:+.4f} "
                   f"{objective} ({gain / se:.1f} paired standard errors); reporting the folds' ensemble")
        return Selection(chosen, True, chosen, gain, se, n, objective, settings.min_gain, rows, message, against)
    message = (f"no reliable improvement found: out of fold the found prompts gain {gain:+.4f} {objective} ± "
               f"{se:.4f} over the {against} on {n} labelled examples, within {settings.min_gain:g} standard "
               f"error(s); reporting the {against}")
    return Selection(reference, False, chosen, gain, se, n, objective, settings.min_gain, rows, message, against)


def _offered(summaries: list[dict[str, Any]], start: Prompt, ensemble: bool) -> list[AnyPrompt]:
    """What the final gate weighs: the last stage's prompt first, then each earlier stage's, then
    their equal-weight ensemble (only prompts that differ from the start and from each other)."""
    prompts: dict[str, AnyPrompt] = {}
    for summary in reversed(summaries):
        prompt = load_prompt(Path(summary["run_dir"]) / "prompt.json")
        if prompt.fingerprint != start.fingerprint:
            prompts.setdefault(prompt.fingerprint, prompt)
    found = list(prompts.values())
    joint = _ensemble_of(found, "stages")
    return [*found, joint] if ensemble and joint is not None else found


def _ensemble_of(prompts: Sequence[AnyPrompt], kind: str) -> Ensemble | None:
    """The equal-weight ensemble of the single prompts among ``prompts`` (None for fewer than two)."""
    singles = tuple(p for p in prompts if isinstance(p, Prompt))
    return Ensemble(singles, (1.0,) * len(singles), {"kind": kind}) if len(singles) > 1 else None


@dataclass
class _FinalGate(Searcher):
    """The end of a pipeline as the core's `finish` sees it: a strategy that has already searched
    (its stages did) and offers their prompts to the gate. Every train example was seen by some
    stage, so the gate reads dev alone."""

    name: ClassVar[str] = "pipeline"
    summary: ClassVar[str] = "the stages' prompts, gated once on dev"
    final_candidates: ClassVar[int] = 16

    offered: list[Any] = field(default_factory=list)
    stages: list[Any] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def start(self, ctx: SearchContext) -> SearchState:
        return {"done": True}

    def step(self, ctx: SearchContext, state: SearchState) -> SearchState:
        return {**state, "done": True}

    def candidates(self, ctx: SearchContext, state: SearchState) -> list[AnyPrompt]:
        return list(self.offered) or [ctx.start]

    def best(self, ctx: SearchContext, state: SearchState) -> AnyPrompt:
        return self.candidates(ctx, state)[0]

    def fitted(self, ctx: SearchContext, state: SearchState) -> Sequence[Example]:
        return ctx.train

    def details(self, ctx: SearchContext, state: SearchState) -> dict[str, Any]:
        return {"stages": self.stages, **self.facts}


def corrected_min_gain(min_gain: float, offered: int) -> float:
    """The final gate's threshold for ``offered`` candidates: the one whose family-wise false-positive
    rate is that of one candidate at ``min_gain`` (Bonferroni on the one-sided normal tail), so offering
    every stage's prompt and their ensemble does not make a chance gain more likely to pass."""
    if offered <= 1 or min_gain <= 0:
        return min_gain
    tail = 0.5 * math.erfc(min_gain / math.sqrt(2)) / offered
    return float(statistics.NormalDist().inv_cdf(1 - tail))


#: what ``details.stages`` keeps of each stage's ``stage.json`` (its budget as the forwards it used)
STAGE_FIELDS = ("stage", "fold", "strategy", "params", "budget_given", "passed", "gain", "se", "ci95", "n",
                "objective", "steps", "wall_s", "message", "run_dir", "prompt_fingerprint")


def _final(p: Pipeline, offered: list[AnyPrompt], summaries: list[dict[str, Any]], start: Prompt | None,
           before: str, started: float, progress: bool, decided: Selection | None = None) -> RunRecord:
    stages = [{**{k: s[k] for k in STAGE_FIELDS if k in s}, "budget": s["budget"]["used"]} for s in summaries]
    min_gain = corrected_min_gain(p.settings.min_gain, len(offered))
    gate = _FinalGate(objective=p.settings.objective, min_gain=min_gain,  # type: ignore[arg-type]
                      calibration="none", offered=offered, stages=stages,
                      facts={"final_min_gain": {"given": p.settings.min_gain, "corrected": round(min_gain, 4),
                                                "candidates": len(offered)},
                             "protocol": p.protocol,
                             "auto": p.plan.get("auto")})
    budget = Budget(p.plan["total_budget"])
    budget.forwards = sum(s["budget"]["forwards"] for s in summaries) + int(p.plan.get("spent_choosing", 0))
    budget.backwards = sum(s["budget"]["backwards"] for s in summaries)
    budget.tokens = sum(s["budget"].get("tokens", 0) for s in summaries)
    ctx = SearchContext(p.lm, p.data.task, p.data.train, p.data.dev, Evaluator(p.lm, p.data.task), budget,
                        p.spec.seed, objective=gate.objective, warm_start=start)
    run = SearchRun(p.spec, gate, p.data, p.lm, p.folder, ctx, budget, {"done": True},
                    sum(s["steps"] for s in summaries), before, started, 0.0,
                    [w for s in summaries for w in s["warnings"]])
    return finish(run, progress, decided)


__all__ = ["AutoPlan", "PipelineSettings", "Stage", "estimate_pipeline", "is_pipeline", "parse_stages",
           "plan_pipeline", "run_pipeline", "split_train", "stage_budgets"]
