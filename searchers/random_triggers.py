"""``random``: random whole-word trigger tokens under the same budget, the floor `gradient` must beat."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from autoprompt import Prompt
from autoprompt.search import SearchContext, TriggerSearch, TriggerState, hyper


@dataclass
class RandomTriggers(TriggerSearch[TriggerState]):
    """Each step scores ``num_candidates`` random trigger sequences, calibrated, on the train examples
    `gradient` re-scores on; the best by train are the candidates the core re-scores on dev.

    Args:
        num_candidates: random trigger sequences per step.
    """

    name = "random"
    summary = "random whole-word trigger tokens under the same budget (a sanity floor)"
    default_budget = 10000
    search_space: ClassVar[dict[str, dict[str, Any]]] = {
        "num_triggers": {"type": "int", "low": 3, "high": 8},
        "num_candidates": {"type": "int", "low": 4, "high": 32, "log": True},
    }

    num_candidates: int = hyper(10, low=1)

    def costs(self, train: int, dev: int) -> tuple[int, int]:
        return self._calibration_cost(train) + dev, self.num_candidates * self.rescore_cost(train) + dev

    def step(self, ctx: SearchContext, state: TriggerState) -> TriggerState:
        base, rng = Prompt.from_json(state["prompt"]), ctx.rng()
        vocab = ctx.lm.stable_word_tokens().nonzero()[:, 0].tolist()
        drawn = [base.with_triggers(rng.sample(vocab, len(base.trigger_ids))) for _ in range(self.num_candidates)]
        rescore = self.rescore_set(ctx)
        prompts = ctx.calibrate(drawn, inputs=rescore)
        scores = ctx.objective_scores(prompts, rescore)
        best = prompts[max(range(len(prompts)), key=lambda i: scores[i])]
        dev = ctx.evaluator.score(best, ctx.dev).score
        ctx.report({"dev": dev, "train_objective": max(scores), "triggers": ctx.lm.decode(best.trigger_ids)})
        return {**state, "pool": self.pooled(state, prompts, scores), "best_dev": max(state["best_dev"], dev)}
