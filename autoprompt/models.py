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

import functools
import hashlib
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

from autoprompt.errors import AutopromptError
from autoprompt.prompts import Prompt
from autoprompt.soft import SoftPrompt
from autoprompt.tasks.base import Example

Kind = Literal["masked", "causal"]
WordTable = list[list[tuple[int, ...]]]  # per class, per word: token ids


@dataclass(frozen=True)
class Encoded:
    """One example under one prompt, as token ids.

    Attributes:
        ids: token ids; for a masked LM ``[P]`` is one mask token at ``predict_at`` (widened to the
            word length when scoring); for a causal LM ``ids`` is the prefix and
            ``predict_at == len(ids)``.
        predict_at: index of the prediction slot.
        trigger_at: indices of the ``[T]`` tokens.
        soft_at: indices of the ``[S]`` placeholders.
    """

    ids: tuple[int, ...]
    predict_at: int
    trigger_at: tuple[int, ...] = ()
    soft_at: tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Scores:
    """Backend output for one batch.

    Attributes:
        logprobs: ``[B, C]`` class log-probs.
        top_token: ``[B]`` the most likely vocabulary token at the (first) prediction position.
    """

    logprobs: Tensor
    top_token: Tensor


class LanguageModel(Protocol):
    """What the evaluator and searchers need from a frozen LM."""

    kind: Kind
    name: str
    model: torch.nn.Module
    tokenizer: object
    device: torch.device

    def check_triggers(self, prompt: Prompt) -> None: ...

    def encode(self, prompt: Prompt, example: Example) -> Encoded: ...

    def word_table(self, prompt: Prompt, labels: Sequence[str]) -> WordTable: ...

    def label_logprobs(self, batch: Sequence[Encoded], words: WordTable,
                       gold: Sequence[int] | None = None) -> Scores: ...

    def embedding_matrix(self) -> Tensor: ...


def weights_checksum(model: torch.nn.Module) -> str:
    """sha256 of every weight's bytes: a search must leave it unchanged."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _freeze(model: torch.nn.Module) -> torch.nn.Module:
    model.eval()
    model.requires_grad_(False)
    return model


class FrozenLM:
    """Shared part of both backends: tokenization of templates, words and truncation.

    Args:
        model: a ``transformers`` model with an LM head (frozen here).
        tokenizer: its tokenizer.
        name: the name recorded in results.
        device: ``cuda``/``cpu``/None (auto: CUDA when present).
        max_length: inputs longer than this are truncated, longest field first.
        length_norm: divide a word's log-prob by its token count (causal only).
    """

    kind: Kind

    def __init__(self, model: torch.nn.Module, tokenizer, name: str = "model",
                 device: str | torch.device | None = None, max_length: int = 512,
                 length_norm: bool = False) -> None:
        self.device = _resolve_device(device)
        self.model = _freeze(model).to(self.device)
        self.tokenizer = tokenizer
        self.name = name
        self.max_length = max_length
        self.length_norm = length_norm
        self.pad_id = self._pad_id()
        self.prefix_special, self.suffix_special = self._special_frame()
        # bf16 autocast on GPU (activations only; the weights stay as they are)
        self.autocast = self.device.type == "cuda"

    # ---- tokenization -------------------------------------------------------------------------

    def _pad_id(self) -> int:
        tok = self.tokenizer
        for cand in (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id, 0):
            if cand is not None:
                return int(cand)
        return 0

    def _special_frame(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The special tokens the tokenizer puts before and after a text (CLS/SEP, BOS)."""
        bare = self.tokenizer("hello", add_special_tokens=False)["input_ids"]
        full = self.tokenizer("hello")["input_ids"]
        for start in range(len(full) - len(bare) + 1):
            if full[start : start + len(bare)] == bare:
                return tuple(full[:start]), tuple(full[start + len(bare):])
        return (), ()

    @functools.lru_cache(maxsize=200_000)  # noqa: B019 - backends live as long as the process
    def tokenize(self, text: str) -> tuple[int, ...]:
        """Token ids of ``text`` without special tokens (memoised: search re-encodes often)."""
        return tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def word_table(self, prompt: Prompt, labels: Sequence[str]) -> WordTable:
        """Token ids of every label word, as the model sees it at ``[P]`` (with its leading space)."""
        space = next(s.space for s in prompt.template.segments if s.kind == "predict")
        table = []
        for label, words in zip(labels, prompt.verbalizer.for_labels(labels)):
            ids = []
            for word in words:
                toks = self.tokenize(space + word) if space else self.tokenize(word)
                unk = self.tokenizer.unk_token_id
                if not toks or (unk is not None and unk in toks and word != self.tokenizer.unk_token):
                    raise AutopromptError(
                        f"label word {word!r} (label {label!r}) cannot be represented by the tokenizer "
                        f"of {self.name} (tokens {list(toks)}); choose another word"
                    )
                ids.append(toks)
            table.append(ids)
        return table

    def check_triggers(self, prompt: Prompt) -> None:
        """Raise unless every trigger id is a token of this model's vocabulary (a prompt searched on
        another model holds another vocabulary's ids)."""
        vocab = self.embedding_matrix().shape[0]
        bad = [i for i in prompt.trigger_ids if not 0 <= i < vocab]
        if bad:
            searched_on = prompt.meta.get("model")
            hint = f"score it with the model it was searched on ({searched_on})" if searched_on else \
                "score it with the model it was searched on"
            raise AutopromptError(f"trigger id(s) {bad[:3]} are outside {self.name}'s vocabulary of {vocab} tokens; "
                                  f"{hint}")

    def encode(self, prompt: Prompt, example: Example) -> Encoded:
        """Token ids of the prompt filled with ``example`` (fields truncated to ``max_length``)."""
        template = prompt.template
        if self.kind == "causal" and not template.predict_is_last:
            raise AutopromptError(
                f"template {template.source!r}: a causal LM scores label words after the prompt, so "
                "[P] must be the last slot; move [P] to the end"
            )
        pieces: list[tuple[str, list[int]]] = []
        triggers = iter(prompt.trigger_ids)
        for seg in template.segments:
            if seg.kind == "text":
                if self.kind == "causal" and pieces and pieces[-1][0] == "predict":
                    continue  # trailing whitespace after [P]
                pieces.append(("text", list(self.tokenize(seg.value))))
            elif seg.kind == "field":
                try:
                    value = example.fields[seg.value]
                except KeyError:
                    raise AutopromptError(
                        f"template field {{{seg.value}}} is not in the example (fields: {list(example.fields)})"
                    ) from None
                pieces.append(("field", list(self.tokenize(seg.space + value))))
            elif seg.kind == "trigger":
                pieces.append(("trigger", [next(triggers)]))
            elif seg.kind == "soft":
                pieces.append(("soft", [self.pad_id]))
            else:
                pieces.append(("predict", [self._mask_id()] if self.kind == "masked" else []))
        self._truncate(pieces)
        ids: list[int] = list(self.prefix_special)
        predict_at, trigger_at, soft_at = -1, [], []
        for kind, toks in pieces:
            if kind == "predict":
                predict_at = len(ids)
            elif kind == "trigger":
                trigger_at.append(len(ids))
            elif kind == "soft":
                soft_at.append(len(ids))
            ids.extend(toks)
        if self.kind == "masked":
            ids.extend(self.suffix_special)
        return Encoded(tuple(ids), predict_at, tuple(trigger_at), tuple(soft_at))

    def _mask_id(self) -> int:
        raise NotImplementedError

    def word_start_tokens(self) -> Tensor:
        """``[V]`` bool: tokens that begin a whole alphabetic word (``Ġgreat``, ``great``; not ``##s``).

        Used to keep trigger and label-word candidates to real words, as AutoPrompt does.
        """
        if getattr(self, "_word_start", None) is None:
            vocab = self.embedding_matrix().shape[0]
            keep = torch.zeros(vocab, dtype=torch.bool)
            tokens = self.tokenizer.convert_ids_to_tokens(list(range(min(vocab, len(self.tokenizer)))))
            special = set(self.tokenizer.all_special_ids)
            # WordPiece marks continuations with ##; BPE/sentencepiece mark word starts with a space
            # (a BPE vocabulary holds a few "##..." tokens of its own, e.g. Markdown headings)
            wordpiece = sum(bool(t) and t.startswith("##") for t in tokens) > 0.05 * len(tokens)
            for i, tok in enumerate(tokens):
                if tok is None or i in special or (wordpiece and tok.startswith("##")):
                    continue
                text = self.tokenizer.convert_tokens_to_string([tok])  # bytes → text for byte-level BPE
                if not wordpiece:
                    if not text.startswith(" "):
                        continue
                    text = text[1:]
                keep[i] = len(text) >= 2 and text.isascii() and text.isalpha()
            self._word_start = keep
        return self._word_start

    def stable_word_tokens(self) -> Tensor:
        """``[V]`` bool: `word_start_tokens` whose decoded text encodes back to that one token.

        A trigger that does not survive decode → encode cannot be written down as text: the prompt
        a user copies would tokenize differently from the prompt that was scored.
        """
        if getattr(self, "_stable_words", None) is None:
            keep = self.word_start_tokens().clone()
            ids = keep.nonzero()[:, 0].tolist()
            texts = [self.tokenizer.decode([i]) for i in ids]
            encoded = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
            for i, toks in zip(ids, encoded, strict=True):
                keep[i] = list(toks) == [i]
            self._stable_words = keep
        return self._stable_words

    def _truncate(self, pieces: list[tuple[str, list[int]]]) -> None:
        """Cut the longest field from its end until the sequence fits ``max_length``."""
        frame = len(self.prefix_special) + (len(self.suffix_special) if self.kind == "masked" else 0)
        reserve = 8  # room for multi-token label words (extra masks / continuation)
        excess = frame + reserve + sum(len(t) for _, t in pieces) - self.max_length
        while excess > 0:
            longest = max((p for p in pieces if p[0] == "field"), key=lambda p: len(p[1]), default=None)
            if longest is None or not longest[1]:
                raise AutopromptError(
                    f"the template alone is longer than max_length={self.max_length} tokens; shorten it"
                )
            cut = min(excess, len(longest[1]) - 1) or 1
            del longest[1][-cut:]
            excess -= cut

    # ---- shared tensor helpers ----------------------------------------------------------------

    def embedding_matrix(self) -> Tensor:
        """The input embedding matrix ``[V, H]`` (a view of the frozen weights)."""
        return self.model.get_input_embeddings().weight

    def pad(self, rows: Sequence[Sequence[int]], left: bool = False, fill: int | None = None) -> tuple[Tensor, Tensor]:
        """Pad token rows into ``(ids [B, L], attention_mask [B, L])`` on the model's device."""
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id if fill is None else fill, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            sl = slice(width - len(r), width) if left else slice(0, len(r))
            ids[i, sl] = torch.tensor(r, dtype=torch.long)
            mask[i, sl] = 1
        return ids.to(self.device), mask.to(self.device)

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast)

    def _embed(self, ids: Tensor, slots: Tensor, vectors: Tensor) -> Tensor:
        """Input embeddings ``[B, L, H]`` with ``vectors[k]`` wherever ``slots == k`` (else -1)."""
        embeds = self.model.get_input_embeddings()(ids)
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
                  left: bool = False, widen=None) -> Tensor | None:
        """Input embeddings ``[B, L, H]`` with trigger and soft-slot vectors in place, or None if neither."""
        use_soft = soft is not None and soft.slots is not None
        if vectors is None and not use_soft:
            return None
        table = torch.cat([t.to(self.device) for t in (vectors, soft.slots if use_soft else None) if t is not None])
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
        return self._scores(batch, words, gold, soft=soft)

    def soft_logprobs(self, batch: Sequence[Encoded], words: WordTable, soft: SoftPrompt) -> Tensor:
        """Class log-probs ``[B, C]`` that keep the graph to ``soft``'s tensors (for training them).

        The same computation as `label_logprobs`, so a trained soft prompt scores as it trained.
        """
        with torch.enable_grad():
            return self._scores(batch, words, None, soft=soft).logprobs

    def trigger_gradient(self, batch: Sequence[Encoded], words: WordTable, gold: Sequence[int]) -> tuple[Tensor, float]:
        """Gradient of the mean gold-label loss (−log p(label word)) w.r.t. the trigger embeddings.

        Returns ``(grad [T, H], loss)``. The weights stay frozen: only a copy of the trigger
        embeddings requires a gradient.
        """
        enc = batch[0]
        trigger_ids = torch.tensor([enc.ids[i] for i in enc.trigger_at], device=self.device)
        vectors = self.embedding_matrix()[trigger_ids].detach().clone().requires_grad_(True)   # [T, H]
        with torch.enable_grad():
            scores = self._scores(batch, words, None, vectors).logprobs                       # [B, C]
            loss = -scores[torch.arange(len(batch)), torch.tensor(list(gold), device=self.device)].mean()
            loss.backward()
        return vectors.grad.detach(), float(loss.detach())

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

    @torch.inference_mode()
    def slot_features(self, batch: Sequence[Encoded]) -> tuple[Tensor, Tensor]:
        """What the LM head sees and says at the prediction slot (first token of a word).

        Returns ``(hidden [B, H], logprobs [B, V])``: the input of the output-embedding layer
        (so ``hidden @ E_out.T`` are the logits) and the log-softmax over the vocabulary.
        """
        captured: dict[str, Tensor] = {}
        head = self.model.get_output_embeddings()
        handle = head.register_forward_hook(lambda _m, inputs, _o: captured.__setitem__("h", inputs[0]))
        try:
            logits, rows = self._slot_forward(batch)
        finally:
            handle.remove()
        hidden = captured["h"]
        index = torch.arange(len(batch), device=self.device)
        return _upcast(hidden[index, rows]), _upcast(logits[index, rows]).log_softmax(-1)

    def _slot_forward(self, batch: Sequence[Encoded]) -> tuple[Tensor, Tensor]:
        """Logits ``[B, L', V]`` of one forward and, per row, the column of the prediction slot."""
        raise NotImplementedError


def _upcast(t: Tensor) -> Tensor:
    """bf16/fp16 logits to float32 for the log-softmax; float64 stays float64."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _logsumexp_classes(word_scores: Tensor, words: WordTable) -> Tensor:
    """``[B, W]`` scores of all words (flattened in table order) → ``[B, C]`` class scores."""
    out, k = [], 0
    for class_words in words:
        out.append(torch.logsumexp(word_scores[:, k : k + len(class_words)], dim=-1))
        k += len(class_words)
    return torch.stack(out, dim=-1)


class MaskedLM(FrozenLM):
    """A masked LM backend (BERT, RoBERTa, ...): ``[P]`` anywhere, one mask per word token."""

    kind: Kind = "masked"

    def _mask_id(self) -> int:
        mask = self.tokenizer.mask_token_id
        if mask is None:
            raise AutopromptError(f"{self.name} has no mask token; it is not a masked LM")
        return int(mask)

    def _scores(self, batch: Sequence[Encoded], words: WordTable, gold: Sequence[int] | None,
                vectors: Tensor | None = None, soft: SoftPrompt | None = None) -> Scores:
        if soft is not None and soft.prefix is not None:
            self.check_prefix()
        flat = [w for class_words in words for w in class_words]
        columns: list[Tensor | None] = [None] * len(flat)
        top = torch.zeros(len(batch), dtype=torch.long, device=self.device)
        mask_id = self._mask_id()
        at = torch.tensor([e.predict_at for e in batch], device=self.device)
        for n in sorted({len(w) for w in flat}):
            widen = lambda row, p, fill, n=n: row[:p] + [fill] * n + row[p + 1 :]
            ids, attn = self.pad([widen(list(e.ids), e.predict_at, mask_id) for e in batch])
            embeds = self._injected(batch, ids, vectors, soft, widen=widen)
            with self._autocast():
                if embeds is None:
                    logits = self.model(input_ids=ids, attention_mask=attn).logits
                else:
                    logits = self.model(inputs_embeds=embeds, attention_mask=attn).logits
            pos = at[:, None] + torch.arange(n, device=self.device)                        # [B, n]
            slot_logits = _upcast(logits).gather(1, pos[:, :, None].expand(-1, -1, logits.shape[-1]))
            logp = slot_logits.log_softmax(-1)                                              # [B, n, V]
            if n == 1:
                top = logp[:, 0].argmax(-1)
            for j, w in enumerate(flat):
                if len(w) == n:
                    columns[j] = logp[:, torch.arange(n), torch.tensor(w, device=self.device)].sum(-1)
        return Scores(_logsumexp_classes(torch.stack(columns, dim=-1), words), top)


    def _slot_forward(self, batch: Sequence[Encoded]) -> tuple[Tensor, Tensor]:
        ids, attn = self.pad([e.ids for e in batch])
        with self._autocast():
            logits = self.model(input_ids=ids, attention_mask=attn).logits
        return logits, torch.tensor([e.predict_at for e in batch], device=self.device)

    @torch.inference_mode()
    def trigger_nll(self, batch: Sequence[Encoded]) -> Tensor:
        # one row per (example, trigger): that trigger masked, the rest of the row as context
        rows, owner, targets, at = [], [], [], []
        for b, enc in enumerate(batch):
            for pos in enc.trigger_at:
                row = list(enc.ids)
                row[pos] = self._mask_id()
                rows.append(row)
                owner.append(b)
                targets.append(enc.ids[pos])
                at.append(pos)
        if not rows:
            return torch.zeros(len(batch))
        ids, attn = self.pad(rows)
        with self._autocast():
            logits = self.model(input_ids=ids, attention_mask=attn).logits                  # [R, L, V]
        index = torch.arange(len(rows), device=self.device)
        logp = _upcast(logits[index, torch.tensor(at, device=self.device)]).log_softmax(-1)  # [R, V]
        nll = -logp[index, torch.tensor(targets, device=self.device)].cpu()
        total = torch.zeros(len(batch)).index_add_(0, torch.tensor(owner), nll)
        count = torch.zeros(len(batch)).index_add_(0, torch.tensor(owner), torch.ones(len(rows)))
        return total / count.clamp(min=1)

    def trigger_nll_cost(self, batch: Sequence[Encoded]) -> int:
        return sum(len(e.trigger_at) for e in batch)


def _cache_layers(cache) -> list[tuple[Tensor, Tensor]]:
    """Key/value tensors per layer from a ``transformers`` cache (new or legacy format)."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    if hasattr(cache, "key_cache"):
        return list(zip(cache.key_cache, cache.value_cache))
    return [(k, v) for k, v in cache]


def _make_cache(layers: list[tuple[Tensor, Tensor]]):
    from transformers import DynamicCache  # noqa: PLC0415 - heavy import, only when needed

    try:
        return DynamicCache(ddp_cache_data=layers)
    except TypeError:  # older transformers
        return DynamicCache.from_legacy_cache(tuple(layers))


def _select_rows(cache, rows: Tensor):
    return _make_cache([(k.index_select(0, rows), v.index_select(0, rows)) for k, v in _cache_layers(cache)])


class CausalLM(FrozenLM):
    """A causal LM backend (GPT-2, Llama, SmolLM2, ...): ``[P]`` last, words scored as a suffix.

    Args:
        padding_side: ``left`` or ``right``; results do not depend on it (positions are passed
            explicitly). Left lets the LM head run on the last column only.
        max_rows: cap on (example, word) rows per continuation pass, to bound memory.
        (others as in `FrozenLM`)
    """

    kind: Kind = "causal"

    def __init__(self, *args, padding_side: str = "left", max_rows: int = 512, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if padding_side not in ("left", "right"):
            raise AutopromptError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
        self.left = padding_side == "left"
        self.max_rows = max_rows
        params = inspect.signature(self.model.forward).parameters
        self.keep_arg = "logits_to_keep" in params
        self.cache_arg = "cache" if "cache" in params else "past_key_values"  # renamed in transformers 5

    def _forward(self, ids: Tensor | None, attn: Tensor, positions: Tensor, cache=None, keep=None,
                 inputs_embeds: Tensor | None = None):
        """One forward with explicit positions; ``keep`` = sequence indices whose logits are needed."""
        extra: dict[str, Any] = {}
        if keep is not None and self.keep_arg:
            extra["logits_to_keep"] = keep
        if cache is not None:
            extra[self.cache_arg] = cache
        with self._autocast():
            out = self.model(input_ids=ids if inputs_embeds is None else None, inputs_embeds=inputs_embeds,
                             attention_mask=attn, position_ids=positions, use_cache=True, **extra)
        logits = out.logits
        if keep is not None and not self.keep_arg:
            logits = logits[:, keep] if isinstance(keep, Tensor) else logits[:, -keep:]
        new_cache = out["cache"] if "cache" in out else out["past_key_values"]
        return _upcast(logits), new_cache

    def _last_logprobs(self, ids, attn, positions, cache=None, inputs_embeds=None, left: bool | None = None):
        """Log-probs after each row's last real token ``[B, V]`` and the updated cache.

        ``left``: the rows of ``ids`` are left-padded (default: so when there is no cache).
        """
        if left is None:
            left = self.left and cache is None
        if left:
            logits, cache = self._forward(ids, attn, positions, cache=cache, keep=1, inputs_embeds=inputs_embeds)
            return logits[:, -1].log_softmax(-1), cache
        # right padding (or a suffix after a cache): keep only the distinct last positions
        width = attn.shape[1] if cache is None else ids.shape[1]
        real = attn.sum(-1) if cache is None else attn[:, -width:].sum(-1)
        last = real - 1                                                              # [B]
        keep = torch.unique(last)
        logits, cache = self._forward(ids, attn, positions, cache=cache, keep=keep, inputs_embeds=inputs_embeds)
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

    def continuation_logprobs(self, cache, attn: Tensor, pairs: Sequence[tuple[int, Sequence[int]]]) -> Tensor:
        """Log-prob of word tokens ``1..n-1`` after a prefix, for each (prefix row, word) pair: ``[P]``.

        The word's first token is scored from the prefix logits; here tokens ``0..n-2`` are fed on
        top of the prefix's key/value cache (rows gathered per pair).
        """
        out = torch.zeros(len(pairs), device=self.device)
        lengths = attn.sum(-1)
        for start in range(0, len(pairs), self.max_rows):
            chunk = pairs[start : start + self.max_rows]
            rows = torch.tensor([b for b, _ in chunk], device=self.device)
            inp, inp_mask = self.pad([w[:-1] for _, w in chunk])                 # [k, m]
            tgt, _ = self.pad([w[1:] for _, w in chunk])                          # [k, m]
            full_mask = torch.cat([attn.index_select(0, rows), inp_mask], dim=1)
            pos = lengths.index_select(0, rows)[:, None] + torch.arange(inp.shape[1], device=self.device)
            logits, _ = self._forward(inp, full_mask, pos, cache=_select_rows(cache, rows))  # [k, m, V]
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
        return torch.stack([torch.stack([k[0], v[0]]) for k, v in _cache_layers(cache)]).float().clone()

    def _prefix_cache(self, prefix: Tensor, rows: int):
        """A fresh cache holding ``prefix`` ``[L, 2, K, P, D]`` for each of ``rows`` rows."""
        prefix = prefix.to(self.device)
        return _make_cache([(layer[0].expand(rows, -1, -1, -1), layer[1].expand(rows, -1, -1, -1))
                            for layer in prefix])

    def _scores(self, batch: Sequence[Encoded], words: WordTable, gold: Sequence[int] | None,
                vectors: Tensor | None = None, soft: SoftPrompt | None = None) -> Scores:
        ids, attn = self.pad([e.ids for e in batch], left=self.left)
        positions = (attn.cumsum(-1) - 1).clamp(min=0)
        embeds = self._injected(batch, ids, vectors, soft, left=self.left)
        cache = None
        if soft is not None and soft.prefix is not None:  # P-tuning v2: the prefix is every layer's past
            self.check_prefix()
            cache = self._prefix_cache(soft.prefix, len(batch))
            attn = torch.cat([attn.new_ones(len(batch), soft.prefix_length), attn], dim=1)   # [B, P + L]
            positions = positions + soft.prefix_length
        logp_first, cache = self._last_logprobs(ids, attn, positions, cache=cache, inputs_embeds=embeds,
                                                left=self.left)                            # [B, V]
        return self._word_scores(logp_first, cache, attn, words, gold)

    def _word_scores(self, logp_first: Tensor, cache, attn: Tensor, words: WordTable,
                     gold: Sequence[int] | None) -> Scores:
        """Class scores from the next-token log-probs and, for multi-token words, the cache.

        With ``gold`` (one word per class, no length norm), multi-token words that cannot outrank
        the gold class are not continued: a word's first-token log-prob bounds its full score
        from above, so a word whose bound is below the gold's exact score keeps the bound. The
        gold's rank, the argmax, P@k and MRR stay exact; LAMA's hundreds of candidates need this
        on a CPU.
        """
        flat = [w for class_words in words for w in class_words]
        multi = [j for j, w in enumerate(flat) if len(w) > 1]
        first = torch.tensor([w[0] for w in flat], device=self.device)
        word_scores = logp_first[:, first]                                          # [B, W]
        rows = range(logp_first.shape[0])
        if multi and gold is not None and not self.length_norm and len(flat) == len(words):
            word_scores = word_scores + self._continue(word_scores, cache, attn, flat,
                                                       [(b, j) for b, j in zip(rows, gold) if len(flat[j]) > 1])
            bar = word_scores[torch.arange(len(gold)), torch.tensor(list(gold), device=self.device)]
            rest = [(b, j) for b in rows for j in multi if j != gold[b] and word_scores[b, j] >= bar[b]]
            word_scores = word_scores + self._continue(word_scores, cache, attn, flat, rest)
        elif multi:
            word_scores = word_scores + self._continue(word_scores, cache, attn, flat,
                                                       [(b, j) for b in rows for j in multi])
        if self.length_norm:
            word_scores = word_scores / torch.tensor([len(w) for w in flat], device=self.device)
        return Scores(_logsumexp_classes(word_scores, words), logp_first.argmax(-1))

    def _continue(self, like: Tensor, cache, attn: Tensor, flat: list[tuple[int, ...]],
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
        ids, attn = self.pad(prefixes, left=True)
        _, cache = self._forward(ids, attn, (attn.cumsum(-1) - 1).clamp(min=0), keep=1)
        rows = torch.arange(len(prefixes), device=self.device).repeat_interleave(k)
        cache = _select_rows(cache, rows)
        suf_ids, suf_mask = self.pad([s for per_example in suffixes for s in per_example])
        full_mask = torch.cat([attn.index_select(0, rows), suf_mask], dim=1)
        positions = attn.sum(-1).index_select(0, rows)[:, None] + torch.arange(suf_ids.shape[1], device=self.device)
        logp_first, cache = self._last_logprobs(suf_ids, full_mask, positions, cache=cache)
        rep_gold = [g for g in gold for _ in range(k)] if gold is not None else None
        return self._word_scores(logp_first, cache, full_mask, words, rep_gold)
