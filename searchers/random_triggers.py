"""``random``: random whole-word trigger tokens under the same budget, the floor `gradient` must beat."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from autoprompt import AnyPrompt, Prompt
from autoprompt.search import SearchContext, Searcher, hyper, keep_best, starting_prompt


@dataclass
class RandomTriggers(Searcher):
    """Each step draws ``num_candidates`` random trigger sequences and scores them, calibrated, by
    the search's objective on the same ``rescore_examples`` train examples `gradient` uses; the
    best by that train score are the candidates the core re-scores on dev against the manual prompt.

    Args:
        num_triggers: ``[T]`` slots added after the input when the template has none.
        num_candidates: random trigger sequences per step.
        rescore_examples: train examples each sequence is scored on (None: all of train).
        template: a template with ``[T]`` slots instead of the task's manual one.
        verbalizer: label words (JSON) or a ``prompt.json`` whose verbalizer to use.
    """

    name = "random"
    summary = "random whole-word trigger tokens under the same budget (a sanity floor)"
    default_budget = 10000
    search_space: ClassVar[dict[str, dict[str, Any]]] = {
        "num_triggers": {"type": "int", "low": 3, "high": 8},
        "num_candidates": {"type": "int", "low": 4, "high": 32, "log": True},
    }

    num_triggers: int = hyper(5, low=1)
    num_candidates: int = hyper(10, low=1)
    rescore_examples: int | None = hyper(None, low=1)
    template: str | None = None
    verbalizer: str | None = None

    def costs(self, train: int, dev: int) -> tuple[int, int]:
        rescore = min(self.rescore_examples or train, train)
        return self._calibration_cost(train) + dev, self.num_candidates * rescore + dev

    def start(self, ctx: SearchContext) -> dict[str, Any]:
        prompt = starting_prompt(ctx, self.template, self.verbalizer, self.num_triggers)
        start = ctx.calibrate([prompt])[0]
        return {"prompt": prompt.to_json(), "pool": {}, "best_dev": ctx.evaluator.score(start, ctx.dev).score}

    def step(self, ctx: SearchContext, state: dict[str, Any]) -> dict[str, Any]:
        base = Prompt.from_json(state["prompt"])
        vocab = ctx.lm.stable_word_tokens().nonzero()[:, 0].tolist()
        rng = ctx.rng()
        drawn = [base.with_triggers(rng.sample(vocab, len(base.trigger_ids))) for _ in range(self.num_candidates)]
        rescore = ctx.sample(ctx.train, self.rescore_examples or len(ctx.train), salt="rescore", fixed=True)
        prompts = ctx.calibrate(drawn, inputs=rescore)
        scores = ctx.objective_scores(prompts, rescore)
        pool = {**state["pool"], **{",".join(map(str, p.trigger_ids)): {"score": s, "prompt": p.to_json()}
                                    for p, s in zip(prompts, scores, strict=True)}}
        pool = keep_best(pool)
        pick = max(range(len(prompts)), key=lambda i: scores[i])
        dev = ctx.evaluator.score(prompts[pick], ctx.dev).score
        ctx.report({"dev": dev, "train_objective": scores[pick],
                    "triggers": ctx.lm.tokenizer.decode(list(prompts[pick].trigger_ids))})
        return {**state, "pool": pool, "best_dev": max(state["best_dev"], dev)}

    def candidates(self, ctx: SearchContext, state: dict[str, Any]) -> list[AnyPrompt]:
        ranked = [Prompt.from_json(entry["prompt"]) for entry in state["pool"].values()]
        return ranked or ctx.calibrate([Prompt.from_json(state["prompt"])])

    def best(self, ctx: SearchContext, state: dict[str, Any]) -> AnyPrompt:
        return self.candidates(ctx, state)[0]
