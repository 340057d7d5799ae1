"""Masked LMs (BERT, RoBERTa, ...): ``[P]`` anywhere, one mask per word token.

A label word of ``n`` tokens scores the sum of the log-probs of its tokens at ``n`` masks, all
predicted in one pass (PET's parallel decoding); words of different lengths get one pass per length.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from autoprompt.backends.base import FrozenLM, Widen
from autoprompt.backends.protocol import Encoded, Kind, Scores, WordTable
from autoprompt.backends.weights import logsumexp_classes, upcast
from autoprompt.errors import AutopromptError
from autoprompt.prompts.soft import SoftPrompt


class MaskedLM(FrozenLM):
    """A masked LM backend (BERT, RoBERTa, ...): ``[P]`` anywhere, one mask per word token."""

    kind: Kind = "masked"

    def _mask_id(self) -> int:
        mask = self.tokenizer.mask_token_id
        if mask is None:
            raise AutopromptError(f"{self.name} has no mask token; it is not a masked LM")
        return int(mask)

    def predict_tokens(self) -> list[int]:
        return [self._mask_id()]  # widened to the word's length when scoring

    def closing_tokens(self) -> tuple[int, ...]:
        return self.suffix_special

    def content_free_texts(self) -> list[str]:
        mask = getattr(self.tokenizer, "mask_token", None)
        return [*super().content_free_texts(), *([mask] if mask else [])]

    def _scores(self, batch: Sequence[Encoded], words: WordTable, gold: Sequence[int] | None,
                vectors: Tensor | None = None, soft: SoftPrompt | None = None) -> Scores:
        if soft is not None and soft.prefix is not None:
            self.check_prefix()
        flat = [w for class_words in words for w in class_words]
        columns: list[Tensor] = [torch.empty(0)] * len(flat)  # every one is filled: each word has a length
        top = torch.zeros(len(batch), dtype=torch.long, device=self.device)
        mask_id = self._mask_id()
        at = torch.tensor([e.predict_at for e in batch], device=self.device)
        for n in sorted({len(w) for w in flat}):
            widen = _widener(n)
            ids, attn = self.pad([widen(list(e.ids), e.predict_at, mask_id) for e in batch])
            embeds = self._injected(batch, ids, vectors, soft, widen=widen)
            with self._autocast():
                if embeds is None:
                    logits = self.model(input_ids=ids, attention_mask=attn).logits
                else:
                    logits = self.model(inputs_embeds=embeds, attention_mask=attn).logits
            pos = at[:, None] + torch.arange(n, device=self.device)                        # [B, n]
            slot_logits = upcast(logits).gather(1, pos[:, :, None].expand(-1, -1, logits.shape[-1]))
            logp = slot_logits.log_softmax(-1)                                              # [B, n, V]
            if n == 1:
                top = logp[:, 0].argmax(-1)
            for j, w in enumerate(flat):
                if len(w) == n:
                    columns[j] = logp[:, torch.arange(n), torch.tensor(w, device=self.device)].sum(-1)
        return Scores(logsumexp_classes(torch.stack(columns, dim=-1), words), top)

    @torch.inference_mode()
    def fill_mask(self, text: str, which: int, k: int) -> list[str]:
        """The ``k`` most likely whole words (`word_start_tokens`) at the ``which``-th mask token of ``text``."""
        ids = torch.tensor([self.tokenizer(text)["input_ids"]], device=self.device)
        logits = self.model(input_ids=ids).logits[0]
        at = (ids[0] == self._mask_id()).nonzero()[:, 0][which]
        keep = self.word_start_tokens().to(logits.device)
        scores = logits[at].float().masked_fill(~keep, -float("inf"))
        return [self.tokenizer.convert_tokens_to_string([self.tokenizer.convert_ids_to_tokens(tok)]).strip()
                for tok in scores.topk(k).indices.tolist()]

    def head_features(self, batch: Sequence[Encoded], soft: SoftPrompt | None = None) -> Tensor:
        if soft is not None and soft.prefix is not None:
            self.check_prefix()
        ids, attn = self.pad([e.ids for e in batch])
        embeds = self._injected(batch, ids, None, soft)
        captured, handle = self._lm_head_input()
        try:
            with self._autocast():
                self.model(input_ids=ids if embeds is None else None, inputs_embeds=embeds, attention_mask=attn)
        finally:
            handle.remove()
        rows = torch.arange(len(batch), device=self.device)
        return captured["h"][rows, torch.tensor([e.predict_at for e in batch], device=self.device)]   # [B, H]

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
        logp = upcast(logits[index, torch.tensor(at, device=self.device)]).log_softmax(-1)  # [R, V]
        nll = -logp[index, torch.tensor(targets, device=self.device)].cpu()
        total = torch.zeros(len(batch)).index_add_(0, torch.tensor(owner), nll)
        count = torch.zeros(len(batch)).index_add_(0, torch.tensor(owner), torch.ones(len(rows)))
        return total / count.clamp(min=1)

    def trigger_nll_cost(self, batch: Sequence[Encoded]) -> int:
        return sum(len(e.trigger_at) for e in batch)


def _widener(n: int) -> Widen:
    """Replace the one ``[P]`` position of a row by ``n`` copies of ``fill`` (an ``n``-token word's masks)."""

    def widen(row: list[int], at: int, fill: int) -> list[int]:
        return row[:at] + [fill] * n + row[at + 1 :]

    return widen
