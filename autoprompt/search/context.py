"""What a strategy sees: `SearchContext` (the splits, the budget, the evaluator, the metered model
operations) and, as ``ctx.lm``, the read-only `StrategyModel` (`autoprompt.search.model_view`).

The contract these serve is in `autoprompt.search.base`; the family-specific model operations are
capability objects (`autoprompt.search.capabilities`) a strategy asks for with `SearchContext.ask`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from autoprompt import events
from autoprompt.backends import ScoringModel
from autoprompt.prompts import DIRECT, AnyPrompt, Prompt, Rule
from autoprompt.scoring.budget import Budget
from autoprompt.scoring.evaluator import Evaluator
from autoprompt.scoring.fitting import P
from autoprompt.search.capabilities import C, Capability
from autoprompt.search.model_view import ModelView, StrategyModel
from autoprompt.search.selection import Objective, objective_score
from autoprompt.tasks.base import Example, Task


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
        self._capabilities: dict[type[Capability], Capability] = {}

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

    # ---- family-specific model operations: capability objects ---------------------------------

    def ask(self, capability: type[C]) -> C:
        """The metered model operations of one strategy family (`autoprompt.search.capabilities`), built
        once per search: ``ctx.ask(TriggerGradients).trigger_gradient(prompt, batch)``. A new family
        brings its own `Capability` subclass; the context does not grow."""
        made = self._capabilities.get(capability)
        if made is None:
            made = self._capabilities[capability] = capability(self._backend, self.budget, self.task, self.evaluator)
        return cast(C, made)
