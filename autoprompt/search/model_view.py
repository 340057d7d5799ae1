"""`StrategyModel`: the frozen model as a strategy sees it (``ctx.lm``), and `ModelView`, which shows a
backend that way: read-only facts and encoding, nothing that runs the model or reaches its weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, cast

import torch
from torch import Tensor

from autoprompt.backends import Encoded, Kind, ScoringModel, WordTable
from autoprompt.prompts import Demonstration, Prompt, Template
from autoprompt.tasks.base import Example


class StrategyModel(Protocol):
    """The frozen model as a strategy sees it (``ctx.lm``): exactly what a strategy may call.

    Encoding, the tokenizer, vocabulary filters and embeddings, read-only; nothing here runs the model
    (its compute goes through the search context's metered operations, so the budget sees all of it).
    The embedding matrices share the frozen weights' storage: writing them fails the run (the core
    checks the weights' checksum after every search).
    """

    @property
    def kind(self) -> Kind: ...
    @property
    def name(self) -> str: ...
    @property
    def tokenizer(self) -> Any: ...
    @property
    def device(self) -> torch.device: ...
    @property
    def context_length(self) -> int: ...
    @property
    def max_length(self) -> int: ...
    @property
    def compute_dtype(self) -> str: ...  # what the search's steps compute in (``fp32`` or ``bf16``)
    @property
    def embed_scale(self) -> float: ...
    def tokenize(self, text: str) -> tuple[int, ...]: ...
    def decode(self, ids: Sequence[int]) -> str: ...
    def encode(self, prompt: Prompt, example: Example, demos: Sequence[Demonstration] | None = None) -> Encoded: ...
    def word_table(self, prompt: Prompt, labels: Sequence[str]) -> WordTable: ...
    def check_template(self, template: Template) -> None: ...
    def check_triggers(self, prompt: Prompt) -> None: ...
    def check_prefix(self) -> None: ...
    def prefix_shape(self, length: int) -> tuple[int, ...]: ...
    def embedding_matrix(self) -> Tensor: ...
    def input_embeddings(self, ids: Tensor) -> Tensor: ...
    def output_embedding_matrix(self) -> Tensor: ...
    def num_parameters(self) -> int: ...
    def word_start_tokens(self) -> Tensor: ...
    def stable_word_tokens(self) -> Tensor: ...


class ModelView:
    """`StrategyModel` over a backend: each member is delegated by name, nothing else is reachable (not
    the ``transformers`` module, not an operation that runs it), and nothing can be set."""

    _shown = frozenset(name for name in dir(StrategyModel) if not name.startswith("_"))

    def __init__(self, lm: ScoringModel) -> None:
        object.__setattr__(self, "_lm", lm)

    @staticmethod
    def of(lm: ScoringModel) -> StrategyModel:
        """``lm`` as strategies see it."""
        return cast(StrategyModel, ModelView(lm))

    def __getattr__(self, name: str) -> Any:
        if name not in ModelView._shown:
            raise AttributeError(f"strategies do not call the model's {name!r}: use the search context's "
                                 "metered operations (ctx.evaluator, ctx.ask(TriggerGradients), ...)")
        value = getattr(self._lm, name)
        return (lambda *a, **k: value(*a, **k).detach()) if name.endswith("embedding_matrix") else value

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("the model is read-only to strategies")
