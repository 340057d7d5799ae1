"""How the verbalizer search ranks label words beyond the direct statistics: the noisy channel's
re-ranking of a shortlist, and the best assignments of words to classes on train."""

from __future__ import annotations

import dataclasses
import itertools
import math

import torch

from autoprompt import Example, Prompt, Verbalizer
from autoprompt.search import SearchContext
from autoprompt.search.selection import Objective, per_example


def channel_ranking(ctx: SearchContext, prompt: Prompt, examples: list[Example], labels: torch.Tensor,
                     words: list[tuple[str, tuple[int, ...]]], scores: torch.Tensor, top: torch.Tensor,
                     start_words: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Under the channel rule, the direct statistics only propose: the shortlist ``top`` (``[C, k]``
    word indices) is re-ranked within each class by how much more likely the word makes its class's
    inputs than the other classes' — each input's log-likelihood after the word's label prefix
    (`Evaluator.channel_word_logliks`), centred per input over the shortlist, its mean on the class
    minus the mean of the other classes' means — keeping as many words per class as the budget
    pays for (the starting word always). Returns the re-ranked ``[C, k']`` and ``[N, W]`` scores
    whose shortlisted columns hold the channel log-likelihoods, which the assignments rank by."""
    n_classes, n = top.shape[0], len(examples)
    reserve = 2 * n + len(ctx.dev)  # the select phase's exact re-scoring
    per_class = min(top.shape[1], max(1, int((ctx.budget_left - reserve) // (n_classes * n))))
    rows = [[j, *[i for i in row if i != j][: per_class - 1]] for row, j in zip(top.tolist(), start_words,
                                                                                   strict=True)]
    shortlist = list(dict.fromkeys(j for row in rows for j in row))
    if len(shortlist) < n_classes:  # fewer distinct words than classes: nothing to regroup
        return top, scores
    # one verbalizer holding every shortlisted word once; its grouping only feeds the encoder
    groups = [[words[j][0] for j in shortlist[c::n_classes]] for c in range(n_classes)]
    probe = dataclasses.replace(prompt, verbalizer=Verbalizer(dict(zip(ctx.task.labels, groups, strict=True))),
                                rule=ctx.rule.unfitted())
    column = {j: col for col, j in enumerate(j for c in range(n_classes) for j in shortlist[c::n_classes])}
    raw = ctx.evaluator.channel_word_logliks(probe, examples)                                   # [N, U]
    centred = raw - raw.mean(1, keepdim=True)
    means = torch.stack([centred[labels == c].mean(0) for c in range(n_classes)])              # [C, U]
    contrast = means - (means.sum(0, keepdim=True) - means) / max(n_classes - 1, 1)              # [C, U]
    ranked = torch.tensor([sorted(row, key=lambda j: -float(contrast[c, column[j]])) for c, row in
                           enumerate(rows)])
    channel = torch.full((n, len(words)), -math.inf)
    for j, col in column.items():
        channel[:, j] = raw[:, col]
    return ranked, channel


def best_assignments(scores: torch.Tensor, labels: torch.Tensor, top: torch.Tensor, n_pairs: int,
                     objective: Objective) -> list[tuple[int, ...]]:
    """The ``n_pairs`` assignments (index into each class's top-k) with the best train objective.

    Exhaustive when there are at most 200,000 assignments, else a beam over classes (beam
    width ``50 * n_pairs``) scored on the classes assigned so far.
    """
    n_classes, k = top.shape
    cols = scores[:, top.reshape(-1)].view(len(labels), n_classes, k)                           # [N, C, k]

    def score(assignments: torch.Tensor) -> torch.Tensor:                                  # [A, c] -> [A]
        """The objective on the classes assigned so far (examples of unassigned classes left out)."""
        c = assignments.shape[1]
        keep = labels < c
        if not keep.any() or c < 2:
            return torch.zeros(len(assignments))
        picked = cols[:, torch.arange(c)[None, :], assignments][keep].permute(1, 0, 2)          # [A, N', c]
        return per_example(picked, labels[keep], objective).mean(-1)

    def distinct(assignments: torch.Tensor) -> torch.Tensor:  # one class may not take another's word
        chosen = top[torch.arange(assignments.shape[1])[None, :], assignments].sort(-1).values
        return assignments[(chosen[:, 1:] != chosen[:, :-1]).all(-1)]

    if k ** n_classes <= 200_000:
        every = distinct(torch.tensor(list(itertools.product(range(k), repeat=n_classes))))
        acc = score(every)
        order = acc.argsort(descending=True, stable=True)[: n_pairs]
        return [tuple(every[i].tolist()) for i in order]
    beam = torch.zeros(1, 0, dtype=torch.long)
    for _ in range(n_classes):
        grown = distinct(torch.cat([beam.repeat_interleave(k, 0), torch.arange(k).repeat(len(beam))[:, None]], 1))
        acc = score(grown)
        beam = grown[acc.argsort(descending=True, stable=True)[: 50 * n_pairs]]
    return [tuple(a) for a in beam[: n_pairs].tolist()]
