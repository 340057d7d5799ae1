"""The end of a pipeline: one gate for all its stages (`final_record`); a cross-fitted pipeline's
out-of-fold gate is `autoprompt.search.crossfit`'s.

The final gate weighs the last stage's prompt, the earlier stages' prompts and their ensemble
(`offered`) against the manual prompt (or the warm start) on dev, read once, with its threshold
corrected for the number of candidates (`corrected_min_gain`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from autoprompt.backends import ScoringModel
from autoprompt.backends.precision import resolve_dtype
from autoprompt.prompts import AnyPrompt, Ensemble, Prompt, load_prompt
from autoprompt.results.record import RunRecord
from autoprompt.scoring.budget import Budget
from autoprompt.scoring.evaluator import Evaluator
from autoprompt.search.base import Searcher, SearchState
from autoprompt.search.context import SearchContext
from autoprompt.search.finish import SearchRun, finish
from autoprompt.search.model_view import ModelView
from autoprompt.search.runs import RunDir, SearchSpec
from autoprompt.search.selection import Selection
from autoprompt.search.stages import PipelineSettings
from autoprompt.tasks.base import Example, TaskData


@dataclass
class Pipeline:
    """A pipeline run: its spec, stages, settings and run folder (`run_pipeline` drives it)."""

    spec: SearchSpec
    data: TaskData
    lm: ScoringModel
    folder: RunDir
    settings: PipelineSettings
    protocol: dict[str, Any]  # what the stages and the final gate saw
    plan: dict[str, Any]


def offered_prompts(summaries: list[dict[str, Any]], start: Prompt, ensemble: bool) -> list[AnyPrompt]:
    """What the final gate weighs: the last stage's prompt first, then each earlier stage's, then
    their equal-weight ensemble (only prompts that differ from the start and from each other)."""
    prompts: dict[str, AnyPrompt] = {}
    for summary in reversed(summaries):
        prompt = load_prompt(Path(summary["run_dir"]) / "prompt.json")
        if prompt.fingerprint != start.fingerprint:
            prompts.setdefault(prompt.fingerprint, prompt)
    found = list(prompts.values())
    joint = ensemble_of(found, "stages")
    return [*found, joint] if ensemble and joint is not None else found


def ensemble_of(prompts: Sequence[AnyPrompt], kind: str) -> Ensemble | None:
    """The equal-weight ensemble of the single prompts among ``prompts`` (None for fewer than two)."""
    singles = tuple(p for p in prompts if isinstance(p, Prompt))
    return Ensemble(singles, (1.0,) * len(singles), {"kind": kind}) if len(singles) > 1 else None


@dataclass
class FinalGate(Searcher[SearchState]):
    """The end of a pipeline as the core's `finish` sees it: a strategy that has already searched
    (its stages did) and offers their prompts to the gate. Every train example was seen by some
    stage, so the gate reads dev alone."""

    calibrates = True  # ranks on calibrated scores inside its steps (ctx.calibrate)

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


def final_record(p: Pipeline, offered: list[AnyPrompt], summaries: list[dict[str, Any]], start: Prompt | None,
                 before: str, started: float, progress: bool, decided: Selection | None = None,
                 seen: Sequence[Example] = ()) -> RunRecord:
    """The pipeline's gate (or its out-of-fold ``decided``), scores and record; ``seen``: every example the
    stages could see, on which a passed prompt's fitted statistics are re-estimated (``refit``)."""
    stages = [{**{k: s[k] for k in STAGE_FIELDS if k in s}, "budget": s["budget"]["used"]} for s in summaries]
    min_gain = corrected_min_gain(p.settings.min_gain, len(offered))
    gate = FinalGate(objective=p.settings.objective, min_gain=min_gain,  # type: ignore[arg-type]
                      calibration="none", offered=offered, stages=stages,
                      facts={"final_min_gain": {"given": p.settings.min_gain, "corrected": round(min_gain, 4),
                                                "candidates": len(offered)},
                             "protocol": p.protocol,
                             "auto": p.plan.get("auto")})
    budget = Budget(p.plan["total_budget"])
    budget.forwards = sum(s["budget"]["forwards"] for s in summaries) + int(p.plan.get("spent_choosing", 0))
    budget.backwards = sum(s["budget"]["backwards"] for s in summaries)
    budget.tokens = sum(s["budget"].get("tokens", 0) for s in summaries)
    ctx = SearchContext(ModelView.of(p.lm), p.data.task, p.data.train, p.data.dev, Evaluator(p.lm, p.data.task), budget,
                        p.spec.seed, objective=gate.objective, warm_start=start)
    run = SearchRun(p.spec, gate, p.data, p.lm, p.folder, ctx, budget, {"done": True},
                    sum(s["steps"] for s in summaries), before, started, 0.0,
                    [w for s in summaries for w in s["warnings"]], dtype=resolve_dtype(p.spec.dtype, p.lm.device))
    return finish(run, progress, decided, refit_on=seen if p.settings.refit else ())
