"""``random``: random whole-word trigger tokens under the same budget, the floor `gradient` must beat."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from autoprompt import AutopromptError, Prompt
from autoprompt.search import SearchContext, Searcher, best_of_start, gold_loglik, starting_prompt


@dataclass
class RandomTriggers(Searcher):
    """Each step draws ``num_candidates`` random trigger sequences, keeps the best on a train
    batch, and scores it on ``dev``; the best on ``dev`` (the starting prompt without triggers
    included) is the result.

    Args:
        num_triggers: ``[T]`` slots added after the input when the template has none.
        num_candidates: random trigger sequences per step.
        batch_size: train examples per scoring batch.
        template: a template with ``[T]`` slots instead of the task's manual one.
        verbalizer: label words (JSON) or a ``prompt.json`` whose verbalizer to use.
    """

    name = "random"
    summary = "random whole-word trigger tokens under the same budget (a sanity floor)"
    default_budget = 6000
    search_space: ClassVar[dict[str, dict[str, Any]]] = {
        "num_triggers": {"type": "int", "low": 3, "high": 8},
        "num_candidates": {"type": "int", "low": 4, "high": 32, "log": True},
    }

    num_triggers: int = 5
    num_candidates: int = 10
    batch_size: int = 16
    template: str | None = None
    verbalizer: str | None = None

    def __post_init__(self) -> None:
        if min(self.num_triggers, self.num_candidates, self.batch_size) < 1:
            raise AutopromptError("random: num_triggers, num_candidates and batch_size must be at least 1")

    def start(self, ctx: SearchContext) -> dict[str, Any]:
        prompt = starting_prompt(ctx, self.template, self.verbalizer, self.num_triggers)
        return {"prompt": prompt.to_json(), **best_of_start(ctx, prompt, self.template, self.verbalizer)}

    def step(self, ctx: SearchContext, state: dict[str, Any]) -> dict[str, Any]:
        base = Prompt.from_json(state["prompt"])
        vocab = ctx.lm.word_start_tokens().nonzero()[:, 0].tolist()
        rng = ctx.rng()
        candidates = [base.with_triggers(rng.sample(vocab, len(base.trigger_ids))) for _ in range(self.num_candidates)]
        batch = ctx.sample(ctx.train, self.batch_size)
        results = ctx.evaluator.score_many(candidates, batch)
        pick = max(range(len(candidates)), key=lambda i: gold_loglik(results[i].logprobs, batch))
        dev = ctx.evaluator.score(candidates[pick], ctx.dev).score
        state = dict(state)
        if dev > state["best_dev"]:
            state["best_dev"], state["best_prompt"] = dev, candidates[pick].to_json()
        ctx.report({"dev": dev, "triggers": ctx.lm.tokenizer.convert_ids_to_tokens(list(candidates[pick].trigger_ids))})
        return state

    def best(self, ctx: SearchContext, state: dict[str, Any]) -> Prompt:
        return Prompt.from_json(state["best_prompt"])
