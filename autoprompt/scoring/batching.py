"""How the evaluator groups work into forward passes.

Jobs (one prompt on one example) are length-sorted into buckets capped by ``batch_size`` rows and
``max_tokens`` padded tokens. Prompts that share an example's leading tokens (trigger candidates
after the same input) are grouped so the shared prefix runs once per example.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from autoprompt.backends import Encoded


@dataclass
class Job:
    """Prompt ``prompt`` (an index) on example ``example``, encoded."""

    prompt: int
    example: int
    encoded: Encoded


SharedGroup = tuple[int, int, list[Job]]  # (shared prefix length, example, its jobs)


def buckets(jobs: list[Job], batch_size: int, max_tokens: int, stats: Counter[str]) -> list[list[Job]]:
    """Length-sorted batches, each capped by ``batch_size`` and ``max_tokens`` (padded); counts
    real and padded tokens and batches into ``stats``."""
    ordered = sorted(jobs, key=lambda j: len(j.encoded))
    batches: list[list[Job]] = []
    current: list[Job] = []
    for job in ordered:
        width = len(job.encoded)
        if current and (len(current) >= batch_size or (len(current) + 1) * width > max_tokens):
            batches.append(current)
            current = []
        current.append(job)
    if current:
        batches.append(current)
    for batch in batches:
        width = max(len(j.encoded) for j in batch)
        real = sum(len(j.encoded) for j in batch)
        stats["real_tokens"] += real
        stats["padded_tokens"] += width * len(batch) - real
        stats["batches"] += 1
    return batches


def common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """Tokens all ``seqs`` share at the start, keeping at least one token of each its own."""
    shared = min(len(s) for s in seqs) - 1
    first = seqs[0]
    for s in seqs[1:]:
        shared = min(shared, next((i for i, (a, b) in enumerate(zip(first, s)) if a != b), shared))
        if shared <= 0:
            return 0
    return shared


def shared_prefix_batches(jobs: list[Job], k: int, batch_size: int,
                          max_tokens: int) -> tuple[list[list[SharedGroup]], list[Job]]:
    """Batches of per-example groups of ``k`` prompts with their shared prefix length, and the jobs
    of examples whose prompts share nothing (every prompt keeps at least one token of its own)."""
    per_example: dict[int, list[Job]] = {}
    for job in jobs:
        per_example.setdefault(job.example, []).append(job)
    items: list[SharedGroup] = []
    unshared: list[Job] = []
    for e, group in per_example.items():
        shared = common_prefix([j.encoded.ids for j in group])
        if shared > 0:
            items.append((shared, e, group))
        else:
            unshared.extend(group)
    items.sort(key=lambda item: (item[0], item[1]))
    batches: list[list[SharedGroup]] = []
    batch: list[SharedGroup] = []
    for item in items:
        suffix_len = max(len(j.encoded) for j in item[2]) - item[0]
        # the suffixes of K prompts per example run in one pass: cap them at 4x the token budget
        if batch and (len(batch) >= batch_size or (len(batch) + 1) * k * (item[0] + suffix_len) > 4 * max_tokens):
            batches.append(batch)
            batch = []
        batch.append(item)
    if batch:
        batches.append(batch)
    return batches, unshared
