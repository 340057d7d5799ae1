"""A training batch cut into passes: less memory for the same update.

The activations a backward pass needs are kept for every token of the forward, so one forward over a
whole batch holds them for all its tokens at once. Cut into passes whose losses are weighted by their
share of the batch's mean, each pass's backward adds its part of the batch's gradient: the optimiser
step is the one the whole batch gives (up to float rounding), with a pass's activations at a time.
"""

from __future__ import annotations

from autoprompt import Example, Prompt
from autoprompt.search import SearchContext, SoftTraining, StrategyModel


def passes(lm: StrategyModel, prompt: Prompt, batch: list[Example], tokens: int) -> list[list[Example]]:
    """``batch`` in order, cut into passes of at most ``tokens`` input tokens (a longer example alone)."""
    out: list[list[Example]] = [[]]
    used = 0
    for ex in batch:
        n = len(lm.encode(prompt, ex).ids)
        if out[-1] and used + n > tokens:
            out.append([])
            used = 0
        out[-1].append(ex)
        used += n
    return out


def loss_weights(ctx: SearchContext, prompt: Prompt, batch: list[Example]) -> dict[int, int]:
    """What each example (by ``id``) counts for in the batch's mean loss: 1, or on a generation task its
    references' tokens (that loss is per token)."""
    if not ctx.task.is_generation:
        return {id(ex): 1 for ex in batch}
    training = ctx.ask(SoftTraining)
    return {id(ex): sum(len(t) for t in training.references(prompt, ex)) for ex in batch}
