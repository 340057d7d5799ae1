"""What the frozen model's hidden states say, read without the LM head's full output where possible.

`HiddenStates` is `FrozenLM`'s mixin for the readers that look inside the model instead of at its
label words: the LM head's input at the prediction slot (hidden-state centroids, a trained head, the
verbalizer search's statistics) and a mean-pooled sentence embedding (KATE's retrieval).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor

from autoprompt.backends.protocol import Encoded
from autoprompt.backends.weights import upcast


class HiddenStates:
    """Hidden-state readers (mixed into `FrozenLM`, which sets these attributes and `_slot_forward`)."""

    if TYPE_CHECKING:  # what `FrozenLM` and its subclasses provide (declared only: no stub may shadow them)
        model: torch.nn.Module
        device: torch.device

        def pad(self, rows: Sequence[Sequence[int]], left: bool = False,
                fill: int | None = None) -> tuple[Tensor, Tensor]: ...

        def _autocast(self) -> torch.autocast: ...

        def _slot_forward(self, batch: Sequence[Encoded]) -> tuple[Tensor, Tensor]: ...

    @torch.inference_mode()
    def sentence_embeddings(self, texts: Sequence[Sequence[int]]) -> Tensor:
        """``[N, H]`` the mean of the last hidden states over each text's tokens (KATE's retrieval
        embedding, from the frozen model itself).

        The body alone runs (``base_model``): the LM head's ``[N, L, V]`` logits would cost a fifth
        of the forward on a small model and are never read.
        """
        ids, attn = self.pad(texts)
        with self._autocast():
            body = cast(torch.nn.Module, self.model.base_model)
            hidden = body(input_ids=ids, attention_mask=attn).last_hidden_state                  # [N, L, H]
        mask = attn[..., None].to(hidden.dtype)
        return upcast((hidden * mask).sum(1) / mask.sum(1).clamp(min=1))

    @torch.inference_mode()
    def slot_features(self, batch: Sequence[Encoded]) -> tuple[Tensor, Tensor]:
        """What the LM head sees and says at the prediction slot (first token of a word).

        Returns ``(hidden [B, H], logprobs [B, V])``: the input of the output-embedding layer
        (so ``hidden @ E_out.T`` are the logits) and the log-softmax over the vocabulary.
        """
        captured: dict[str, Tensor] = {}
        head: torch.nn.Module = self.model.get_output_embeddings()  # type: ignore[operator]
        handle = head.register_forward_hook(lambda _m, inputs, _o: captured.__setitem__("h", inputs[0]))
        try:
            logits, rows = self._slot_forward(batch)
        finally:
            handle.remove()
        hidden = captured["h"]
        index = torch.arange(len(batch), device=self.device)
        return upcast(hidden[index, rows]), upcast(logits[index, rows]).log_softmax(-1)

    def _lm_head_input(self) -> tuple[dict[str, Tensor], Any]:
        """A hook that keeps the LM head's input of the next forward: ``(store, handle)``."""
        captured: dict[str, Tensor] = {}
        head: torch.nn.Module = self.model.get_output_embeddings()  # type: ignore[operator]
        return captured, head.register_forward_hook(lambda _m, inputs, _o: captured.__setitem__("h", inputs[0]))
