"""How prompts run: each (prompt, example) encoded, grouped by label words and soft tensors, bucketed by
length into padded batches (a prefix shared by several prompts or inputs run once), read by the label
words or by the channel / centroid rule, with per-query demonstrations retrieved. `Evaluator` owns the
cache, the budget and the metric; `BatchRunner` owns the batches."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from autoprompt import events
from autoprompt.backends import Encoded, Scores, ScoringModel, WordTable, full_model
from autoprompt.prompts import Demonstration, Prompt
from autoprompt.prompts.soft import SoftPrompt
from autoprompt.scoring.batching import Job, buckets
from autoprompt.scoring.budget import Budget
from autoprompt.scoring.retrieval import Retriever
from autoprompt.scoring.rules import RuleScorer
from autoprompt.scoring.sharing import SharedScorer
from autoprompt.scoring.soft_checks import checked_soft
from autoprompt.tasks.base import Example, Task


class BatchRunner:
    """Runs prompts over examples in batches (see the module docstring).

    Args:
        lm: the backend.
        task: its labels and fields.
        batch_size: most examples per forward.
        max_tokens: most padded tokens per forward.
        ranks_gold: the metric ranks the gold label among many (LAMA): the backend also returns its rank.
        calibratable: the metric reads class scores (channel and centroid rules apply).
        shared_prefix: run a prefix several prompts or inputs share once (causal LMs that can).
        stats: counts of real and padded tokens and batches, kept for benchmarks.
    """

    def __init__(self, lm: ScoringModel, task: Task, batch_size: int, max_tokens: int, ranks_gold: bool,
                 calibratable: bool, shared_prefix: bool, stats: Counter[str]) -> None:
        self.lm, self.task, self.batch_size, self.max_tokens = lm, task, batch_size, max_tokens
        self.ranks_gold, self.calibratable = ranks_gold, calibratable
        self.shared_prefix, self.stats = shared_prefix, stats

    # the scorers of what a scoring-only backend cannot do, built when first needed (`full_model`)
    @functools.cached_property
    def sharing(self) -> SharedScorer:
        """Runs a prefix several prompts or inputs share once (causal LMs)."""
        return SharedScorer(full_model(self.lm, "share prefixes"), self.batch_size, self.max_tokens,
                            self.ranks_gold, self.stats)

    @functools.cached_property
    def retriever(self) -> Retriever:
        """KATE's per-query demonstrations."""
        return Retriever(full_model(self.lm, "retrieve similar demonstrations"), self.batch_size)

    @functools.cached_property
    def rules(self) -> RuleScorer:
        """The channel and centroid decision rules."""
        return RuleScorer(full_model(self.lm, "read prompts by the channel or centroid rule"), self.task,
                          self.batch_size, self.max_tokens, self.stats)

    def plan(self, prompt: Prompt, examples: Sequence[Example]) -> list[list[Encoded]]:
        """The batches `score` would run for one prompt (for benchmarks and debugging)."""
        return [[j.encoded for j in batch]
                for batch in self.buckets([Job(0, e, self.lm.encode(prompt, ex)) for e, ex in enumerate(examples)])]

    def run(self, prompts: Sequence[Prompt], examples: Sequence[Example], progress: bool,
            budget: Budget | None) -> tuple[list[tuple[Tensor, Tensor]], list[int]]:
        """(class log-probs ``[N, C]``, top vocabulary token ``[N]``) per prompt, and the tokens of
        each prompt's inputs (its demonstrations included)."""
        labels = self.task.labels
        tables: list[WordTable] = [[] for _ in prompts]
        groups: dict[tuple[Any, ...], list[Job]] = {}
        softs: dict[tuple[Any, ...], SoftPrompt | None] = {}  # per group: the soft tensors it runs with
        n_classes = len(labels)
        out = [(torch.empty(len(examples), n_classes), torch.empty(len(examples), dtype=torch.long))
               for _ in prompts]
        tokens = [0] * len(prompts)
        ruled = []  # prompts read by another decision rule than the label words' probability
        for p, prompt in enumerate(prompts):
            prompt.template.check_fields(self.task.fields)
            self.lm.check_triggers(prompt)
            soft = self.soft(prompt)
            if not prompt.rule.direct:
                self.rules.check(prompt, soft, self.calibratable)
                ruled.append((p, soft))
                continue
            # a classification head scores the classes itself: no label words
            table = [] if soft is not None and soft.head is not None else self.lm.word_table(prompt, labels)
            tables[p] = table
            chosen = self.demos_per_query(prompt, examples, budget)
            routed = soft is not None and bool(soft.tasks)
            for e, ex in enumerate(examples):
                # prompts with their own soft tensors never share a batch (or a prefix) with others, and
                # a per-task part splits a prompt's inputs by the member task they come from
                key = (tuple(tuple(ws) for ws in table), p if soft is not None else -1, ex.task if routed else "")
                if key not in softs:
                    softs[key] = soft.for_task(ex.task) if soft is not None else None
                encoded = self.lm.encode(prompt, ex, chosen[e]) if chosen else self.lm.encode(prompt, ex)
                groups.setdefault(key, []).append(Job(p, e, encoded))
        total = sum(len(jobs) for jobs in groups.values()) + len(ruled) * len(examples)
        for jobs in groups.values():
            for job in jobs:
                tokens[job.prompt] += len(job.encoded)
        with events.Progress("scoring", total, "ex", enabled=progress) as bar:
            self._run_groups(groups, tables, softs, examples, out, bar)
            for p, soft in ruled:
                chosen = self.demos_per_query(prompts[p], examples, budget)
                logprobs, tokens[p] = self.rules.score(prompts[p], examples, chosen, soft, bar)
                out[p] = (logprobs, torch.full((len(examples),), -1, dtype=torch.long))
        return out, tokens

    def demos_per_query(self, prompt: Prompt, examples: Sequence[Example],
                        budget: Budget | None) -> list[list[Demonstration]] | None:
        """KATE's demonstrations for each example (a prompt with a pool; the retrieval charged to ``budget``),
        else None."""
        if prompt.demos is None or not prompt.demos.per_query:
            return None
        return self.retriever.choose(prompt, [ex.fields for ex in examples], budget)

    def _run_groups(self, groups: dict[tuple[Any, ...], list[Job]], tables: list[WordTable],
                    softs: dict[tuple[Any, ...], SoftPrompt | None], examples: Sequence[Example],
                    out: list[tuple[Tensor, Tensor]], bar: events.Progress) -> None:
        """Score every group of jobs that share label words (and soft tensors) into ``out``."""
        for key, jobs in groups.items():
            table = tables[jobs[0].prompt]
            soft = softs[key]
            if self.shared_prefix and soft is None:  # demonstrations: one block for all of a prompt's inputs
                jobs = self.sharing.across_examples(jobs, table, examples, out, bar)
            n_prompts = len({j.prompt for j in jobs})
            if self.shared_prefix and n_prompts > 1:
                jobs = self.sharing.across_prompts(jobs, n_prompts, table, examples, out, bar)
            done: list[tuple[list[Job], Scores]] = []  # kept on the device: one copy to the host per group
            for batch in self.buckets(jobs):
                gold = [examples[j.example].label for j in batch] if self.ranks_gold else None
                done.append((batch, self.lm.label_logprobs([j.encoded for j in batch], table, gold=gold, soft=soft)))
                bar.advance(len(batch))
            if not done:
                continue
            logprobs = torch.cat([scores.logprobs.float() for _, scores in done]).cpu()
            top = torch.cat([scores.top_token for _, scores in done]).cpu()
            for row, job in enumerate(j for batch, _ in done for j in batch):
                out[job.prompt][0][job.example] = logprobs[row]
                out[job.prompt][1][job.example] = top[row]

    def soft(self, prompt: Prompt) -> SoftPrompt | None:
        """The prompt's soft tensors, checked against its template and the model (`checked_soft`)."""
        return checked_soft(prompt, self.lm, self.task)

    def buckets(self, jobs: list[Job]) -> list[list[Job]]:
        return buckets(jobs, self.batch_size, self.max_tokens, self.stats)
