"""What a trained soft prompt is: its dev loss (the tie-break), and the nearest vocabulary tokens."""

from __future__ import annotations

from typing import Any

import torch

from autoprompt import EvalResult, Prompt, Segment, SoftPrompt, Template
from autoprompt.search import SearchContext


def dev_loss(result: EvalResult) -> float:
    """Mean cross-entropy of the gold class over the verbalizer's classes (the tie-break on dev); on
    a generation task, the references' mean negative per-token log-likelihood."""
    if result.sentence_scores is not None:
        return -result.logprobs[:, 0].float().mean().item()
    logprobs = result.logprobs.float().log_softmax(-1)                      # [N, C]
    return -logprobs[torch.arange(result.n), result.labels].mean().item()


def improves(score: float, loss: float, best_score: float, best_loss: float) -> bool:
    """A higher dev metric, or the same metric at a lower dev cross-entropy."""
    return score > best_score or (score == best_score and loss < best_loss)


def nearest_token_readout(ctx: SearchContext, prompt: Prompt, k: int = 3) -> dict[str, Any]:
    """Each soft vector's nearest vocabulary tokens, and the discrete prompt they spell, scored on dev.

    The discrete prompt puts the nearest token in each ``[S]`` (as a ``[T]`` trigger); its dev
    score says how much of what the soft prompt does survives discretisation.
    """
    soft = prompt.soft
    assert isinstance(soft, SoftPrompt) and soft.slots is not None
    lm = ctx.lm
    cos, ids = soft.nearest(lm.embedding_matrix(), k)                                              # [S, k]
    def decode(i: int) -> str:
        return str(lm.tokenizer.convert_tokens_to_string([lm.tokenizer.convert_ids_to_tokens(i)]))

    segments = [Segment("trigger", space=s.space) if s.kind == "soft" else s for s in prompt.template.segments]
    discrete = Prompt(Template.from_segments(segments), prompt.verbalizer, tuple(ids[:, 0].tolist()))
    dev = ctx.evaluator.score(discrete, ctx.dev).score  # after the search: the core no longer budgets it
    pieces = discrete.template.render({f: "{" + f + "}" for f in ctx.task.fields}, trigger="\0").split("\0")
    text = pieces[0] + "".join(f"[{decode(i)}]{p}" for i, p in zip(discrete.trigger_ids, pieces[1:], strict=True))
    return {"nearest": [[decode(i) for i in row] for row in ids.tolist()],
            "cosine": [round(c, 3) for c in cos[:, 0].tolist()],
            "discrete_prompt": text, "discrete_trigger_ids": list(discrete.trigger_ids), "discrete_dev": dev}


def detached(soft: SoftPrompt) -> SoftPrompt:
    """A copy of ``soft``'s tensors on the CPU, cut from the training graph."""
    return SoftPrompt.from_tensors({k: t.detach().cpu().clone() for k, t in soft.tensors().items()},
                                   {"tasks": list(soft.task_names)} if soft.tasks else None)
