"""``gradient``: AutoPrompt's gradient-guided trigger search (Shin et al., 2020), and a GCG variant.

Each step:

1. the gradient of the label loss (−log p(label word)) w.r.t. the trigger embeddings, summed
   over ``accumulation_steps`` train batches;
2. HotFlip candidates: for one random trigger position, the top ``num_candidates`` tokens by
   −E·g (``positions=random``, the paper); or, GCG-style (``positions=all``), the top tokens at
   every position, of which ``num_candidates`` single-token swaps are sampled;
3. the current triggers and all candidates re-scored together on a fresh train batch, by label
   log-likelihood (the paper) or accuracy (the original code); the best candidate is kept only
   if it is strictly better;
4. an accepted prompt is scored on ``dev``; the best on ``dev`` is the result. The starting
   prompt without triggers (the manual one) competes too, so a search that finds nothing better
   on ``dev`` says so instead of reporting a worse prompt.

Candidates are restricted to whole-word tokens that are not special tokens or label-word
tokens (optionally no capitalised words, AutoPrompt's proper-noun filter).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from autoprompt import AutopromptError, Prompt
from autoprompt.search import SearchContext, Searcher, best_of_start, gold_loglik, starting_prompt


@dataclass
class Gradient(Searcher):
    """AutoPrompt trigger search.

    Args:
        num_triggers: ``[T]`` slots added after the input when the template has none.
        init: initial trigger word (repeated) or one word per trigger.
        num_candidates: HotFlip candidates per step.
        batch_size: train examples per gradient batch and per re-scoring batch.
        accumulation_steps: gradient batches summed per step.
        positions: ``random`` (one position per step, the paper) or ``all`` (GCG-style swaps).
        rescore: ``loglik`` (the paper) or ``accuracy`` (the original code).
        filter_proper_nouns: also exclude capitalised tokens.
        template: a template with ``[T]`` slots instead of the task's manual one.
        verbalizer: label words (JSON) or a ``prompt.json`` whose verbalizer to use.
    """

    name = "gradient"
    summary = "AutoPrompt: HotFlip trigger tokens from embedding gradients, re-scored in batches (GCG: positions=all)"
    default_budget = 6000
    search_space: ClassVar[dict[str, dict[str, Any]]] = {
        "num_candidates": {"type": "int", "low": 10, "high": 100, "log": True},
        "num_triggers": {"type": "int", "low": 3, "high": 8},
        "accumulation_steps": {"type": "int", "low": 1, "high": 4},
        "positions": {"type": "categorical", "choices": ["random", "all"]},
    }

    num_triggers: int = 5
    init: str = "the"
    num_candidates: int = 10
    batch_size: int = 16
    accumulation_steps: int = 1
    positions: Literal["random", "all"] = "random"
    rescore: Literal["loglik", "accuracy"] = "loglik"
    filter_proper_nouns: bool = False
    template: str | None = None
    verbalizer: str | None = None

    def __post_init__(self) -> None:
        for key in ("num_triggers", "num_candidates", "batch_size", "accumulation_steps"):
            if getattr(self, key) < 1:
                raise AutopromptError(f"gradient: {key} must be at least 1, got {getattr(self, key)}")

    def start(self, ctx: SearchContext) -> dict[str, Any]:
        prompt = starting_prompt(ctx, self.template, self.verbalizer, self.num_triggers, self.init)
        if not prompt.template.num_triggers:
            raise AutopromptError("gradient search needs [T] slots; give num_triggers >= 1 or a template with [T]")
        return {"prompt": prompt.to_json(), "triggers": list(prompt.trigger_ids), "accepted": 0,
                **best_of_start(ctx, prompt, self.template, self.verbalizer)}

    def allowed_tokens(self, ctx: SearchContext, prompt: Prompt) -> torch.Tensor:
        """``[V]`` bool: whole words, not special, not label-word tokens (optionally not capitalised)."""
        allowed = ctx.lm.word_start_tokens().clone()
        for words in ctx.lm.word_table(prompt, ctx.task.labels):
            for word in words:
                allowed[list(word)] = False
        if self.filter_proper_nouns:
            tokens = ctx.lm.tokenizer.convert_ids_to_tokens(allowed.nonzero()[:, 0].tolist())
            for i, tok in zip(allowed.nonzero()[:, 0].tolist(), tokens, strict=True):
                if tok.lstrip("Ġ▁")[:1].isupper():
                    allowed[i] = False
        return allowed

    def candidates(self, ctx: SearchContext, prompt: Prompt, grad: torch.Tensor) -> list[tuple[int, ...]]:
        """HotFlip: trigger sequences with one token swapped, ranked by −E·g."""
        embeddings = ctx.lm.embedding_matrix().detach()
        scores = -(grad.to(embeddings.dtype) @ embeddings.T)                       # [T, V]
        scores[:, ~self.allowed_tokens(ctx, prompt).to(scores.device)] = -float("inf")
        current = list(prompt.trigger_ids)
        rng = ctx.rng()
        if self.positions == "random":
            pos = rng.randrange(len(current))
            top = scores[pos].topk(self.num_candidates).indices.tolist()
            swaps = [(pos, tok) for tok in top]
        else:
            top = scores.topk(self.num_candidates, dim=-1).indices.tolist()          # [T, k]
            pool = [(pos, tok) for pos in range(len(current)) for tok in top[pos]]
            swaps = rng.sample(pool, min(self.num_candidates, len(pool)))
        out = []
        for pos, tok in swaps:
            if tok != current[pos]:
                cand = list(current)
                cand[pos] = tok
                out.append(tuple(cand))
        return list(dict.fromkeys(out))

    def step(self, ctx: SearchContext, state: dict[str, Any]) -> dict[str, Any]:
        base = Prompt.from_json(state["prompt"])
        prompt = base.with_triggers(state["triggers"])
        words = ctx.lm.word_table(prompt, ctx.task.labels)
        grad = None
        for i in range(self.accumulation_steps):
            batch = ctx.sample(ctx.train, self.batch_size, salt=f"grad{i}")
            ctx.budget.require(backwards=len(batch))
            g, loss = ctx.lm.trigger_gradient([ctx.lm.encode(prompt, ex) for ex in batch], words,
                                              [ex.label for ex in batch])
            ctx.budget.charge(backwards=len(batch))
            grad = g if grad is None else grad + g
        candidates = self.candidates(ctx, prompt, grad)
        fresh = ctx.sample(ctx.train, self.batch_size, salt="rescore")
        results = ctx.evaluator.score_many([prompt] + [base.with_triggers(c) for c in candidates], fresh)
        if self.rescore == "loglik":
            scores = [gold_loglik(r.logprobs, fresh) for r in results]
        else:
            scores = [r.score for r in results]
        best = max(range(1, len(results)), key=lambda i: scores[i], default=0)
        state = dict(state)
        accepted = best > 0 and scores[best] > scores[0]
        if accepted:
            state["triggers"] = list(candidates[best - 1])
            state["accepted"] += 1
            accepted_prompt = base.with_triggers(state["triggers"])
            dev = ctx.evaluator.score(accepted_prompt, ctx.dev).score
            if dev > state["best_dev"]:
                state["best_dev"], state["best_prompt"] = dev, accepted_prompt.to_json()
        ctx.report({"loss": round(loss, 4), "candidates": len(candidates),
                    "train_score": scores[best if accepted else 0], "accepted": accepted,
                    "triggers": ctx.lm.tokenizer.convert_ids_to_tokens(state["triggers"])})
        return state

    def best(self, ctx: SearchContext, state: dict[str, Any]) -> Prompt:
        return Prompt.from_json(state["best_prompt"])
