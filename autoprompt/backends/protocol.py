"""What the evaluator and the strategies may ask of a frozen LM: one protocol, and its value types.

A fake backend for a test is a short class with these members; `FrozenLM` implements them on
``transformers`` models (`MaskedLM`, `CausalLM`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

from autoprompt.prompts import Demonstration, Prompt, Template
from autoprompt.prompts.soft import SoftPrompt
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


@dataclass(frozen=True)
class ChannelEncoded:
    """One example under a ``channel`` prompt, as token ids (`PromptEncoder.encode_channel`).

    Attributes:
        prefixes: per class, per label word: what the model reads before the input — the special
            tokens, the demonstrations (each in channel order) and the template's label part with the
            word in place of ``[P]`` (``"It was great."``).
        query: the input part of the template filled with the example (``" <sentence>"``): the tokens
            each class is scored on, the same for every class.
    """

    prefixes: tuple[tuple[tuple[int, ...], ...], ...]
    query: tuple[int, ...]


@dataclass
class Scores:
    """Backend output for one batch.

    Attributes:
        logprobs: ``[B, C]`` class log-probs.
        top_token: ``[B]`` the most likely vocabulary token at the (first) prediction position.
    """

    logprobs: Tensor
    top_token: Tensor

    @classmethod
    def concat(cls, parts: Sequence[Scores]) -> Scores:
        """The scores of consecutive batches as one, in order."""
        return cls(torch.cat([p.logprobs for p in parts]), torch.cat([p.top_token for p in parts]))


class LanguageModel(Protocol):
    """A frozen LM as the evaluator and the strategies use it.

    Capabilities are declared, not probed: ``shares_prefix`` says `label_logprobs_shared` runs a
    prefix once for many prompts and `label_logprobs_prefixed` once for many inputs (causal LMs);
    `check_prefix` raises where a key/value prefix cannot be taken.
    """

    kind: Kind
    name: str
    model: torch.nn.Module
    tokenizer: Any
    device: torch.device
    max_length: int
    context_length: int
    shares_prefix: bool

    # encoding
    def tokenize(self, text: str) -> tuple[int, ...]: ...
    def decode(self, ids: Sequence[int]) -> str: ...
    def encode(self, prompt: Prompt, example: Example, demos: Sequence[Demonstration] | None = None) -> Encoded: ...
    def encode_channel(self, prompt: Prompt, example: Example, labels: Sequence[str],
                       demos: Sequence[Demonstration] | None = None) -> ChannelEncoded: ...
    def word_table(self, prompt: Prompt, labels: Sequence[str]) -> WordTable: ...
    def check_template(self, template: Template) -> None: ...
    def check_triggers(self, prompt: Prompt) -> None: ...
    def content_free_texts(self) -> list[str]: ...

    # vocabulary
    def embedding_matrix(self) -> Tensor: ...
    def input_embeddings(self, ids: Tensor) -> Tensor: ...
    @property
    def embed_scale(self) -> float: ...
    def output_embedding_matrix(self) -> Tensor: ...
    def num_parameters(self) -> int: ...
    def word_start_tokens(self) -> Tensor: ...
    def stable_word_tokens(self) -> Tensor: ...

    # scoring
    def label_logprobs(self, batch: Sequence[Encoded], words: WordTable, gold: Sequence[int] | None = None,
                       soft: SoftPrompt | None = None) -> Scores: ...
    def label_logprobs_shared(self, prefixes: Sequence[Sequence[int]], suffixes: Sequence[Sequence[Sequence[int]]],
                              words: WordTable, gold: Sequence[int] | None = None) -> Scores: ...
    def label_logprobs_prefixed(self, prefix: Sequence[int], suffixes: Sequence[Sequence[int]], words: WordTable,
                                gold: Sequence[int] | None = None, rows: int = 32) -> Scores: ...
    def sentence_embeddings(self, texts: Sequence[Sequence[int]]) -> Tensor: ...
    def soft_logprobs(self, batch: Sequence[Encoded], words: WordTable, soft: SoftPrompt) -> Tensor: ...
    def trigger_gradient(self, batch: Sequence[Encoded], words: WordTable,
                         gold: Sequence[int]) -> tuple[Tensor, float]: ...
    def trigger_nll(self, batch: Sequence[Encoded]) -> Tensor: ...
    def trigger_nll_cost(self, batch: Sequence[Encoded]) -> int: ...
    def slot_features(self, batch: Sequence[Encoded]) -> tuple[Tensor, Tensor]: ...
    def head_features(self, batch: Sequence[Encoded], soft: SoftPrompt | None = None) -> Tensor: ...
    def check_prefix(self) -> None: ...

    # text (causal LMs generate, masked LMs fill masks; the other raises)
    def reply_samples(self, request: str, n: int, temperature: float, max_new_tokens: int, seed: int) -> list[str]: ...
    def fill_mask(self, text: str, which: int, k: int) -> list[str]: ...
