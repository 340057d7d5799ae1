"""Causal LMs (GPT-2, Llama, SmolLM2, ...): ``[P]`` last, label words scored as a continuation.

A word's score is the sum of the log-probs of its tokens after the prompt (teacher-forced),
optionally divided by its token count (``length_norm``). The prompt runs once; multi-token words
continue from its key/value cache, and prompts that share an input share its cache
(`label_logprobs_shared`).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from autoprompt.backends.base import FrozenLM
from autoprompt.backends.kv_cache import cache_layers, make_cache, select_rows
from autoprompt.backends.protocol import Encoded, Kind, Scores, WordTable
from autoprompt.backends.shared_prefix import SharedPrefix
from autoprompt.backends.trie import outranking_gold
from autoprompt.backends.weights import logsumexp_classes, upcast
from autoprompt.errors import AutopromptError
from autoprompt.prompts import Template
from autoprompt.prompts.soft import SoftPrompt


class CausalLM(SharedPrefix, FrozenLM):
    """A causal LM backend (GPT-2, Llama, SmolLM2, ...): ``[P]`` last, words scored as a suffix.

    Args:
        padding_side: ``left`` or ``right``; results do not depend on it (positions are passed
            explicitly). Left lets the LM head run on the last column only.
        max_rows: cap on (example, word) rows per continuation pass, to bound memory.
        (others as in `FrozenLM`)
    """

    kind: Kind = "causal"
    shares_prefix = True

    def __init__(self, *args: Any, padding_side: str = "left", max_rows: int = 512, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if padding_side not in ("left", "right"):
            raise AutopromptError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
        self.left = padding_side == "left"
        self.max_rows = max_rows
        params = inspect.signature(self.model.forward).parameters
        self.keep_arg = "logits_to_keep" in params
        self.cache_arg = "cache" if "cache" in params else "past_key_values"  # renamed in transformers 5

    def attention_mask_4d(self, allowed: Tensor) -> Tensor:
        """``[q, kv]`` booleans (True: query attends to key) as the model's 4D mask ``[1, 1, q, kv]``:
        booleans for SDPA, 0 / -inf-like floats for eager attention (which adds the mask)."""
        if getattr(self.model.config, "_attn_implementation", "eager") == "sdpa":
            return allowed[None, None]
        return torch.zeros(allowed.shape, device=allowed.device).masked_fill(
            ~allowed, torch.finfo(torch.float32).min)[None, None]

    def soft_logprobs(self, batch: Sequence[Encoded], words: WordTable, soft: SoftPrompt) -> Tensor:
        """Class log-probs ``[B, C]`` for training ``soft``, the batch packed into one row.

        A random training batch padded to its longest example wastes a third to half of its
        forward and backward on padding (16-shot SST-2, RTE): packed, the examples run back to
        back, each attending to itself (and the prefix) only through a block-diagonal 4D mask, and
        the LM head runs at their last positions only. The numbers are `label_logprobs`'s.
        Multi-token label words take the padded path (their continuation reads a per-row cache), as
        does a classification head.
        """
        if any(len(w) > 1 for ws in words for w in ws) or soft.head is not None:
            return super().soft_logprobs(batch, words, soft)
        with torch.enable_grad():
            return self._packed_scores(batch, words, soft)

    def _packed_scores(self, batch: Sequence[Encoded], words: WordTable, soft: SoftPrompt) -> Tensor:
        device = self.device
        lengths = torch.tensor([len(e.ids) for e in batch], device=device)
        ids = torch.tensor([[t for e in batch for t in e.ids]], device=device)                # [1, T]
        segment = torch.arange(len(batch), device=device).repeat_interleave(lengths)           # [T]
        starts = lengths.cumsum(0) - lengths
        positions = torch.arange(ids.shape[1], device=device) - starts[segment]               # [T]
        allowed = (segment[:, None] == segment[None]) & (positions[:, None] >= positions[None])  # [T, T]
        embeds = None
        if soft.slots is not None:
            slots = torch.tensor([[k for e in batch for k in self._slot_row(e, False, True)]], device=device)
            embeds = self._embed(ids, slots, soft.slots.to(device))                            # [1, T, H]
        cache = None
        if soft.prefix is not None:  # every example attends to the one prefix
            self.check_prefix()
            cache = self._prefix_cache(soft.prefix, 1)
            allowed = torch.cat([allowed.new_ones(len(positions), soft.prefix_length), allowed], dim=1)
            positions = positions + soft.prefix_length
        last = starts + lengths - 1                                                            # [B]
        logits, _ = self._forward(ids if embeds is None else None, self.attention_mask_4d(allowed), positions[None],
                                  cache=cache, keep=last, inputs_embeds=embeds)               # [1, B, V]
        logp = logits[0].log_softmax(-1)
        first = torch.tensor([w[0] for ws in words for w in ws], device=device)
        return logsumexp_classes(logp[:, first], words)

    def check_template(self, template: Template) -> None:
        if not template.predict_is_last:
            raise AutopromptError(
                f"template {template.source!r}: a causal LM scores label words after the prompt, so "
                "[P] must be the last slot; move [P] to the end"
            )

    def _forward(self, ids: Tensor | None, attn: Tensor, positions: Tensor, cache: Any = None,
                 keep: int | Tensor | None = None, inputs_embeds: Tensor | None = None,
                 use_cache: bool = True) -> tuple[Tensor, Any]:
        """One forward with explicit positions; ``keep`` = sequence indices whose logits are needed;
        without ``use_cache`` no key/value cache is built for the rows (a given prefix is still read)."""
        extra: dict[str, Any] = {}
        if keep is not None and self.keep_arg:
            extra["logits_to_keep"] = keep
        if cache is not None:
            extra[self.cache_arg] = cache
        with self._autocast():
            out = self.model(input_ids=ids if inputs_embeds is None else None, inputs_embeds=inputs_embeds,
                             attention_mask=attn, position_ids=positions, use_cache=use_cache, **extra)
        logits = out.logits
        if keep is not None and not self.keep_arg:
            logits = logits[:, keep] if isinstance(keep, Tensor) else logits[:, -keep:]
        new_cache = out.get("cache", out.get("past_key_values"))
        return upcast(logits), new_cache

    def _last_logprobs(self, ids: Tensor, attn: Tensor, positions: Tensor, cache: Any = None,
                       inputs_embeds: Tensor | None = None, left: bool | None = None,
                       use_cache: bool = True) -> tuple[Tensor, Any]:
        """Log-probs after each row's last real token ``[B, V]`` and the updated cache.

        ``left``: the rows of ``ids`` are left-padded (default: so when there is no cache).
        """
        if left is None:
            left = self.left and cache is None
        if left:
            logits, cache = self._forward(ids, attn, positions, cache=cache, keep=1, inputs_embeds=inputs_embeds,
                                          use_cache=use_cache)
            return logits[:, -1].log_softmax(-1), cache
        # right padding (or a suffix after a cache): keep only the distinct last positions
        width = attn.shape[1] if cache is None else ids.shape[1]
        real = attn.sum(-1) if cache is None else attn[:, -width:].sum(-1)
        last = real - 1                                                              # [B]
        keep = torch.unique(last)
        logits, cache = self._forward(ids, attn, positions, cache=cache, keep=keep, inputs_embeds=inputs_embeds,
                                      use_cache=use_cache)
        column = torch.searchsorted(keep, last)
        return logits[torch.arange(len(last), device=self.device), column].log_softmax(-1), cache

    def _slot_forward(self, batch: Sequence[Encoded]) -> tuple[Tensor, Tensor]:
        ids, attn = self.pad([e.ids for e in batch], left=True)
        logits, _ = self._forward(ids, attn, (attn.cumsum(-1) - 1).clamp(min=0), keep=1)
        return logits, torch.full((len(batch),), logits.shape[1] - 1, device=self.device)

    @torch.inference_mode()
    def trigger_nll(self, batch: Sequence[Encoded]) -> Tensor:
        # one forward of each row up to its last trigger; the logits before a trigger predict it
        ends = [max(e.trigger_at, default=-1) + 1 for e in batch]
        ids, attn = self.pad([e.ids[: max(end, 1)] for e, end in zip(batch, ends, strict=True)])
        logits, _ = self._forward(ids, attn, (attn.cumsum(-1) - 1).clamp(min=0))            # [B, L, V]
        logp = logits.log_softmax(-1)
        out = torch.zeros(len(batch))
        for b, enc in enumerate(batch):
            scored = [pos for pos in enc.trigger_at if pos > 0]  # a first token has no context
            if scored:
                pos = torch.tensor(scored, device=self.device)
                out[b] = -logp[b, pos - 1, torch.tensor([enc.ids[q] for q in scored], device=self.device)].mean()
        return out

    def continuation_logprobs(self, cache: Any, attn: Tensor, pairs: Sequence[tuple[int, Sequence[int]]]) -> Tensor:
        """Log-prob of word tokens ``1..n-1`` after a prefix, for each (prefix row, word) pair: ``[P]``.

        The word's first token is scored from the prefix logits; here tokens ``0..n-2`` are fed on
        top of the prefix's key/value cache (rows gathered per pair).
        """
        out = torch.zeros(len(pairs), device=self.device)
        lengths = attn.sum(-1)
        # each pair gets its own copy of its row's cache
        step = min(self.max_rows, self.rows_within(attn.shape[1] + max(len(w) for _, w in pairs)))
        for start in range(0, len(pairs), step):
            chunk = pairs[start : start + step]
            rows = torch.tensor([b for b, _ in chunk], device=self.device)
            inp, inp_mask = self.pad([w[:-1] for _, w in chunk])                 # [k, m]
            tgt, _ = self.pad([w[1:] for _, w in chunk])                          # [k, m]
            full_mask = torch.cat([attn.index_select(0, rows), inp_mask], dim=1)
            pos = lengths.index_select(0, rows)[:, None] + torch.arange(inp.shape[1], device=self.device)
            logits, _ = self._forward(inp, full_mask, pos, cache=select_rows(cache, rows))  # [k, m, V]
            logp = logits.log_softmax(-1).gather(-1, tgt[:, :, None])[..., 0]      # [k, m]
            out[start : start + len(chunk)] = (logp * inp_mask).sum(-1)
        return out

    def check_prefix(self) -> None:
        if self.cache_arg not in inspect.signature(self.model.forward).parameters:
            super().check_prefix()

    def prefix_from_text(self, ids: Sequence[int]) -> Tensor:
        """The keys and values ``[L, 2, K, P, D]`` the model computes for ``ids`` (a prefix's init)."""
        self.check_prefix()
        inp = torch.tensor([list(ids)], device=self.device)
        with torch.inference_mode():
            _, cache = self._forward(inp, torch.ones_like(inp), torch.arange(inp.shape[1], device=self.device)[None],
                                     keep=1)
        return torch.stack([torch.stack([k[0], v[0]]) for k, v in cache_layers(cache)]).float().clone()

    def _prefix_cache(self, prefix: Tensor, rows: int) -> Any:
        """A fresh cache holding ``prefix`` ``[L, 2, K, P, D]`` for each of ``rows`` rows."""
        prefix = prefix.to(self.device, next(self.model.parameters()).dtype)  # bf16 inside `computing_in`
        return make_cache([(layer[0].expand(rows, -1, -1, -1), layer[1].expand(rows, -1, -1, -1))
                            for layer in prefix])

    def _scores(self, batch: Sequence[Encoded], words: WordTable, gold: Sequence[int] | None,
                vectors: Tensor | None = None, soft: SoftPrompt | None = None) -> Scores:
        logp_first, cache, attn = self.prompt_state(batch, vectors, soft)
        return self._word_scores(logp_first, cache, attn, words, gold)

    def head_features(self, batch: Sequence[Encoded], soft: SoftPrompt | None = None) -> Tensor:
        captured, handle = self._lm_head_input()
        try:
            # left-padded: the head reads the last column only; no key/value cache is kept for continuing
            # (for 32 rows of 200 tokens it would be 290 MB of smollm2's memory, never read)
            self.prompt_state(batch, None, soft, left=True, use_cache=False)
        finally:
            handle.remove()
        return captured["h"][:, -1]                                                          # [B, H]

    def prompt_state(self, batch: Sequence[Encoded], vectors: Tensor | None = None,
                     soft: SoftPrompt | None = None, left: bool | None = None,
                     use_cache: bool = True) -> tuple[Tensor, Any, Tensor]:
        """One forward of the prompts: next-token log-probs ``[B, V]``, the key/value cache and its
        attention mask ``[B, P + L]`` (a prefix's positions first), for continuing each row.

        ``vectors``: trigger embeddings ``[T, H]`` injected at ``[T]``; ``soft``: the continuous part;
        ``left``: pad on the left (default: the backend's ``padding_side``). Positions are explicit,
        so a row's next position is the number of ones in its mask.
        """
        left = self.left if left is None else left
        ids, attn = self.pad([e.ids for e in batch], left=left)
        positions = (attn.cumsum(-1) - 1).clamp(min=0)
        embeds = self._injected(batch, ids, vectors, soft, left=left)
        cache = None
        if soft is not None and soft.prefix is not None:  # P-tuning v2: the prefix is every layer's past
            self.check_prefix()
            cache = self._prefix_cache(soft.prefix, len(batch))
            attn = torch.cat([attn.new_ones(len(batch), soft.prefix_length), attn], dim=1)   # [B, P + L]
            positions = positions + soft.prefix_length
        logp_first, cache = self._last_logprobs(ids, attn, positions, cache=cache, inputs_embeds=embeds,
                                                left=left, use_cache=use_cache)            # [B, V]
        return logp_first, cache, attn

    def _word_scores(self, logp_first: Tensor, cache: Any, attn: Tensor, words: WordTable,
                     gold: Sequence[int] | None) -> Scores:
        """Class scores from the next-token log-probs and, for multi-token words, the cache.

        With ``gold`` (one word per class, no length norm), words are ranked against the gold
        class over a trie (`trie.outranking_gold`): only words that can outrank it are scored in full.
        The gold's rank, P@k and MRR stay exact; LAMA's hundreds of candidates need this on a CPU.
        """
        flat = [w for class_words in words for w in class_words]
        multi = [j for j, w in enumerate(flat) if len(w) > 1]
        first = torch.tensor([w[0] for w in flat], device=self.device)
        word_scores = logp_first[:, first]                                          # [B, W]
        rows = range(logp_first.shape[0])
        if multi and gold is not None and not self.length_norm and len(flat) == len(words):
            word_scores = outranking_gold(self, word_scores, cache, attn, flat, gold)
        elif multi:
            word_scores = word_scores + self._continue(word_scores, cache, attn, flat,
                                                       [(b, j) for b in rows for j in multi])
        if self.length_norm:
            word_scores = word_scores / torch.tensor([len(w) for w in flat], device=self.device)
        return Scores(logsumexp_classes(word_scores, words), logp_first.argmax(-1))

    def _continue(self, like: Tensor, cache: Any, attn: Tensor, flat: list[tuple[int, ...]],
                  pairs: list[tuple[int, int]]) -> Tensor:
        """A ``[B, W]`` tensor of continuation log-probs at ``pairs`` (zeros elsewhere)."""
        extra = torch.zeros_like(like)
        if pairs:
            pairs = sorted(pairs, key=lambda p: len(flat[p[1]]))  # chunks of similar length pad less
            values = self.continuation_logprobs(cache, attn, [(b, flat[j]) for b, j in pairs])
            rows, cols = zip(*pairs)
            extra = extra.index_put((torch.tensor(rows, device=self.device), torch.tensor(cols, device=self.device)),
                                    values)
        return extra

    @torch.inference_mode()
    def reply_samples(self, request: str, n: int, temperature: float, max_new_tokens: int, seed: int) -> list[str]:
        """``n`` replies to ``request`` sampled at ``temperature`` from ``seed`` (through the chat
        template where the tokenizer has one), decoded and stripped."""
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template([{"role": "user", "content": request}], tokenize=False,
                                           add_generation_prompt=True)
        else:
            text = f"{request}\n\nAnswer:"
        ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]], device=self.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True,  # type: ignore[operator]
                                      temperature=temperature, max_new_tokens=max_new_tokens,
                                      num_return_sequences=n, pad_token_id=self.pad_id)
        return [t.strip() for t in tok.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)]
