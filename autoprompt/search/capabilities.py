"""Family-specific model operations as small capability objects a strategy asks for.

Every strategy shares the evaluator (``ctx.evaluator``); what only one family needs lives here,
one class per family, built once per search by `SearchContext.ask`:

* `TriggerGradients` — AutoPrompt-style trigger search: gradients w.r.t. trigger embeddings, the
  triggers' fluency.
* `SlotReadout` — label-word search: hidden states and vocabulary log-probs at ``[P]``, class
  scores of arbitrary word tables.
* `SoftTraining` — continuous prompts: differentiable class and reference log-probs, a key/value
  prefix computed from text.
* `TextWriting` — template rewriting: another model by name, sampled replies, filled masks.

The rule each method keeps (and a new capability must keep): it pays for itself before it runs
(``budget.paying``), so the budget sees all compute, and it never writes the backbone. A family
with new needs subclasses `Capability`; neither the context nor the core changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar, cast

import torch
from torch import Tensor

from autoprompt.backends import Encoded, ScoringModel, WordTable, full_model, gradient_model
from autoprompt.backends.store import load_model
from autoprompt.errors import AutopromptError
from autoprompt.prompts import Prompt
from autoprompt.prompts.soft import SoftPrompt
from autoprompt.scoring.budget import Budget
from autoprompt.scoring.evaluator import Evaluator
from autoprompt.search.model_view import ModelView, StrategyModel
from autoprompt.tasks.base import Example, Task


class Capability:
    """Metered model operations of one strategy family (see the module docstring for the rule).

    Args:
        model: the search's backend (private to capabilities: strategies see `StrategyModel`).
        budget: the search's budget; every operation charges it before running.
        task: the task searched.
        evaluator: the search's shared scorer (its generation scorer, where the task generates).
    """

    def __init__(self, model: ScoringModel, budget: Budget, task: Task, evaluator: Evaluator) -> None:
        self._model = model
        self._budget = budget
        self._task = task
        self._evaluator = evaluator


C = TypeVar("C", bound=Capability)


class TriggerGradients(Capability):
    """Gradients for trigger search, and the triggers' fluency."""

    def trigger_gradient(self, prompt: Prompt, examples: Sequence[Example]) -> tuple[Tensor, float]:
        """Gradient ``[T, H]`` of the mean gold-label loss w.r.t. the trigger embeddings, and the loss
        (`GradientModel.trigger_gradient`); one backward per example."""
        lm = self._model
        grads = gradient_model(lm, "compute trigger gradients")
        with self._budget.paying(backwards=len(examples)):
            return grads.trigger_gradient([lm.encode(prompt, ex) for ex in examples],
                                          lm.word_table(prompt, self._task.labels), [ex.label for ex in examples])

    def trigger_nll(self, encoded: Sequence[Encoded]) -> Tensor:
        """``[B]`` fluency of each row's triggers (`GradientModel.trigger_nll`), at the backend's cost."""
        lm = gradient_model(self._model, "score the triggers' fluency")
        with self._budget.paying(forwards=lm.trigger_nll_cost(encoded)):
            return lm.trigger_nll(encoded)


class SlotReadout(Capability):
    """What the model says at the prediction slot, beyond the prompt's own label words."""

    def slot_features(self, encoded: Sequence[Encoded], batch_size: int = 32) -> tuple[Tensor, Tensor]:
        """``(hidden [N, H], vocabulary log-probs [N, V])`` at the prediction slot, on the CPU
        (`GradientModel.slot_features`); one forward per example."""
        lm = gradient_model(self._model, "read hidden states")
        hidden, logprobs = [], []
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start : start + batch_size]
            with self._budget.paying(forwards=len(chunk)):
                h, logp = lm.slot_features(chunk)
            hidden.append(h.cpu())
            logprobs.append(logp.cpu())
        return torch.cat(hidden), torch.cat(logprobs)

    def word_logprobs(self, encoded: Sequence[Encoded], words: WordTable, batch_size: int = 32) -> Tensor:
        """``[N, C]`` log-probs of ``words`` (``C`` classes of words) at the slot, on the CPU; one
        forward per example for the whole table."""
        with self._budget.paying(forwards=len(encoded)):
            return torch.cat([self._model.label_logprobs(encoded[b : b + batch_size], words).logprobs.cpu()
                              for b in range(0, len(encoded), batch_size)])


class SoftTraining(Capability):
    """Differentiable scores for training continuous prompts (the backbone stays frozen)."""

    def soft_logprobs(self, encoded: Sequence[Encoded], words: WordTable, soft: SoftPrompt,
                      tasks: Sequence[str] = ()) -> Tensor:
        """Class log-probs ``[B, C]`` that keep the graph to ``soft``'s tensors, for one training step
        (`GradientModel.soft_logprobs`); one forward and one backward per example.

        A soft prompt with per-task parts scores each row with its member's part: ``tasks`` names
        each row's member task (`Example.task`).
        """
        lm = gradient_model(self._model, "train soft prompts")
        with self._budget.paying(forwards=len(encoded), backwards=len(encoded)):
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
        generation = self._evaluator.generation
        if generation is None:
            raise AutopromptError(f"task {self._task.name} has no reference texts; target_logprobs is for generation")
        with self._budget.paying(forwards=refs, backwards=refs):
            return generation.training_logprobs(encoded, targets, soft)

    def prefix_from_text(self, ids: Sequence[int]) -> Tensor:
        """The keys and values ``[L, 2, K, P, D]`` the model computes for token ``ids`` (a deep prefix's
        initialisation, `CausalLM.prefix_from_text`); one example-forward."""
        make = getattr(self._model, "prefix_from_text", None)
        if make is None:
            raise AutopromptError(f"{self._model.name} ({self._model.kind} LM) cannot compute a key/value prefix: "
                                  "a deep prefix needs a causal LM")
        with self._budget.paying(forwards=1):
            return cast(Tensor, make(ids))

    def references(self, prompt: Prompt, example: Example) -> list[tuple[int, ...]]:
        """A generation example's reference token ids as scored after ``prompt`` (EOS last); runs nothing."""
        generation = self._evaluator.generation
        if generation is None:
            raise AutopromptError(f"task {self._task.name} has no reference texts")
        return generation.references(prompt, example)


class TextWriting(Capability):
    """Text from a model (the scored one or another, by name): rewrites of templates."""

    def other_model(self, name: str | None) -> StrategyModel:
        """The scored model (``None``) or another frozen model by name, loaded once per process (a
        paraphraser), read-only like ``ctx.lm``; its compute goes through `generate` and `fill_masks`."""
        return ModelView.of(self._named(name))

    def generate(self, model: str | None, requests: Sequence[tuple[str, int]], n: int, temperature: float,
                 max_new_tokens: int = 40) -> list[list[str]]:
        """``n`` sampled replies to each ``(request, seed)`` from the causal model ``model`` (a name for
        `other_model`; ``None``: the scored model).

        Charged ``n`` example-forwards per call, the unit paraphrase rounds have always been
        budgeted in (one set of rewrites of one template, whatever the number of requests).
        """
        gen = full_model(self._named(model), "generate text")
        with self._budget.paying(forwards=n):
            return [gen.reply_samples(text, n, temperature, max_new_tokens, seed) for text, seed in requests]

    def fill_masks(self, model: str | None, jobs: Sequence[tuple[str, int]], k: int) -> list[list[str]]:
        """The ``k`` top whole words at mask ``which`` of each ``(text, which)``, from the masked model
        ``model`` (a name for `other_model`; ``None``: the scored model); one example-forward per job."""
        filler = full_model(self._named(model), "fill masks")
        with self._budget.paying(forwards=len(jobs)):
            return [filler.fill_mask(text, which, k) for text, which in jobs]

    def _named(self, name: str | None) -> ScoringModel:
        if name is None:
            return self._model
        if name not in _other_models:
            _other_models[name] = load_model(name)
        return _other_models[name]


_other_models: dict[str, ScoringModel] = {}  # models strategies use besides the scored one, by name
