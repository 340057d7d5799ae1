"""The evaluator's fitting half: class priors (calibration: content-free inputs or the train inputs' mean)
and decision rules (a channel rule's temperature, a centroid rule's centroids) estimated on examples,
each charged to the budget. `Fitting` is a mixin of `Evaluator`, which provides what it declares."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TypeVar, cast

import torch
from torch import Tensor

from autoprompt.backends import ScoringModel
from autoprompt.errors import AutopromptError
from autoprompt.prompts import AnyPrompt, Calibration, Ensemble, Prompt, Rule
from autoprompt.scoring.budget import Budget
from autoprompt.scoring.metrics import Metric
from autoprompt.scoring.rules import forwards_per_example
from autoprompt.scoring.runner import BatchRunner
from autoprompt.scoring.scores import EvalResult, log_mean_prob
from autoprompt.tasks.base import Example, Task

#: a prompt or an ensemble, kept as given: calibrating or fitting a list of prompts returns prompts
P = TypeVar("P", bound=AnyPrompt)


class Fitting(ABC):
    """Calibration and decision-rule fitting over the evaluator's scores (see the module docstring)."""

    lm: ScoringModel
    task: Task
    budget: Budget | None
    metric: Metric
    runner: BatchRunner

    @abstractmethod
    def _score_singles(self, prompts: Sequence[Prompt], examples: Sequence[Example],
                       progress: bool) -> list[EvalResult]:
        """Class log-probs of single prompts (cached and charged): what priors are estimated from."""

    def content_free(self) -> list[Example]:
        """Zhao et al.'s content-free inputs: every field ``""``, ``"N/A"`` (and the mask token on a masked LM)."""
        return [Example({f: filler for f in self.task.fields}, 0) for filler in self.lm.content_free_texts()]

    def calibrate(self, prompts: Sequence[P], method: str, inputs: Sequence[Example] | None = None) -> list[P]:
        """The prompts with their class prior estimated and stored (`Calibration`); charges the budget.

        Args:
            prompts: prompts or ensembles (an ensemble's members are calibrated one by one).
            method: ``none`` (drop any calibration), ``contextual`` (content-free inputs) or
                ``prior`` (the mean class distribution over ``inputs``; their labels are not read).
            inputs: the train inputs for ``prior``.
        """
        Calibration(method)  # type: ignore[arg-type]  # validates the name
        singles = distinct_singles(prompts)
        if method == "none":
            done = {m.fingerprint: m.uncalibrated for m in singles}
        else:
            if not self.metric.calibratable:
                raise AutopromptError(f"calibration is for classification tasks; {self.task.name} is scored "
                                      "uncalibrated (LAMA ranks objects, generation has no classes): set "
                                      "`calibration` to none")
            if method == "prior" and not inputs:
                raise AutopromptError("calibration 'prior' needs the task's train inputs to estimate the class prior")
            examples = self.content_free() if method == "contextual" else list(inputs or ())
            raw = list({m.uncalibrated.fingerprint: m.uncalibrated for m in singles}.values())
            priors = {p.fingerprint: log_mean_prob(r.logprobs) for p, r in
                      zip(raw, self._score_singles(raw, examples, progress=False), strict=True)}
            done = {}
            for m in singles:
                log_prior = priors[m.uncalibrated.fingerprint]
                stored = dict(zip(self.task.labels, log_prior.tolist(), strict=True))
                done[m.fingerprint] = m.with_calibration(Calibration(method, stored))  # type: ignore[arg-type]
        return rebuilt(prompts, done)

    def fit_rule(self, prompts: Sequence[P], rule: Rule | str, examples: Sequence[Example] | None = None) -> list[P]:
        """The prompts read by ``rule`` (`Rule`), fitted where it needs data; charges the budget.

        A ``centroid`` rule's centroids and temperature, and a ``channel`` rule's temperature, are
        estimated on the labelled ``examples`` (the task's train); ``direct`` needs none. A prompt's
        calibration is dropped where its rule changes (its prior was estimated under the old rule):
        calibrate after fitting.
        """
        wanted = (rule if isinstance(rule, Rule) else Rule(rule)).unfitted()  # type: ignore[arg-type]
        singles = distinct_singles(prompts)
        done: dict[str, Prompt] = {}
        for m in singles:
            if m.rule == wanted or (m.rule.unfitted() == wanted and m.rule.fitted):
                done[m.fingerprint] = m  # already read this way (a fitted rule is kept)
                continue
            fresh = m.uncalibrated.with_rule(wanted)
            if not wanted.direct:
                fresh = self._fit(fresh, examples)
            done[m.fingerprint] = fresh
        return rebuilt(prompts, done)

    def fit_unfitted(self, prompt: AnyPrompt, examples: Sequence[Example]) -> AnyPrompt:
        """``prompt`` with every member's unfitted rule (a centroid rule's centroids, a channel rule's temperature)
        fitted on labelled ``examples`` (a prompt moved to another model); its calibration method is kept, its
        prior left to re-estimate."""
        members = prompt.members if isinstance(prompt, Ensemble) else (prompt,)
        fitted = tuple(m if m.rule.fitted else
                       self._fit(m.uncalibrated, examples).with_calibration(Calibration(m.calibration.method))
                       for m in members)
        return Ensemble(fitted, prompt.weights, prompt.meta) if isinstance(prompt, Ensemble) else fitted[0]

    def refit(self, prompt: P, examples: Sequence[Example]) -> P:
        """``prompt`` with every statistic it estimated from data re-estimated on ``examples``, every
        choice kept (template, label words, demonstrations, rule and its options, calibration method):
        a fitted rule's centroids, spread and temperature (labels read), then the class prior of a
        ``prior`` calibration (labels unused) or a ``contextual`` one (its content-free inputs, under the
        refitted rule). A member with nothing fitted is returned as it is; charges the budget."""
        done: dict[str, Prompt] = {}
        for m in distinct_singles([prompt]):
            if not fitted_parts(m):
                done[m.fingerprint] = m
                continue
            fresh = m.uncalibrated
            if not m.rule.direct and m.rule.fitted:
                fresh = self._fit(fresh.with_rule(m.rule.unfitted()), examples)
            done[m.fingerprint] = self.calibrate([fresh], m.calibration.method, examples)[0]
        return rebuilt([prompt], done)[0]

    def _fit(self, prompt: Prompt, examples: Sequence[Example] | None) -> Prompt:
        """``prompt`` with its rule fitted on labelled ``examples`` (charged): a centroid rule's centroids and
        temperature, a channel rule's temperature (without examples it scores at temperature 1)."""
        rule = prompt.rule
        soft = self.runner.soft(prompt)
        if rule.name == "channel":
            self.runner.rules.check(prompt, soft, self.metric.calibratable)
            if not examples:
                return prompt
        elif not self.metric.calibratable:
            raise AutopromptError(f"rule 'centroid' is for classification tasks; {self.task.name} is scored with "
                                  "rule direct")
        elif not examples:
            raise AutopromptError("rule 'centroid' needs labelled train examples to fit its class centroids")
        forwards = forwards_per_example(prompt, self.task.labels) * len(examples)
        if self.budget is not None:
            self.budget.require(forwards=forwards)
        demos = self.runner.demos_per_query(prompt, examples, self.budget)
        fitted = (self.runner.rules.fit_channel(prompt, examples, demos) if rule.name == "channel"
                  else self.runner.rules.fit(prompt, examples, demos, soft))
        if self.budget is not None:
            self.budget.charge(forwards=forwards)
        return prompt.with_rule(fitted)

    def channel_word_logliks(self, prompt: Prompt, examples: Sequence[Example]) -> Tensor:
        """``[N, W]`` each input's log-likelihood after each label word's prefix, the channel rule's raw
        score per word (the verbalizer's words in class order; length-normalised if the prompt's
        channel rule is); charged one example-forward per word and example. For a label-word search
        under ``channel``: which words make their class's inputs likely."""
        ruled = prompt if prompt.rule.name == "channel" else prompt.with_rule(Rule("channel"))
        self.runner.rules.check(ruled, self.runner.soft(ruled), self.metric.calibratable)
        forwards = forwards_per_example(ruled, self.task.labels) * len(examples)
        if self.budget is not None:
            self.budget.require(forwards=forwards)
        demos = self.runner.demos_per_query(ruled, examples, self.budget)
        scores, tokens = self.runner.rules.channel_scores(ruled, examples, demos, per_word=True)
        if self.budget is not None:
            self.budget.charge(forwards=forwards, tokens=tokens)
        return scores

    def log_prior(self, prompt: Prompt) -> Tensor:
        """``[C]`` the class log-prior a calibrated prompt divides out, in the task's label order."""
        cal = prompt.calibration
        if cal.log_prior is None:
            if cal.method == "prior":
                raise AutopromptError("the prompt has calibration 'prior' but no stored class prior; estimate it "
                                      "on train inputs first (Evaluator.calibrate)")
            cal = self.calibrate([prompt], cal.method)[0].calibration
        assert cal.log_prior is not None  # estimated just above when it was missing
        missing = [lab for lab in self.task.labels if lab not in cal.log_prior]
        if missing:
            raise AutopromptError(f"the prompt's calibration has no prior for the label(s) {missing}; "
                                  "re-estimate it for this task")
        return torch.tensor([cal.log_prior[lab] for lab in self.task.labels])


def fitted_parts(prompt: Prompt) -> list[str]:
    """What ``prompt`` estimated from data, which `Fitting.refit` estimates again: a rule's fit (a centroid
    rule's centroids, a channel rule's temperature) and an active calibration's prior."""
    return ([f"{prompt.rule.name} rule"] if not prompt.rule.direct and prompt.rule.fitted else []) + \
        ([f"{prompt.calibration.method} calibration"] if prompt.calibration.active else [])


def distinct_singles(prompts: Sequence[AnyPrompt]) -> list[Prompt]:
    """The distinct single prompts of ``prompts`` (an ensemble's members in its place), by fingerprint."""
    return list({m.fingerprint: m for q in prompts for m in (q.members if isinstance(q, Ensemble) else (q,))}.values())


def rebuilt(prompts: Sequence[P], done: dict[str, Prompt]) -> list[P]:
    """``prompts`` with each single prompt replaced by ``done[its fingerprint]`` (ensembles rebuilt around them)."""
    return [cast(P, Ensemble(tuple(done[m.fingerprint] for m in q.members), q.weights, q.meta))
            if isinstance(q, Ensemble) else cast(P, done[q.fingerprint]) for q in prompts]
