"""Text generation through a frozen causal LM with the prompt's triggers, soft tokens or prefix.

Two operations, both on the same inputs the classification scorer builds (`Encoded` rows, the
prompt's injected vectors, a per-layer key/value prefix):

* `target_logprobs` — teacher-forced log-likelihood of each row's targets after its prompt (the
  training and selection signal of generation tasks);
* `generate_ids` — greedy or beam-search decoding, stopping at a newline or end-of-sequence token.

Positions are explicit, so a prefix of ``P`` key/values makes the prompt start at position ``P``,
exactly as if the prefix's text stood in front of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from autoprompt.backends.kv_cache import select_rows
from autoprompt.backends.protocol import Encoded
from autoprompt.errors import AutopromptError
from autoprompt.prompts.soft import SoftPrompt

if TYPE_CHECKING:
    from autoprompt.backends.causal import CausalLM


@dataclass(frozen=True)
class Decoding:
    """How text is generated.

    Args:
        num_beams: 1 = greedy; more = beam search with `length_penalty`.
        max_new_tokens: the most tokens generated per input.
        length_penalty: beam scores are ``log p / length ** length_penalty`` (1.0: per token).
    """

    num_beams: int = 1
    max_new_tokens: int = 64
    length_penalty: float = 1.0

    def __post_init__(self) -> None:
        if self.num_beams < 1 or self.max_new_tokens < 1:
            raise AutopromptError(f"decoding needs num_beams >= 1 and max_new_tokens >= 1, got {self.num_beams} "
                                  f"and {self.max_new_tokens}")

    def to_json(self) -> dict[str, Any]:
        return {"num_beams": self.num_beams, "max_new_tokens": self.max_new_tokens,
                "length_penalty": self.length_penalty}


def stop_tokens(lm: CausalLM) -> Tensor:
    """``[V]`` bool: end-of-sequence tokens and every token whose text holds a newline (cached)."""
    cached: Tensor | None = getattr(lm, "_stop_tokens", None)
    if cached is None:
        vocab = lm.output_embedding_matrix().shape[0]
        texts = lm.tokenizer.batch_decode([[i] for i in range(vocab)])
        cached = torch.tensor(["\n" in t for t in texts], dtype=torch.bool)
        for eos in end_of_sequence(lm):
            if 0 <= eos < vocab:
                cached[eos] = True
        object.__setattr__(lm, "_stop_tokens", cached)
    return cached


def end_of_sequence(lm: CausalLM) -> list[int]:
    """The model's end-of-sequence ids (its generation config may name several, as Gemma's does)."""
    ids: list[int] = []
    for source in (getattr(getattr(lm.model, "generation_config", None), "eos_token_id", None),
                   lm.tokenizer.eos_token_id):
        ids.extend(source if isinstance(source, list) else [source] if source is not None else [])
    return list(dict.fromkeys(int(i) for i in ids))


def target_ids(lm: CausalLM, context: str, space: str, target: str) -> tuple[int, ...]:
    """A reference's tokens as the model sees them after the prompt text ``context``, then EOS
    (the model learns to stop; decoding stops there)."""
    toks = lm.continuation(context, space + target.strip())
    eos = end_of_sequence(lm)
    return (*toks, eos[0]) if eos else toks


def target_logprobs(lm: CausalLM, batch: Sequence[Encoded], targets: Sequence[Sequence[Sequence[int]]],
                    soft: SoftPrompt | None = None) -> list[Tensor]:
    """Per row, ``[R]`` the summed log-probs of each of its ``R`` targets after its prompt, teacher-forced.

    Each prompt runs once; its targets (the references of one input) continue from its key/value
    cache (`CausalLM.continuation_logprobs`, as multi-token label words do). Keeps the graph to
    ``soft``'s tensors where gradients are enabled (training).
    """
    if any(not t for ts in targets for t in ts):
        raise AutopromptError("a generation target has no tokens; drop empty references")
    logp_first, cache, attn = lm.prompt_state(batch, None, soft)                 # [B, V]
    pairs = [(b, tuple(t)) for b, ts in enumerate(targets) for t in ts]
    rows = torch.tensor([b for b, _ in pairs], device=lm.device)
    first = logp_first[rows, torch.tensor([t[0] for _, t in pairs], device=lm.device)]   # [R_total]
    longer = [i for i, (_, t) in enumerate(pairs) if len(t) > 1]
    total = first
    if longer:
        rest = lm.continuation_logprobs(cache, attn, [pairs[i] for i in longer])
        total = first + torch.zeros_like(first).index_put((torch.tensor(longer, device=lm.device),), rest)
    return list(total.float().split([len(ts) for ts in targets]))


@torch.inference_mode()
def generate_ids(lm: CausalLM, batch: Sequence[Encoded], decoding: Decoding,
                 soft: SoftPrompt | None = None) -> list[list[int]]:
    """Generated token ids per row, without the stop token (see `Decoding`)."""
    stops = stop_tokens(lm).to(lm.device)
    logp, cache, attn = lm.prompt_state(batch, None, soft)                       # [B, V]
    if decoding.num_beams == 1:
        return _greedy(lm, logp, cache, attn, stops, decoding.max_new_tokens)
    return _beam(lm, logp, cache, attn, stops, decoding)


def _step(lm: CausalLM, tokens: Tensor, cache: Any, attn: Tensor) -> tuple[Tensor, Any, Tensor]:
    """Feed one token per row at its next position: log-probs ``[R, V]``, the cache, the grown mask."""
    positions = attn.sum(-1, keepdim=True)                                       # [R, 1]
    attn = torch.cat([attn, attn.new_ones(len(tokens), 1)], dim=1)
    logits, cache = lm._forward(tokens[:, None], attn, positions, cache=cache, keep=1)
    return logits[:, -1].log_softmax(-1), cache, attn


def _greedy(lm: CausalLM, logp: Tensor, cache: Any, attn: Tensor, stops: Tensor, max_new: int) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in range(len(logp))]
    done = torch.zeros(len(logp), dtype=torch.bool, device=lm.device)
    for k in range(max_new):
        token = logp.argmax(-1)                                                 # [B]
        for b in (~done).nonzero()[:, 0].tolist():
            out[b].append(int(token[b]))
        done |= stops[token]
        if bool(done.all()) or k == max_new - 1:
            break
        logp, cache, attn = _step(lm, token, cache, attn)
    return [row[:-1] if row and bool(stops[row[-1]]) else row for row in out]


def _beam(lm: CausalLM, logp: Tensor, cache: Any, attn: Tensor, stops: Tensor, decoding: Decoding) -> list[list[int]]:
    """Beam search: each step the top ``2K`` continuations of an input's ``K`` live beams; one that
    stops joins its finished hypotheses, scored ``log p / length ** length_penalty`` (length counts
    the stop token), if it ranks among the top ``K``; the best ``K`` others live on. An input is done
    when it has ``K`` finished hypotheses and its best live beam scores no better than the worst."""
    n, k, lp = len(logp), decoding.num_beams, decoding.length_penalty
    vocab = logp.shape[1]
    rows = torch.arange(n, device=lm.device).repeat_interleave(k)
    cache, attn, logp = select_rows(cache, rows), attn.index_select(0, rows), logp[rows]
    scores = torch.full((n, k), -torch.inf, device=lm.device)
    scores[:, 0] = 0.0  # the K copies of the prompt: only the first one expands at the first step
    live: list[list[list[int]]] = [[[] for _ in range(k)] for _ in range(n)]
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(n)]
    done = [False] * n
    for length in range(1, decoding.max_new_tokens + 1):
        top, index = (scores.reshape(-1, 1) + logp).reshape(n, k * vocab).topk(2 * k, dim=-1)   # [B, 2K]
        new_scores = torch.full((n, k), -torch.inf, device=lm.device)
        new_live: list[list[list[int]]] = []
        parents, tokens = [], []
        for b in range(n):
            kept: list[list[int]] = []
            if not done[b]:
                for rank, (score, flat) in enumerate(zip(top[b].tolist(), index[b].tolist(), strict=True)):
                    beam, token = divmod(flat, vocab)
                    if score == -torch.inf:
                        break
                    if bool(stops[token]):
                        if rank < k:
                            _add(finished[b], k, score / length**lp, live[b][beam])
                        continue
                    new_scores[b, len(kept)] = score
                    parents.append(b * k + beam)
                    tokens.append(token)
                    kept.append([*live[b][beam], token])
                    if len(kept) == k:
                        break
                best_live = float(new_scores[b, 0]) / length**lp
                done[b] = not kept or (len(finished[b]) == k and finished[b][-1][0] >= best_live)
            for _ in range(k - len(kept)):  # rows of done inputs (and unfilled beams) are carried, unused
                parents.append(b * k)
                tokens.append(0)
                kept.append([])
            new_live.append(kept)
        scores, live = new_scores, new_live
        if all(done) or length == decoding.max_new_tokens:
            break
        rows = torch.tensor(parents, device=lm.device)
        logp, cache, attn = _step(lm, torch.tensor(tokens, device=lm.device), select_rows(cache, rows),
                                  attn.index_select(0, rows))
    out = []
    for b in range(n):
        pool = list(finished[b])
        if not done[b]:  # the length limit ended it: its live beams compete too
            pool += [(float(scores[b, j]) / length**lp, live[b][j]) for j in range(k) if live[b][j]]
        out.append(max(pool, key=lambda item: item[0])[1] if pool else [])
    return out


def _add(finished: list[tuple[float, list[int]]], k: int, score: float, hyp: list[int]) -> None:
    """Keep the ``k`` best finished hypotheses, best first."""
    finished.append((score, hyp))
    finished.sort(key=lambda item: -item[0])
    del finished[k:]
