"""What a strategy sees: `SearchContext` (the splits, the budget, the metered model operations) and
`StrategyModel`, the read-only view of the frozen model it gets as ``ctx.lm`` (`ModelView`).

The contract these serve is in `autoprompt.search.base`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import torch
from torch import Tensor

from autoprompt import events
from autoprompt.backends import Encoded, Kind, ScoringModel, WordTable, full_model, gradient_model
from autoprompt.backends.store import load_model
from autoprompt.errors import AutopromptError
from autoprompt.prompts import DIRECT, AnyPrompt, Demonstration, Prompt, Rule, Template
from autoprompt.prompts.soft import SoftPrompt
from autoprompt.scoring.budget import Budget
from autoprompt.scoring.evaluator import Evaluator
from autoprompt.scoring.fitting import P
from autoprompt.search.selection import Objective, objective_score
from autoprompt.tasks.base import Example, Task


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
                                 "metered operations (ctx.evaluator, ctx.trigger_gradient, ...)")
        value = getattr(self._lm, name)
        return (lambda *a, **k: value(*a, **k).detach()) if name.endswith("embedding_matrix") else value

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("the model is read-only to strategies")


@dataclass
class SearchContext:
    """Everything a strategy may use. There is no ``test`` here, by design.

    Attributes:
        lm: the frozen model, as a read-only `ModelView` (its compute goes through the methods here).
        task: labels, metric and the default manual prompt.
        train: examples to search on.
        dev: examples to select on.
        evaluator: the shared scorer; it charges ``budget``.
        budget: example-forwards (and backwards) left.
        seed: the search seed.
        report: call with a dict to add fields to the current step's trace line.
        warn: call with a message for the user (shown, and kept in the trace and the result).
        step_index: the step being taken (the run loop sets it).
        calibration: how prompts are calibrated in this search (`calibrate` applies it).
        objective: what candidates are compared on (`objective_scores`).
        warm_start: a prompt to build on instead of the task's manual prompt (`start`).
        rule: the decision rule `calibrate` gives every prompt (fitted on the same inputs).
    """

    lm: StrategyModel
    task: Task
    train: list[Example]
    dev: list[Example]
    evaluator: Evaluator
    budget: Budget
    seed: int
    report: Callable[[dict[str, Any]], None] = lambda info: None
    warn: Callable[[str], None] = events.warn
    step_index: int = 0
    calibration: str = "none"
    objective: Objective = "margin"
    warm_start: Prompt | None = None
    rule: Rule = DIRECT

    def __post_init__(self) -> None:
        # the backend itself stays private: a strategy reaches its compute only through the metered methods
        self._backend: ScoringModel = self.lm._lm if isinstance(self.lm, ModelView) else cast(ScoringModel, self.lm)
        self.lm = ModelView.of(self._backend)

    @property
    def start(self) -> Prompt:
        """The prompt the search builds on: the warm start if one was given, else the task's manual
        prompt. A strategy changes the parts it `Searcher.searches` and keeps the others."""
        return self.warm_start if self.warm_start is not None else self.task.default_prompt

    def calibrate(self, prompts: Sequence[P], inputs: Sequence[Example] | None = None) -> list[P]:
        """The prompts read by this search's decision rule, with its calibration estimated and attached
        (charged to the budget).

        ``centroid`` fits its class centroids on ``inputs`` (default: all train examples; labels used);
        ``prior`` estimates the class prior on the same inputs (labels unused).
        """
        inputs = inputs if inputs is not None else self.train
        return self.evaluator.calibrate(self.evaluator.fit_rule(prompts, self.rule, inputs), self.calibration, inputs)

    def objective_scores(self, prompts: Sequence[AnyPrompt], examples: Sequence[Example]) -> list[float]:
        """The selection objective of each prompt on ``examples``, scored as one batched job."""
        return [objective_score(r, self.objective) for r in self.evaluator.score_many(prompts, examples)]

    @property
    def budget_left(self) -> float:
        """Example-forwards the budget still pays for (``inf`` without a limit)."""
        return self.budget.remaining

    def rng(self, step: int | None = None) -> random.Random:
        """A generator seeded by (seed, step): the same draws after a resume."""
        step = self.step_index if step is None else step
        return random.Random(f"{self.seed}:{step}")

    def sample(self, examples: Sequence[Example], k: int, salt: str = "", fixed: bool = False) -> list[Example]:
        """``k`` examples drawn without replacement (all of them if ``k`` >= their number).

        A new draw each step, or with ``fixed`` the same draw in every step of the run.
        """
        if k >= len(examples):
            return list(examples)
        step = "fixed" if fixed else self.step_index
        return random.Random(f"{self.seed}:{step}:{salt}").sample(list(examples), k)

    # ---- metered model operations: each pays for itself before it runs ---------------------------

    def trigger_gradient(self, prompt: Prompt, examples: Sequence[Example]) -> tuple[Tensor, float]:
        """Gradient ``[T, H]`` of the mean gold-label loss w.r.t. the trigger embeddings, and the loss
        (`LanguageModel.trigger_gradient`); one backward per example."""
        lm = self._backend
        grads = gradient_model(lm, "compute trigger gradients")
        with self.budget.paying(backwards=len(examples)):
            return grads.trigger_gradient([lm.encode(prompt, ex) for ex in examples],
                                          lm.word_table(prompt, self.task.labels), [ex.label for ex in examples])

    def trigger_nll(self, encoded: Sequence[Encoded]) -> Tensor:
        """``[B]`` fluency of each row's triggers (`LanguageModel.trigger_nll`), at the backend's cost."""
        lm = gradient_model(self._backend, "score the triggers' fluency")
        with self.budget.paying(forwards=lm.trigger_nll_cost(encoded)):
            return lm.trigger_nll(encoded)

    def slot_features(self, encoded: Sequence[Encoded], batch_size: int = 32) -> tuple[Tensor, Tensor]:
        """``(hidden [N, H], vocabulary log-probs [N, V])`` at the prediction slot, on the CPU
        (`LanguageModel.slot_features`); one forward per example."""
        lm = gradient_model(self._backend, "read hidden states")
        hidden, logprobs = [], []
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start : start + batch_size]
            with self.budget.paying(forwards=len(chunk)):
                h, logp = lm.slot_features(chunk)
            hidden.append(h.cpu())
            logprobs.append(logp.cpu())
        return torch.cat(hidden), torch.cat(logprobs)

    def word_logprobs(self, encoded: Sequence[Encoded], words: WordTable, batch_size: int = 32) -> Tensor:
        """``[N, C]`` log-probs of ``words`` (``C`` classes of words) at the slot, on the CPU; one
        forward per example for the whole table."""
        with self.budget.paying(forwards=len(encoded)):
            return torch.cat([self._backend.label_logprobs(encoded[b : b + batch_size], words).logprobs.cpu()
                              for b in range(0, len(encoded), batch_size)])

    def soft_logprobs(self, encoded: Sequence[Encoded], words: WordTable, soft: SoftPrompt,
                      tasks: Sequence[str] = ()) -> Tensor:
        """Class log-probs ``[B, C]`` that keep the graph to ``soft``'s tensors, for one training step
        (`LanguageModel.soft_logprobs`); one forward and one backward per example.

        A soft prompt with per-task parts scores each row with its member's part: ``tasks`` names
        each row's member task (`Example.task`).
        """
        lm = gradient_model(self._backend, "train soft prompts")
        with self.budget.paying(forwards=len(encoded), backwards=len(encoded)):
            if not soft.tasks:
                return lm.soft_logprobs(encoded, words, soft)
            if len(tasks) != len(encoded):
                raise AutopromptError("a soft prompt with per-task parts needs each row's member task (`tasks`)")
            order: list[int] = []
            parts = []
            for name in dict.fromkeys(tasks):
                rows = [i for i, t in enumerate(tasks) if t == name]
                parts.append(lm.soft_logprobs([encoded[i] for i in rows], words, soft.for_task(name)))
                order += rows
            return torch.cat(parts)[torch.tensor(order, device=parts[0].device).argsort()]   # [B, C] in row order

    def target_logprobs(self, encoded: Sequence[Encoded], targets: Sequence[Sequence[Sequence[int]]],
                        soft: SoftPrompt) -> list[Tensor]:
        """Per row, ``[R]`` summed log-probs of its reference token ids after its prompt, keeping the
        graph to ``soft`` (a generation task's training step); one forward and one backward per reference."""
        refs = sum(len(t) for t in targets)
        if self.evaluator.generation is None:
            raise AutopromptError(f"task {self.task.name} has no reference texts; target_logprobs is for generation")
        with self.budget.paying(forwards=refs, backwards=refs):
            return self.evaluator.generation.training_logprobs(encoded, targets, soft)

    def prefix_from_text(self, ids: Sequence[int]) -> Tensor:
        """The keys and values ``[L, 2, K, P, D]`` the model computes for token ``ids`` (a deep prefix's
        initialisation, `CausalLM.prefix_from_text`); one example-forward."""
        make = getattr(self._backend, "prefix_from_text", None)
        if make is None:
            raise AutopromptError(f"{self._backend.name} ({self._backend.kind} LM) cannot compute a key/value prefix: "
                                  "a deep prefix needs a causal LM")
        with self.budget.paying(forwards=1):
            return cast(Tensor, make(ids))

    def references(self, prompt: Prompt, example: Example) -> list[tuple[int, ...]]:
        """A generation example's reference token ids as scored after ``prompt`` (EOS last)."""
        if self.evaluator.generation is None:
            raise AutopromptError(f"task {self.task.name} has no reference texts")
        return self.evaluator.generation.references(prompt, example)

    def other_model(self, name: str | None) -> StrategyModel:
        """``lm`` (``None``) or another frozen model by name, loaded once per process (a paraphraser),
        read-only like ``lm``; its compute goes through `generate` and `fill_masks`."""
        return ModelView.of(self._model(name))

    def _model(self, name: str | None) -> ScoringModel:
        if name is None:
            return self._backend
        if name not in _other_models:
            _other_models[name] = load_model(name)
        return _other_models[name]

    def generate(self, model: str | None, requests: Sequence[tuple[str, int]], n: int, temperature: float,
                 max_new_tokens: int = 40) -> list[list[str]]:
        """``n`` sampled replies to each ``(request, seed)`` from the causal model ``model`` (a name for
        `other_model`; ``None``: ``lm``).

        Charged ``n`` example-forwards per call, the unit paraphrase rounds have always been
        budgeted in (one set of rewrites of one template, whatever the number of requests).
        """
        gen = full_model(self._model(model), "generate text")
        with self.budget.paying(forwards=n):
            return [gen.reply_samples(text, n, temperature, max_new_tokens, seed) for text, seed in requests]

    def fill_masks(self, model: str | None, jobs: Sequence[tuple[str, int]], k: int) -> list[list[str]]:
        """The ``k`` top whole words at mask ``which`` of each ``(text, which)``, from the masked model
        ``model`` (a name for `other_model`; ``None``: ``lm``); one example-forward per job."""
        filler = full_model(self._model(model), "fill masks")
        with self.budget.paying(forwards=len(jobs)):
            return [filler.fill_mask(text, which, k) for text, which in jobs]


_other_models: dict[str, ScoringModel] = {}  # models strategies use besides the scored one, by name
