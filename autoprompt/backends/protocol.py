"""What the evaluator and the strategies may ask of a frozen LM, by capability, and its value types.

`ScoringModel` is what every backend provides (a fake backend for a test, an API or server model is a
short class with its members); `GradientModel` and `TextModel` are capabilities on top, and
`LanguageModel` is all three, as `FrozenLM` implements them on ``transformers`` models (`MaskedLM`,
`CausalLM`). Backends are found by `autoprompt.backends.registry`.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor

from autoprompt.errors import AutopromptError
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


@runtime_checkable
class ScoringModel(Protocol):
    """The least a backend is: a frozen LM that scores discrete prompts (label words at ``[P]``).

    Enough for the evaluator on classification and ranking tasks and for strategies that only score
    prompts (``manual``, ``random``, ``demos``, ``rule`` with ``direct``). A backend that can do more
    also implements `GradientModel` and `TextModel`; asking a scoring-only backend for those is a
    one-line error naming the capability (`full_model`, `gradient_model`).
    """

    # read-only facts: a class attribute, an instance attribute or a property each meets them
    @property
    def kind(self) -> Kind:
        """``masked`` (``[P]`` is a mask token) or ``causal`` (``[P]`` is the next token)."""
    @property
    def name(self) -> str:
        """What results record as the model."""
    @property
    def device(self) -> torch.device:
        """Where its tensors live (the precision setting reads it)."""
    @property
    def max_length(self) -> int:
        """Inputs are truncated to this many tokens."""
    @property
    def context_length(self) -> int:
        """The most tokens one forward may hold (demonstrations must fit)."""
    @property
    def shares_prefix(self) -> bool:
        """Whether it implements `TextModel.label_logprobs_shared` (runs shared prefixes once)."""
    @property
    def licence(self) -> str | None:
        """The weights' licence where known, recorded in results."""

    def tokenize(self, text: str) -> tuple[int, ...]:
        """Token ids of ``text`` (no special tokens)."""
    def decode(self, ids: Sequence[int]) -> str:
        """The text of token ``ids``."""
    def encode(self, prompt: Prompt, example: Example, demos: Sequence[Demonstration] | None = None) -> Encoded:
        """``example`` under ``prompt`` (with ``demos`` in front) as token ids with the prediction slot marked."""
    def word_table(self, prompt: Prompt, labels: Sequence[str]) -> WordTable:
        """Per class, per label word: the token ids the word is scored as at ``[P]``; raises on a word it
        cannot hold."""
    def check_template(self, template: Template) -> None:
        """Raise `AutopromptError` where this model cannot read ``template`` (a causal LM needs ``[P]`` last)."""
    def check_triggers(self, prompt: Prompt) -> None:
        """Raise `AutopromptError` where ``prompt``'s trigger ids are not tokens of this model."""
    def content_free_texts(self) -> list[str]:
        """Inputs that carry no content (contextual calibration): ``""``, ``"N/A"``, ..."""
    def label_logprobs(self, batch: Sequence[Encoded], words: WordTable, gold: Sequence[int] | None = None,
                       soft: SoftPrompt | None = None) -> Scores:
        """``[B, C]`` class log-probs of each row (its words' log-probs at the slot, merged per class)."""
    def weights_checksum(self) -> str:
        """A checksum of every weight: the core compares it before and after each search."""
    def computing_in(self, dtype: str) -> AbstractContextManager[None]:
        """A context in which forwards compute in ``dtype`` (``fp32``, ``bf16``); a backend without bf16 keeps fp32."""


@runtime_checkable
class GradientModel(Protocol):
    """Capability: the model's tensors — embeddings, gradients, hidden states, soft prompts (`FrozenLM`)."""

    model: torch.nn.Module
    tokenizer: Any

    def embedding_matrix(self) -> Tensor:
        """``[V, H]`` the input embeddings (the frozen weights' storage)."""
    def input_embeddings(self, ids: Tensor) -> Tensor:
        """``[..., H]`` what the first layer receives for ``ids`` (rows times `embed_scale`)."""
    @property
    def embed_scale(self) -> float:
        """The factor the model multiplies embedding rows by."""
    def output_embedding_matrix(self) -> Tensor:
        """``[V, H]`` the LM head's weight."""
    def num_parameters(self) -> int:
        """How many weights the backbone has."""
    def word_start_tokens(self) -> Tensor:
        """``[V]`` bool: tokens that start a word."""
    def stable_word_tokens(self) -> Tensor:
        """``[V]`` bool: whole words that decode and re-encode to themselves."""
    def soft_logprobs(self, batch: Sequence[Encoded], words: WordTable, soft: SoftPrompt) -> Tensor:
        """``[B, C]`` class log-probs keeping the graph to ``soft``'s tensors (a training step)."""
    def trigger_gradient(self, batch: Sequence[Encoded], words: WordTable,
                         gold: Sequence[int]) -> tuple[Tensor, float]:
        """``([T, H], loss)``: the mean gold-label loss's gradient w.r.t. the trigger embeddings."""
    def trigger_nll(self, batch: Sequence[Encoded]) -> Tensor:
        """``[B]`` each row's triggers' mean negative log-likelihood given the text before them."""
    def trigger_nll_cost(self, batch: Sequence[Encoded]) -> int:
        """Example-forwards `trigger_nll` costs on ``batch``."""
    def slot_features(self, batch: Sequence[Encoded]) -> tuple[Tensor, Tensor]:
        """``(hidden [B, H], vocabulary log-probs [B, V])`` at the prediction slot."""
    def head_features(self, batch: Sequence[Encoded], soft: SoftPrompt | None = None) -> Tensor:
        """``[B, H + 1]`` what the LM head reads at the slot, with a 1 for a bias (a linear head's input)."""
    def sentence_embeddings(self, texts: Sequence[Sequence[int]]) -> Tensor:
        """``[N, H]`` mean-pooled hidden states (KATE's retrieval of similar demonstrations)."""
    def check_prefix(self) -> None:
        """Raise where a key/value prefix cannot be passed to this model."""
    def prefix_shape(self, length: int) -> tuple[int, ...]:
        """``[L, 2, K, length, D]``: the shape of a key/value prefix of ``length`` positions."""


@runtime_checkable
class TextModel(Protocol):
    """Capability: reading and writing text beyond one slot — shared prefixes, the noisy channel,
    sampling (causal LMs) and mask filling (masked LMs); the other kind raises."""

    def encode_channel(self, prompt: Prompt, example: Example, labels: Sequence[str],
                       demos: Sequence[Demonstration] | None = None) -> ChannelEncoded:
        """``example`` under a channel prompt: a prefix per class and word, and the input as the query."""
    def label_logprobs_shared(self, prefixes: Sequence[Sequence[int]], suffixes: Sequence[Sequence[Sequence[int]]],
                              words: WordTable, gold: Sequence[int] | None = None) -> Scores:
        """As `ScoringModel.label_logprobs` for many prompts that share each row's prefix (run once)."""
    def label_logprobs_prefixed(self, prefix: Sequence[int], suffixes: Sequence[Sequence[int]], words: WordTable,
                                gold: Sequence[int] | None = None, rows: int = 32) -> Scores:
        """As `ScoringModel.label_logprobs` for many inputs after one shared ``prefix`` (run once)."""
    def continuation_logliks(self, prefix: Sequence[int], suffixes: Sequence[Sequence[int]]) -> Tensor:
        """``[N]`` summed log-likelihood of each suffix after ``prefix``."""
    def reply_samples(self, request: str, n: int, temperature: float, max_new_tokens: int, seed: int) -> list[str]:
        """``n`` sampled replies to a chat ``request`` (causal LMs)."""
    def fill_mask(self, text: str, which: int, k: int) -> list[str]:
        """The ``k`` top whole words at mask ``which`` of ``text`` (masked LMs)."""


@runtime_checkable
class LanguageModel(ScoringModel, GradientModel, TextModel, Protocol):
    """A frozen LM with every capability, as `FrozenLM` implements it on ``transformers`` models."""


def full_model(lm: ScoringModel, what: str) -> LanguageModel:
    """``lm`` with every capability, or a one-line error saying that it cannot do ``what``."""
    if isinstance(lm, LanguageModel):
        return lm
    raise _lacks(lm, "LanguageModel", what)


def gradient_model(lm: ScoringModel, what: str) -> GradientModel:
    """``lm`` as a `GradientModel`, or a one-line error saying that it cannot do ``what``."""
    if isinstance(lm, GradientModel):
        return lm
    raise _lacks(lm, "GradientModel", what)


def _lacks(lm: ScoringModel, capability: str, what: str) -> AutopromptError:
    return AutopromptError(f"model {lm.name} only scores discrete prompts; it cannot {what} (that needs a backend "
                           f"with the {capability} capability, e.g. a transformers model)")
