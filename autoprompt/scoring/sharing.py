"""Scoring that runs a shared prefix once (causal LMs), for the evaluator.

Two shapes of sharing, both exact (the same class scores as a plain forward of each full input):

* *across prompts*: K prompts on one example share its leading tokens (trigger candidates after
  the same input); the shared part runs once per example, the K suffixes on its cache;
* *across examples*: one prompt's inputs all start with the same long block (its
  demonstrations); the block runs once per prompt and every query runs on its cache.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from torch import Tensor

from autoprompt import events
from autoprompt.backends import LanguageModel, WordTable
from autoprompt.scoring.batching import Job, SharedGroup, common_prefix, shared_prefix_batches
from autoprompt.tasks.base import Example

# a block shorter than this is not worth a separate pass (a template's few leading words)
MIN_SHARED_BLOCK = 32

Out = list[tuple[Tensor, Tensor]]  # per prompt: class log-probs [N, C], top token [N]


class SharedScorer:
    """The evaluator's shared-prefix paths; each takes jobs and returns those it did not score.

    Args:
        lm: a backend with ``shares_prefix``.
        batch_size: most rows per forward.
        max_tokens: most padded tokens per forward (the suffix passes may use 4x).
        ranks_gold: pass the gold class to the backend (LAMA's bound pruning).
        stats: the evaluator's token counters.
    """

    def __init__(self, lm: LanguageModel, batch_size: int, max_tokens: int, ranks_gold: bool,
                 stats: Counter[str]) -> None:
        self.lm, self.batch_size, self.max_tokens = lm, batch_size, max_tokens
        self.ranks_gold, self.stats = ranks_gold, stats

    def across_prompts(self, jobs: list[Job], k: int, table: WordTable, examples: Sequence[Example], out: Out,
                       bar: events.Progress) -> list[Job]:
        """K prompts per example with the shared part of each input run once."""
        batches, unshared = shared_prefix_batches(jobs, k, self.batch_size, self.max_tokens)
        for batch in batches:
            self._score_groups(batch, table, examples, out)
            bar.advance(len(batch) * k)
        return unshared

    def _score_groups(self, batch: list[SharedGroup], table: WordTable, examples: Sequence[Example],
                      out: Out) -> None:
        prefixes = [group[0].encoded.ids[:shared] for shared, _, group in batch]
        suffixes = [[j.encoded.ids[shared:] for j in group] for shared, _, group in batch]
        gold = [examples[e].label for _, e, _ in batch] if self.ranks_gold else None
        scores = self.lm.label_logprobs_shared(prefixes, suffixes, table, gold=gold)
        logprobs, top = scores.logprobs.float().cpu(), scores.top_token.cpu()
        row = 0
        for _, e, group in batch:
            for job in group:
                out[job.prompt][0][e] = logprobs[row]
                out[job.prompt][1][e] = top[row]
                row += 1
            self.stats["real_tokens"] += sum(len(j.encoded) for j in group)

    def across_examples(self, jobs: list[Job], table: WordTable, examples: Sequence[Example], out: Out,
                        bar: events.Progress) -> list[Job]:
        """Per prompt, inputs that start with a common block of at least `MIN_SHARED_BLOCK` tokens:
        the block runs once, the queries in chunks on its cache."""
        per_prompt: dict[int, list[Job]] = {}
        for job in jobs:
            per_prompt.setdefault(job.prompt, []).append(job)
        left: list[Job] = []
        for group in per_prompt.values():
            shared = common_prefix([j.encoded.ids for j in group])
            if len(group) < 2 or shared < MIN_SHARED_BLOCK:
                left.extend(group)
                continue
            group.sort(key=lambda j: len(j.encoded))  # chunks of similar length pad less
            longest = len(group[-1].encoded)
            rows = max(1, min(self.batch_size, 4 * self.max_tokens // longest))
            gold = [examples[j.example].label for j in group] if self.ranks_gold else None
            scores = self.lm.label_logprobs_prefixed(group[0].encoded.ids[:shared],
                                                     [j.encoded.ids[shared:] for j in group], table, gold, rows)
            logprobs, top = scores.logprobs.float().cpu(), scores.top_token.cpu()
            for row, job in enumerate(group):
                out[job.prompt][0][job.example] = logprobs[row]
                out[job.prompt][1][job.example] = top[row]
            self.stats["real_tokens"] += shared + sum(len(j.encoded) - shared for j in group)
            self.stats["shared_block_tokens"] += shared * (len(group) - 1)  # not run again
            bar.advance(len(group))
        return left

