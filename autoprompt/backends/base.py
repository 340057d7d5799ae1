"""Frozen language-model backends behind one protocol: masked LMs and causal LMs.

A backend turns (prompt, example) into token ids (`encode`) and scores label words at the
prediction slot (`label_logprobs`). The weights are frozen on construction (``eval()``,
``requires_grad_(False)``) and never written.

Scoring rules:

* **masked LM** — ``[P]`` becomes ``n`` mask tokens, anywhere in the template; a label word of
  ``n`` tokens scores the sum of the log-probs of its tokens at the ``n`` masks, all predicted in
  one pass (PET's parallel decoding). Words of different lengths get one pass per length.
* **causal LM** — ``[P]`` must end the template; a word's score is the sum of the log-probs of its
  tokens after the prefix (teacher-forced), optionally divided by its token count
  (``length_norm``). The prefix runs once; multi-token words continue from its key/value cache.

A class with several words scores the log of their total probability (log-sum-exp).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from autoprompt.backends.channel_encoding import ChannelEncoder
from autoprompt.backends.facts import ModelFacts
from autoprompt.backends.hidden import HiddenStates
from autoprompt.backends.protocol import Encoded, Kind, Scores, WordTable
from autoprompt.backends.weights import (
    bf16_body,
    execution_device,
    freeze,
    model_context,
    resolve_device,
    upcast,
    weights_checksum,
)
from autoprompt.errors import AutopromptError
from autoprompt.prompts.soft import SoftPrompt

Widen = Callable[[list[int], int, int], list[int]]  # (row, predict_at, fill) -> the row with [P] widened


class FrozenLM(ModelFacts, HiddenStates, ChannelEncoder):
    """What both backends share: freezing, padding, vector injection and the scoring entry points.

    Args:
        model: a ``transformers`` model with an LM head (frozen here).
        tokenizer: its tokenizer.
        name: the name recorded in results.
        device: ``cuda``/``cpu``/None (auto: CUDA when present).
        max_length: inputs longer than this are truncated, longest field first.
            Demonstrations are not: they fill up to the model's own context (`context_length`).
        length_norm: divide a word's log-prob by its token count (causal only).
        working_memory: bytes of key/value caches or saved activations one forward may hold beyond
            the weights; larger jobs run in chunks with the same result. Default: 128 MiB on a CPU
            (the 135M model's search stays under 1.5 GB resident), 4 GiB on a GPU.
    """

    kind: Kind
    shares_prefix: bool = False  # `label_logprobs_shared` is available (see `LanguageModel`)
    licence: str | None = None   # the weights' licence where known (set by `load_model`), recorded in results

    def __init__(self, model: torch.nn.Module, tokenizer: Any, name: str = "model",
                 device: str | torch.device | None = None, max_length: int = 512,
                 length_norm: bool = False, working_memory: int | None = None) -> None:
        # a model dispatched by a device map (accelerate) stays where the map put it, offloaded parts included
        self.device_map: dict[str, Any] | None = dict(getattr(model, "hf_device_map", None) or {}) or None
        if self.device_map is not None:
            self.device = execution_device(self.device_map)
            self.model = freeze(model)
        else:
            self.device = resolve_device(device)
            self.model = freeze(model).to(self.device)
        self.tokenizer = tokenizer
        self.name = name
        self.max_length = max_length
        self.context_length = model_context(model, tokenizer) or max_length
        self.length_norm = length_norm
        self.working_memory = working_memory or (4 * 2**30 if self.device.type == "cuda" else 128 * 2**20)
        self.pad_id = self._pad_id()
        self.prefix_special, self.suffix_special = self._special_frame()
        # the precision the model computes in: "fp32", or "bf16" inside `computing_in` (a search's steps)
        self.compute_dtype = "fp32"
        self._bf16_model: torch.nn.Module | None = None
        self._word_start: Tensor | None = None
        self._stable_words: Tensor | None = None

    def pad(self, rows: Sequence[Sequence[int]], left: bool = False, fill: int | None = None) -> tuple[Tensor, Tensor]:
        """Pad token rows into ``(ids [B, L], attention_mask [B, L])`` on the model's device."""
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id if fill is None else fill, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            sl = slice(width - len(r), width) if left else slice(0, len(r))
            ids[i, sl] = torch.tensor(r, dtype=torch.long)
            mask[i, sl] = 1
        if self.device.type == "cuda":  # from pinned host memory the copy does not block the host
            return ids.pin_memory().to(self.device, non_blocking=True), mask.pin_memory().to(self.device,
                                                                                              non_blocking=True)
        return ids.to(self.device), mask.to(self.device)

    @contextlib.contextmanager
    def computing_in(self, dtype: str) -> Iterator[None]:
        """Run the model in ``dtype`` (``"fp32"`` or ``"bf16"``) inside the block; outside it, fp32.

        On a GPU, bf16 is autocast (fp32 weights, bf16 matmuls). On a CPU a bfloat16 copy of the
        frozen weights, made once and kept, stands in for the model: CPU autocast casts frozen weights
        again at every matmul (its cast cache keeps only trainable leaves), which costs what bf16 saves
        (measured: a 1120×576 @ 576×1536 matmul, 2 threads, 33 ms autocast vs 30 ms fp32 vs 11 ms on
        bf16 weights). The fp32 weights are never cast, so what is scored outside the block is unchanged.
        """
        if dtype not in ("fp32", "bf16"):
            raise AutopromptError(f"unknown compute dtype {dtype!r}; use fp32 or bf16")
        if dtype == "bf16" and self.device.type != "cuda" and self.device_map is not None:
            raise AutopromptError(f"{self.name} is dispatched by a device map: bf16 on a CPU needs a bf16 copy of "
                                  "every weight, offloaded ones included; set `dtype` to fp32")
        before, weights = self.compute_dtype, self.model
        if dtype == "bf16" and self.device.type != "cuda":
            if self._bf16_model is None:
                self._bf16_model = bf16_body(self.model)
            self.model = self._bf16_model
        self.compute_dtype = dtype
        try:
            yield
        finally:
            self.compute_dtype, self.model = before, weights

    def _autocast(self) -> torch.autocast:
        return torch.autocast("cuda", dtype=torch.bfloat16,
                              enabled=self.device.type == "cuda" and self.compute_dtype == "bf16")

    def _embed(self, ids: Tensor, slots: Tensor, vectors: Tensor) -> Tensor:
        """Input embeddings ``[B, L, H]`` with ``vectors[k]`` wherever ``slots == k`` (else -1)."""
        embeds: Tensor = self.model.get_input_embeddings()(ids)  # type: ignore[operator]
        picked = vectors.to(embeds.dtype)[slots.clamp(min=0)]                    # [B, L, H]
        return torch.where((slots >= 0)[..., None], picked, embeds)

    @staticmethod
    def _slot_row(enc: Encoded, triggers: bool = True, soft: bool = False) -> list[int]:
        """Per position, the row of the injected-vector table it takes (-1: its own token).

        The table is the trigger vectors (if ``triggers``) followed by the soft slot vectors.
        """
        row, k = [-1] * len(enc.ids), 0
        for pos in (enc.trigger_at if triggers else ()) + (enc.soft_at if soft else ()):
            row[pos] = k
            k += 1
        return row

    def _injected(self, batch: Sequence[Encoded], ids: Tensor, vectors: Tensor | None, soft: SoftPrompt | None,
                  left: bool = False, widen: Widen | None = None) -> Tensor | None:
        """Input embeddings ``[B, L, H]`` with trigger and soft-slot vectors in place, or None if neither."""
        use_soft = soft is not None and soft.slots is not None
        if vectors is None and not use_soft:
            return None
        slot_vectors = soft.slots if soft is not None and use_soft else None
        table = torch.cat([t.to(self.device) for t in (vectors, slot_vectors) if t is not None])
        rows = [self._slot_row(e, vectors is not None, use_soft) for e in batch]
        if widen is not None:
            rows = [widen(r, e.predict_at, -1) for r, e in zip(rows, batch, strict=True)]
        slots, _ = self.pad(rows, left=left, fill=-1)
        return self._embed(ids, slots, table)

    def check_prefix(self) -> None:
        """Raise unless this model can take a per-layer key/value prefix."""
        model_type = getattr(getattr(self.model, "config", None), "model_type", type(self.model).__name__)
        raise AutopromptError(
            f"{self.name} ({model_type}, {type(self.model).__name__}) does not take past key/values, so it "
            "cannot use a key/value prefix; use mode=prompt or mode=ptuning"
        )

    @torch.inference_mode()
    def label_logprobs(self, batch: Sequence[Encoded], words: WordTable,
                       gold: Sequence[int] | None = None, soft: SoftPrompt | None = None) -> Scores:
        """Class log-probs ``[B, C]`` of a batch encoded under one prompt.

        Args:
            batch: encoded examples.
            words: token ids of each class's words (`word_table`).
            gold: gold classes; lets a causal LM skip words that cannot outrank the gold
                (see `CausalLM._scores`); metrics that only need the gold's rank stay exact.
            soft: the prompt's continuous part (vectors at ``[S]``, a key/value prefix).
        """
        extra = soft.prefix_length if soft is not None and soft.prefix is not None else 0
        step = self.rows_within(max(len(e) for e in batch) + extra)  # the key/value cache of a batch
        score = self._head_scores if soft is not None and soft.head is not None else self._scores
        if len(batch) <= step:
            return score(batch, words, gold, soft=soft)
        parts = [score(batch[i : i + step], words, gold[i : i + step] if gold is not None else None, soft=soft)
                 for i in range(0, len(batch), step)]
        return Scores.concat(parts)

    def _head_scores(self, batch: Sequence[Encoded], words: WordTable, gold: Sequence[int] | None,
                     soft: SoftPrompt | None = None) -> Scores:
        """Class log-probs from ``soft``'s linear head on the features at ``[P]`` (no label words)."""
        assert soft is not None and soft.head is not None  # dispatched here only then
        logits = soft.head_logits(upcast(self.head_features(batch, soft)))                   # [B, C]
        return Scores(logits.log_softmax(-1), torch.full((len(batch),), -1, device=self.device))

    def head_features(self, batch: Sequence[Encoded], soft: SoftPrompt | None = None) -> Tensor:
        """``[B, H]`` what the LM head reads at ``[P]`` (its input), with the prompt's soft part in place."""
        raise NotImplementedError

    def soft_logprobs(self, batch: Sequence[Encoded], words: WordTable, soft: SoftPrompt) -> Tensor:
        """Class log-probs ``[B, C]`` that keep the graph to ``soft``'s tensors (for training them).

        The same computation as `label_logprobs`, so a trained soft prompt scores as it trained.
        """
        with torch.enable_grad():
            if soft.head is not None:
                return self._head_scores(batch, words, None, soft=soft).logprobs
            return self._scores(batch, words, None, soft=soft).logprobs

    def trigger_gradient(self, batch: Sequence[Encoded], words: WordTable, gold: Sequence[int]) -> tuple[Tensor, float]:
        """Gradient of the mean gold-label loss (−log p(label word)) w.r.t. the trigger embeddings.

        Returns ``(grad [T, H], loss)``. The weights stay frozen: only a copy of the trigger
        embeddings requires a gradient.
        """
        enc = batch[0]
        trigger_ids = torch.tensor([enc.ids[i] for i in enc.trigger_at], device=self.device)
        vectors = self.input_embeddings(trigger_ids).detach().clone().requires_grad_(True)    # [T, H]
        # the backward keeps every layer's activations: chunks that fit the working memory, their
        # gradients summed (the mean over the batch, as one backward would give)
        step = self.rows_within(max(len(e) for e in batch), backward=True)
        total = 0.0
        with torch.enable_grad():
            for start in range(0, len(batch), step):
                chunk, chunk_gold = batch[start : start + step], list(gold[start : start + step])
                scores = self._scores(chunk, words, None, vectors).logprobs                   # [b, C]
                loss = -scores[torch.arange(len(chunk)), torch.tensor(chunk_gold, device=self.device)].sum()
                (loss / len(batch)).backward()
                total += float(loss.detach())
        assert vectors.grad is not None  # the loss depends on every trigger vector
        return vectors.grad.detach(), total / len(batch)

    def reply_samples(self, request: str, n: int, temperature: float, max_new_tokens: int, seed: int) -> list[str]:
        """Sampled replies to ``request`` (a causal LM's capability; see `CausalLM.reply_samples`)."""
        raise AutopromptError(f"{self.name} is a {self.kind} LM: it does not generate text; use a causal LM")

    def fill_mask(self, text: str, which: int, k: int) -> list[str]:
        """Top whole words at a mask of ``text`` (a masked LM's capability; see `MaskedLM.fill_mask`)."""
        raise AutopromptError(f"{self.name} is a {self.kind} LM: it has no mask to fill; use a masked LM")

    def continuation_logliks(self, prefix: Sequence[int], suffixes: Sequence[Sequence[int]]) -> Tensor:
        """Each suffix's log-likelihood after ``prefix`` (a causal LM's capability: the noisy channel)."""
        raise AutopromptError(f"{self.name} is a {self.kind} LM: it does not continue text; use a causal LM")

    def weights_checksum(self) -> str:
        """sha256 of every weight's bytes (`weights_checksum`): a search must leave it unchanged."""
        return weights_checksum(self.model)

    def label_logprobs_shared(self, prefixes: Sequence[Sequence[int]], suffixes: Sequence[Sequence[Sequence[int]]],
                              words: WordTable, gold: Sequence[int] | None = None) -> Scores:
        """Score K prompts that share each example's prefix (backends with ``shares_prefix``)."""
        raise NotImplementedError(f"{type(self).__name__} does not share prefixes; check shares_prefix first")

    def label_logprobs_prefixed(self, prefix: Sequence[int], suffixes: Sequence[Sequence[int]], words: WordTable,
                                gold: Sequence[int] | None = None, rows: int = 32) -> Scores:
        """Score inputs that all start with ``prefix`` (backends with ``shares_prefix``)."""
        raise NotImplementedError(f"{type(self).__name__} does not share prefixes; check shares_prefix first")

    def _scores(self, batch: Sequence[Encoded], words: WordTable, gold: Sequence[int] | None,
                vectors: Tensor | None = None, soft: SoftPrompt | None = None) -> Scores:
        raise NotImplementedError

    def trigger_nll(self, batch: Sequence[Encoded]) -> Tensor:
        """``[B]`` mean negative log-likelihood of each row's trigger tokens given what precedes them
        (a causal LM) or the rest of the row (a masked LM's pseudo-likelihood): a fluency measure."""
        raise NotImplementedError

    def trigger_nll_cost(self, batch: Sequence[Encoded]) -> int:
        """Example-forwards `trigger_nll` runs for ``batch``."""
        return len(batch)
