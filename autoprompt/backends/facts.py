"""What a backend reads off its model and tokenizer: special tokens, vocabulary masks, embeddings, sizes.

`ModelFacts` is `FrozenLM`'s mixin for the facts every part of a backend asks for: the pad token and
the special tokens around a text, which tokens start a word, the embedding matrices (views of the
frozen weights), and the memory one token costs (from the config), so scoring and training can size
their batches to `working_memory`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from autoprompt.backends.vocabulary import stable_tokens, word_start_tokens


class ModelFacts:
    """Facts of a frozen model and its tokenizer (mixed into `FrozenLM`, which sets these attributes)."""

    model: torch.nn.Module
    tokenizer: Any
    compute_dtype: str
    working_memory: int
    _word_start: Tensor | None
    _stable_words: Tensor | None

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

    # ---- vocabulary -----------------------------------------------------------------------------

    def word_start_tokens(self) -> Tensor:
        """``[V]`` bool: tokens that begin a whole alphabetic word (`vocabulary.word_start_tokens`)."""
        if self._word_start is None:
            self._word_start = word_start_tokens(self.tokenizer, self.embedding_matrix().shape[0])
        return self._word_start

    def stable_word_tokens(self) -> Tensor:
        """``[V]`` bool: word-start tokens whose decoded text encodes back to that one token."""
        if self._stable_words is None:
            self._stable_words = stable_tokens(self.tokenizer, self.word_start_tokens())
        return self._stable_words

    # ---- shared tensor helpers ----------------------------------------------------------------

    def embedding_matrix(self) -> Tensor:
        """The input embedding matrix ``[V, H]`` (a view of the frozen weights)."""
        embeddings: torch.nn.Embedding = self.model.get_input_embeddings()  # type: ignore[operator]
        return embeddings.weight

    def input_embeddings(self, ids: Tensor) -> Tensor:
        """``[..., H]`` what the first layer receives for ``ids``: the embedding rows times
        `embed_scale`, so injected trigger and soft vectors live on the model's own scale."""
        return self.embedding_matrix()[ids] * self.embed_scale

    @property
    def embed_scale(self) -> float:
        """The factor the model multiplies its embedding rows by (1; Gemma: √H)."""
        embeddings: torch.nn.Module = self.model.get_input_embeddings()  # type: ignore[operator]
        return float(getattr(embeddings, "scalar_embed_scale", 1.0))

    def output_embedding_matrix(self) -> Tensor:
        """The LM head's weight ``[V, H]`` (tied to the input embeddings in most small LMs)."""
        head: torch.nn.Linear = self.model.get_output_embeddings()  # type: ignore[operator]
        return head.weight

    def bytes_per_token(self, backward: bool = False) -> int:
        """Memory one token costs a forward: its key/value cache, or (``backward``) the activations a
        backward pass keeps, estimated from the config (attention, MLP and norms of every layer)."""
        hidden, layers, inner, kv_heads, head_dim = self._geometry()
        size = 2 if self.compute_dtype == "bf16" else 4
        if backward:  # inputs of the q/k/v/o projections, norms and residuals; the MLP's up/gate/act
            return layers * (10 * hidden + 4 * inner) * size
        return layers * 2 * kv_heads * head_dim * size

    def prefix_shape(self, length: int) -> tuple[int, ...]:
        """The shape ``[L, 2, K, length, D]`` of a key/value prefix of ``length`` positions (from the config)."""
        _, layers, _, kv_heads, head_dim = self._geometry()
        return (layers, 2, kv_heads, length, head_dim)

    def _geometry(self) -> tuple[int, int, int, int, int]:
        """``(hidden, layers, MLP width, key/value heads, head width)`` from the model's config."""
        config: Any = self.model.config
        config = config.get_text_config() if hasattr(config, "get_text_config") else config
        hidden = int(getattr(config, "hidden_size", None) or config.n_embd)
        layers = int(getattr(config, "num_hidden_layers", None) or config.n_layer)
        inner = int(getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * hidden)
        heads = int(getattr(config, "num_attention_heads", None) or config.n_head)
        head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
        return hidden, layers, inner, int(getattr(config, "num_key_value_heads", None) or heads), head_dim

    def rows_within(self, tokens_per_row: int, backward: bool = False) -> int:
        """How many rows of ``tokens_per_row`` tokens fit `working_memory` (at least one)."""
        return max(1, self.working_memory // max(1, tokens_per_row * self.bytes_per_token(backward)))

    def num_parameters(self) -> int:
        """How many weights the backbone has (all frozen)."""
        return sum(p.numel() for p in self.model.parameters())
