"""``gradient``: AutoPrompt's gradient-guided trigger search (Shin et al., 2020), and a GCG variant.

Each step:

1. the gradient of the label loss (−log p(label word)) w.r.t. the trigger embeddings, summed
   over ``accumulation_steps`` train batches;
2. HotFlip candidates: for one random trigger position, the top ``num_candidates`` tokens by
   −E·g (``positions=random``, the paper); or, GCG-style (``positions=all``), the top tokens at
   every position, of which ``num_candidates`` single-token swaps are sampled;
3. the current triggers and all candidates re-scored together, calibrated, on the same
   ``rescore_examples`` train examples every step (default: all of train), by the search's
   objective (the gold-class margin) minus ``fluency`` × the LM's mean negative log-likelihood of
   the trigger tokens given the template text before them (AutoDAN / FluentPrompt); the best
   candidate is kept only if that score is strictly better;
4. every trigger set scored joins a pool ranked by that train score; the best ``ensemble`` of them
   (one prompt, or an equal-weight `Ensemble` of the top ``ensemble``) are the candidates the core
   re-scores on dev against the manual prompt (`autoprompt.search.selection`). Dev is only watched
   (``best_dev`` in the trace), never searched on.

Candidates are whole-word tokens that decode and re-encode to themselves (so the prompt can be
written down as text), not special tokens or label-word tokens (optionally no capitalised
words, AutoPrompt's proper-noun filter).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from autoprompt import AnyPrompt, Ensemble, Example, Prompt
from autoprompt.search import SearchContext, TriggerGradients, TriggerSearch, TriggerState, hyper


class GradientState(TriggerState):
    accepted: int            # swaps accepted so far
    nll: dict[str, float]    # the fluency term of each trigger set scored (by `_key`): a resume charges it once


@dataclass
class Gradient(TriggerSearch[GradientState]):
    """AutoPrompt trigger search.

    Args:
        init: initial trigger word (repeated) or one word per trigger.
        num_candidates: HotFlip candidates per step.
        batch_size: train examples per gradient batch.
        accumulation_steps: gradient batches summed per step.
        positions: ``random`` (one position per step, the paper) or ``all`` (GCG-style swaps).
        fluency: λ, the weight of the triggers' mean negative log-likelihood (0: off).
        ensemble: return the top-k trigger sets as one equal-weight ensemble (1: a single prompt).
        filter_proper_nouns: also exclude capitalised tokens.
    """

    name = "gradient"
    summary = ("AutoPrompt: HotFlip trigger tokens from embedding gradients, re-scored calibrated on train with a "
               "fluency penalty (GCG: positions=all; ensemble=k)")
    default_budget = 10000
    search_space: ClassVar[dict[str, dict[str, Any]]] = {
        "num_candidates": {"type": "int", "low": 10, "high": 100, "log": True},
        "num_triggers": {"type": "int", "low": 3, "high": 8},
        "accumulation_steps": {"type": "int", "low": 1, "high": 4},
        "positions": {"type": "categorical", "choices": ["random", "all"]},
        "fluency": {"type": "float", "low": 0.0, "high": 1.0},
    }

    init: str = "the"
    num_candidates: int = hyper(10, low=1)
    batch_size: int = hyper(16, low=1)
    accumulation_steps: int = hyper(1, low=1)
    positions: Literal["random", "all"] = "random"
    # held out (benchmarks/selection_defaults.py): at 0.1 the fluent "the the the the the" start turned away
    # every HotFlip swap for 42 steps; 0 is the default until a smaller λ shows a held-out gain
    fluency: float = hyper(0.0, low=0)
    ensemble: int = hyper(1, low=1)
    filter_proper_nouns: bool = False

    def costs(self, train: int, dev: int) -> tuple[int, int]:
        # start: calibrate on train, score dev; a step: the gradient batches (a backward is two),
        # the current and every candidate trigger set on the re-scoring examples, dev if accepted
        rescore = self.rescore_cost(train)
        gradient = 2 * min(self.batch_size, train) * self.accumulation_steps
        return self._calibration_cost(train) + dev, gradient + (self.num_candidates + 1) * rescore + dev

    def start(self, ctx: SearchContext) -> GradientState:
        return {**self.started(ctx, self.init), "accepted": 0, "nll": {}}

    def allowed_tokens(self, ctx: SearchContext, prompt: Prompt) -> torch.Tensor:
        """``[V]`` bool: whole words that survive decode → encode, not special, not label-word tokens
        (optionally not capitalised)."""
        allowed = ctx.lm.stable_word_tokens().clone()
        for words in ctx.lm.word_table(prompt, ctx.task.labels):
            for word in words:
                allowed[list(word)] = False
        if self.filter_proper_nouns:
            tokens = ctx.lm.tokenizer.convert_ids_to_tokens(allowed.nonzero()[:, 0].tolist())
            for i, tok in zip(allowed.nonzero()[:, 0].tolist(), tokens, strict=True):
                if tok.lstrip("Ġ▁")[:1].isupper():
                    allowed[i] = False
        return allowed

    def hotflip(self, ctx: SearchContext, prompt: Prompt, grad: torch.Tensor) -> list[tuple[int, ...]]:
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

    def step(self, ctx: SearchContext, state: GradientState) -> GradientState:
        base = Prompt.from_json(state["prompt"])
        prompt = base.with_triggers(state["triggers"])
        gradients = ctx.ask(TriggerGradients)
        grad, loss = gradients.trigger_gradient(prompt, ctx.sample(ctx.train, self.batch_size, salt="grad0"))
        for i in range(1, self.accumulation_steps):
            g, loss = gradients.trigger_gradient(prompt, ctx.sample(ctx.train, self.batch_size, salt=f"grad{i}"))
            grad = grad + g
        swaps = self.hotflip(ctx, prompt, grad)
        rescore = self.rescore_set(ctx)  # the same every step: the current triggers' score is a cache hit
        trigger_sets = [tuple(state["triggers"]), *swaps]
        prompts = ctx.calibrate([base.with_triggers(t) for t in trigger_sets], inputs=rescore)
        objective = ctx.objective_scores(prompts, rescore)
        nll = self.trigger_nll(ctx, state, prompts)
        scores = [o - self.fluency * n for o, n in zip(objective, nll, strict=True)]
        state["pool"] = self.pooled(state, prompts, scores, objective=objective, nll=nll)
        best = max(range(1, len(prompts)), key=lambda i: scores[i], default=0)
        accepted = best > 0 and scores[best] > scores[0]
        if accepted:
            state["triggers"] = list(trigger_sets[best])
            state["accepted"] += 1
            state["best_dev"] = max(state["best_dev"], ctx.evaluator.score(prompts[best], ctx.dev).score)
        kept = best if accepted else 0
        ctx.report({"loss": round(loss, 4), "candidates": len(swaps), "train_objective": objective[kept],
                    "fluency_nll": nll[kept], "accepted": accepted,
                    "triggers": ctx.lm.decode(state["triggers"])})
        return state

    def trigger_nll(self, ctx: SearchContext, state: GradientState, prompts: list[Prompt]) -> list[float]:
        """Per prompt, its triggers' mean negative log-likelihood given the template text before them
        (inputs left empty: fluency is a property of the prompt, not of an example); 0 when off.

        Remembered per trigger set in the state, so a resumed run charges what the first run did.
        """
        if not self.fluency:
            return [0.0] * len(prompts)
        empty = Example({f: "" for f in ctx.task.fields}, 0)
        todo = [p for p in prompts if _key(p.trigger_ids) not in state["nll"]]
        if todo:
            values = ctx.ask(TriggerGradients).trigger_nll([ctx.lm.encode(p, empty) for p in todo]).tolist()
            state["nll"].update({_key(p.trigger_ids): v for p, v in zip(todo, values, strict=True)})
        return [state["nll"][_key(p.trigger_ids)] for p in prompts]

    def candidates(self, ctx: SearchContext, state: GradientState) -> list[AnyPrompt]:
        """The pool's best trigger sets by train score (an ensemble of the top ``ensemble`` first)."""
        ranked = super().candidates(ctx, state)
        if self.ensemble > 1 and len(ranked) > 1:
            members = tuple(p for p in ranked[: self.ensemble] if isinstance(p, Prompt))
            return [Ensemble(members, (1.0,) * len(members)), *ranked]
        return ranked


def _key(triggers: Sequence[int]) -> str:
    return ",".join(map(str, triggers))
