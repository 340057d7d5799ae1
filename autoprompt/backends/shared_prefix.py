"""Scoring that runs a shared prefix once and continues every row from its key/value cache (causal LMs).

`SharedPrefix` is `CausalLM`'s mixin for the three jobs where many rows start alike: K trigger
candidates sharing each example's input (`label_logprobs_shared`: gradient re-scoring), queries
after one demonstration block (`label_logprobs_prefixed`), and inputs after a label's prefix
(`continuation_logliks`: the noisy channel). The prefix runs once; the rows continue from its cache,
copied where each row needs its own, shared by reference where they only read it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from autoprompt.backends.kv_cache import cache_layers, make_cache, select_rows
from autoprompt.backends.protocol import Scores, WordTable


class SharedPrefix:
    """Shared-prefix scoring (mixed into `CausalLM`, which provides what is declared here)."""

    if TYPE_CHECKING:  # declared only: a stub here would shadow `FrozenLM`'s own methods
        device: torch.device
        pad_id: int
        working_memory: int

        def pad(self, rows: Sequence[Sequence[int]], left: bool = False,
                fill: int | None = None) -> tuple[Tensor, Tensor]: ...

        def rows_within(self, tokens_per_row: int, backward: bool = False) -> int: ...

        def _forward(self, ids: Tensor | None, attn: Tensor, positions: Tensor, cache: Any = None,
                     keep: int | Tensor | None = None, inputs_embeds: Tensor | None = None) -> tuple[Tensor, Any]: ...

        def _last_logprobs(self, ids: Tensor, attn: Tensor, positions: Tensor, cache: Any = None,
                           inputs_embeds: Tensor | None = None, left: bool | None = None) -> tuple[Tensor, Any]: ...

        def _word_scores(self, logp_first: Tensor, cache: Any, attn: Tensor, words: WordTable,
                         gold: Sequence[int] | None) -> Scores: ...

    @torch.inference_mode()
    def label_logprobs_shared(self, prefixes: Sequence[Sequence[int]], suffixes: Sequence[Sequence[Sequence[int]]],
                              words: WordTable, gold: Sequence[int] | None = None) -> Scores:
        """Score K prompts that share each example's prefix: ``[B * K, C]`` in (example, prompt) order.

        The prefix (typically the input text) runs once per example; its key/value cache is
        copied to the K prompts and only their suffixes (triggers, template text) run. This is
        what makes re-scoring many trigger candidates cheap.

        Args:
            prefixes: per example, the token ids all K prompts share.
            suffixes: per example, K non-empty suffixes (the rest of each prompt).
            words: the word table (shared by the K prompts).
            gold: per example, the gold class (repeated for its K rows), see `_word_scores`.
        """
        k = len(suffixes[0])
        # every (example, prompt) row holds a copy of its prefix's cache: chunks of examples that fit
        longest = max(len(p) for p in prefixes) + max(len(s) for per_example in suffixes for s in per_example)
        step = max(1, self.rows_within(longest) // k)
        if len(prefixes) > step:
            parts = [self.label_logprobs_shared(prefixes[i : i + step], suffixes[i : i + step], words,
                                                gold[i : i + step] if gold is not None else None)
                     for i in range(0, len(prefixes), step)]
            return Scores.concat(parts)
        ids, attn = self.pad(prefixes, left=True)
        _, cache = self._forward(ids, attn, (attn.cumsum(-1) - 1).clamp(min=0), keep=1)
        rows = torch.arange(len(prefixes), device=self.device).repeat_interleave(k)
        cache = select_rows(cache, rows)
        suf_ids, suf_mask = self.pad([s for per_example in suffixes for s in per_example])
        full_mask = torch.cat([attn.index_select(0, rows), suf_mask], dim=1)
        positions = attn.sum(-1).index_select(0, rows)[:, None] + torch.arange(suf_ids.shape[1], device=self.device)
        logp_first, cache = self._last_logprobs(suf_ids, full_mask, positions, cache=cache)
        rep_gold = [g for g in gold for _ in range(k)] if gold is not None else None
        return self._word_scores(logp_first, cache, full_mask, words, rep_gold)

    @torch.inference_mode()
    def label_logprobs_prefixed(self, prefix: Sequence[int], suffixes: Sequence[Sequence[int]], words: WordTable,
                                gold: Sequence[int] | None = None, rows: int = 32) -> Scores:
        """Score inputs that share one ``prefix`` (a demonstration block): ``[N, C]`` in suffix order.

        The prefix runs once; each chunk of ``rows`` suffixes (the queries) runs on top of its
        key/value cache, shared by reference, not copied.
        """
        rows = min(rows, self.rows_within(len(prefix) + max(len(s) for s in suffixes)))
        head = torch.tensor([list(prefix)], device=self.device)
        _, cache = self._forward(head, torch.ones_like(head), torch.arange(len(prefix), device=self.device)[None],
                                 keep=1)
        layers = cache_layers(cache)
        parts = []
        for start in range(0, len(suffixes), rows):
            chunk = suffixes[start : start + rows]
            shared = make_cache([(k.expand(len(chunk), -1, -1, -1), v.expand(len(chunk), -1, -1, -1))
                                 for k, v in layers])
            ids, mask = self.pad(chunk)                                                  # right-padded
            full_mask = torch.cat([mask.new_ones(len(chunk), len(prefix)), mask], dim=1)
            positions = len(prefix) + torch.arange(ids.shape[1], device=self.device)[None].expand(len(chunk), -1)
            logp_first, after = self._last_logprobs(ids, full_mask, positions, cache=shared)
            parts.append(self._word_scores(logp_first, after, full_mask, words,
                                           gold[start : start + len(chunk)] if gold is not None else None))
        return Scores.concat(parts)

    @torch.inference_mode()
    def continuation_logliks(self, prefix: Sequence[int], suffixes: Sequence[Sequence[int]]) -> Tensor:
        """``[N]`` the log-likelihood of each suffix's tokens after ``prefix`` (teacher-forced).

        The noisy-channel rule's score: ``prefix`` is a label's prefix, the suffixes are the inputs.
        The prefix runs once; chunks of suffixes continue from its key/value cache (shared by
        reference), right-padded, with explicit positions. A chunk holds as many rows as their
        ``[k, m, V]`` log-probs fit in the working memory.
        """
        head = torch.tensor([list(prefix)], device=self.device)
        first, cache = self._forward(head, torch.ones_like(head), torch.arange(len(prefix), device=self.device)[None],
                                     keep=1)
        first_logp = first[0, -1].log_softmax(-1)                                          # [V]
        layers = cache_layers(cache)
        vocab = first_logp.shape[0]
        out = torch.zeros(len(suffixes))
        order = sorted(range(len(suffixes)), key=lambda i: len(suffixes[i]))  # chunks of similar length pad less
        start = 0
        while start < len(order):
            width = len(suffixes[order[min(start + 31, len(order) - 1)]])
            rows = max(1, min(32, self.working_memory // max(1, 2 * 4 * width * vocab),
                              self.rows_within(len(prefix) + width)))
            chunk = order[start : start + rows]
            start += len(chunk)
            texts = [list(suffixes[i]) for i in chunk]
            shared = make_cache([(k.expand(len(chunk), -1, -1, -1), v.expand(len(chunk), -1, -1, -1))
                                 for k, v in layers])
            ids, mask = self.pad([t[:-1] or [self.pad_id] for t in texts])                 # [k, m]: inputs
            tgt, _ = self.pad([t[1:] or [self.pad_id] for t in texts])                     # [k, m]: what they predict
            full_mask = torch.cat([mask.new_ones(len(chunk), len(prefix)), mask], dim=1)
            positions = len(prefix) + torch.arange(ids.shape[1], device=self.device)[None].expand(len(chunk), -1)
            logits, _ = self._forward(ids, full_mask, positions, cache=shared)              # [k, m, V]
            logp = logits.log_softmax(-1).gather(-1, tgt[:, :, None])[..., 0]              # [k, m]
            real = torch.tensor([[j < len(t) - 1 for j in range(ids.shape[1])] for t in texts], device=self.device)
            lead = first_logp[torch.tensor([t[0] for t in texts], device=self.device)]      # [k]: the first token
            out[torch.tensor(chunk)] = (lead + (logp * real).sum(-1)).float().cpu()
        return out
