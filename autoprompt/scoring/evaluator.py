"""The one batched scorer every strategy uses, and the `Budget` it charges.

`Evaluator.score_many` takes several prompts and one list of examples, encodes every
(prompt, example) pair, sorts the pairs by length into buckets (so a batch pads only to its own
longest row), runs each bucket through the frozen backend under ``torch.inference_mode()``, and
scatters the class log-probs back. Results are cached by (prompt fingerprint, examples hash);
a cached result costs no budget.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from autoprompt.backends import Encoded, LanguageModel, ScoringModel, full_model
from autoprompt.backends.decoding import Decoding
from autoprompt.errors import AutopromptError
from autoprompt.prompts import AnyPrompt, Ensemble, Prompt
from autoprompt.prompts.soft import SoftPrompt
from autoprompt.scoring.budget import Budget
from autoprompt.scoring.fitting import Fitting, distinct_singles
from autoprompt.scoring.generation import GenerationScorer
from autoprompt.scoring.rules import RuleScorer, forwards_per_example
from autoprompt.scoring.runner import BatchRunner
from autoprompt.scoring.scores import EvalResult, calibrate_logprobs
from autoprompt.tasks.base import Example, Task, examples_fingerprint


class Evaluator(Fitting):
    """Scores prompts of one task on a frozen LM.

    Args:
        lm: the frozen backend.
        task: the task (labels and metric).
        batch_size: most examples per forward.
        max_tokens: most padded tokens per forward (bounds memory on long inputs).
        budget: charged one example-forward per (prompt, example) scored; None: not counted.
        cache: reuse results of prompts already scored on the same examples.
        majority_label: LAMA's "always the most common object" baseline class.
        shared_prefix: on causal LMs, run the part of an input that several prompts share once
            and only the rest per prompt (trigger candidates differ after the input text).
        decoding: how a generation task's outputs are generated (default: greedy, 64 new tokens).
    """

    def __init__(self, lm: ScoringModel, task: Task, batch_size: int = 32, max_tokens: int = 8192,
                 budget: Budget | None = None, cache: bool = True, majority_label: int | None = None,
                 shared_prefix: bool = True, decoding: Decoding | None = None) -> None:
        if batch_size < 1:
            raise AutopromptError(f"batch size must be at least 1, got {batch_size}")
        self.lm = lm
        self.task = task
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.budget = budget
        self.majority_label = majority_label
        self.metric = task.kind_spec.metric(task.metric)
        shared_prefix = shared_prefix and lm.shares_prefix and isinstance(lm, LanguageModel)
        self._cache: dict[tuple[str, str], EvalResult] | None = {} if cache else None
        # (prompt, examples) keys already charged to the budget: a resumed search restores this
        # set, so recomputing what the cache lost costs nothing, as it did before the interruption
        self.paid: set[tuple[str, str]] = set()
        self.stats: Counter[str] = Counter()  # real/padded tokens and batches, for benchmarks
        self.runner = BatchRunner(lm, task, batch_size, max_tokens, self.metric.ranks_gold, self.metric.calibratable,
                                  shared_prefix, self.stats)
        self.decoding = decoding or Decoding()
        # a generation task is scored by decoding and references, not label words
        self.generation = (GenerationScorer(full_model(lm, "score a generation task"), task, batch_size,
                                            max_tokens, budget, self.decoding, self._generation_soft, self.stats,
                                            self.paid, cache) if task.is_generation else None)

    def score(self, prompt: AnyPrompt, examples: Sequence[Example], progress: bool = False) -> EvalResult:
        """Score one prompt or ensemble (see `score_many`)."""
        return self.score_many([prompt], examples, progress)[0]

    def score_many(self, prompts: Sequence[AnyPrompt], examples: Sequence[Example],
                   progress: bool = False) -> list[EvalResult]:
        """Score several prompts (or ensembles) on the same examples as one batched job.

        An ensemble's members are scored like any prompt (and charged once each); its class
        log-probs are their weighted mean.

        On a generation task each prompt's outputs are decoded and scored against the references
        (`GenerationScorer`).

        Raises:
            AutopromptError: no examples, or a prompt that does not fit the task or model.
            BudgetExhausted: the budget cannot pay for the uncached prompts.
        """
        if self.generation is not None:
            ruled = [m.rule.name for m in distinct_singles(prompts) if not m.rule.direct]
            if ruled:
                raise AutopromptError(f"rule {ruled[0]!r} reads class scores; a generation task's outputs are decoded: "
                                      "use rule direct")
            self.generation.budget = self.budget  # the core may lift the budget after a search
            return self.generation.score_many(prompts, examples, progress)
        singles = distinct_singles(prompts)
        # a calibrated prompt is its uncalibrated twin's scores with the class prior divided out
        raw = list({p.uncalibrated.fingerprint: p.uncalibrated for p in singles}.values())
        raw_scored = dict(zip([p.fingerprint for p in raw], self._score_singles(raw, examples, progress),
                              strict=True))
        labels = torch.tensor([ex.label for ex in examples])
        scored = {}
        for p in singles:
            base = raw_scored[p.uncalibrated.fingerprint]
            if p.calibration.active:
                calibrated = calibrate_logprobs(base.logprobs, self.log_prior(p))
                base = self._result(p, (calibrated, base.top_token), labels)
            scored[p.fingerprint] = base
        out = []
        for q in prompts:
            if isinstance(q, Ensemble):
                members = [scored[m.fingerprint] for m in q.members]
                logprobs = sum((w * r.logprobs for w, r in zip(q.weights, members, strict=True)),
                               torch.zeros_like(members[0].logprobs))
                heaviest = members[max(range(len(q.weights)), key=q.weights.__getitem__)]
                out.append(self._result(q, (logprobs, heaviest.top_token), labels))
            else:
                out.append(scored[q.fingerprint])
        return out

    def _score_singles(self, prompts: Sequence[Prompt], examples: Sequence[Example],
                       progress: bool) -> list[EvalResult]:
        if not examples:
            raise AutopromptError("nothing to score: the example list is empty (check `limit` and the split)")
        data_key = examples_fingerprint(examples)
        results: list[EvalResult | None] = [None] * len(prompts)
        todo = []
        for i, prompt in enumerate(prompts):
            hit = self._cache.get((prompt.fingerprint, data_key)) if self._cache is not None else None
            if hit is not None:
                results[i] = hit
            else:
                todo.append(i)
        if todo:
            unpaid = [i for i in todo if (prompts[i].fingerprint, data_key) not in self.paid]
            forwards = sum(forwards_per_example(prompts[i], self.task.labels) for i in unpaid) * len(examples)
            if self.budget is not None:
                self.budget.require(forwards=forwards)
            logprobs, tokens = self.runner.run([prompts[i] for i in todo], examples, progress, self.budget)
            labels = torch.tensor([ex.label for ex in examples])
            for k, i in enumerate(todo):
                result = self._result(prompts[i], logprobs[k], labels)
                results[i] = result
                if self._cache is not None:
                    self._cache[(prompts[i].fingerprint, data_key)] = result
            if self.budget is not None:
                self.budget.charge(forwards=forwards,
                                   tokens=sum(tokens[k] for k, i in enumerate(todo) if i in unpaid))
            self.paid.update((prompts[i].fingerprint, data_key) for i in unpaid)
        return results  # type: ignore[return-value]

    def cached(self) -> list[dict[str, Any]]:
        """Every cached class-scored result as plain values and tensors.

        A search's checkpoint keeps them, so a resumed search reads back the numbers it scored
        before the interruption instead of scoring them again in other batches, which differ in the
        last float bits (and so would move a calibration prior or a selection statistic)."""
        if self._cache is None:
            return []
        return [{"key": list(key), "metric": r.metric, "score": r.score, "logprobs": r.logprobs, "labels": r.labels,
                 "extra": r.extra, **({"top_token": r.top_token} if r.top_token is not None else {})}
                for key, r in self._cache.items()]

    def restore_cached(self, entries: Sequence[Mapping[str, Any]]) -> None:
        """Put back what `cached` returned."""
        if self._cache is None:
            return
        for e in entries:
            self._cache[(e["key"][0], e["key"][1])] = EvalResult(
                e["metric"], e["score"], e["logprobs"], e["labels"], dict(e["extra"]), top_token=e.get("top_token"))

    @property
    def rules(self) -> RuleScorer:
        """The channel and centroid decision rules (`BatchRunner.rules`)."""
        return self.runner.rules

    def plan(self, prompt: Prompt, examples: Sequence[Example]) -> list[list[Encoded]]:
        """The batches `score` would run for one prompt (for benchmarks and debugging)."""
        return self.runner.plan(prompt, examples)

    # ---- internals -----------------------------------------------------------------------------

    def _generation_soft(self, prompt: Prompt) -> SoftPrompt | None:
        soft = self.runner.soft(prompt)
        if soft is not None and soft.tasks:
            raise AutopromptError("per-task prompt parts (task_tokens) are for classification task sets; train one "
                                  "shared prompt (task_tokens=0) for a set of generation tasks")
        return soft

    def _result(self, prompt: AnyPrompt, scored: tuple[Tensor, Tensor | None], labels: Tensor) -> EvalResult:
        logprobs, top = scored
        metric = self.metric
        result = EvalResult(metric.name, metric.score(logprobs, labels), logprobs, labels, top_token=top)
        gold_token = None
        if metric.ranks_gold:  # the gold object as one vocabulary token, where it is one (-1 elsewhere)
            single_prompt = prompt.members[0] if isinstance(prompt, Ensemble) else prompt  # members share words
            table = self.lm.word_table(single_prompt, self.task.labels)
            gold_token = torch.tensor([table[y][0][0] if len(table[y][0]) == 1 else -1 for y in labels.tolist()])
        result.extra.update(metric.extras(logprobs, labels, top, gold_token, self.majority_label))
        return result
