"""Generation metrics from the standard libraries: BLEU (``sacrebleu``) and ROUGE-L (``rouge-score``),
both against every reference of an input.

Corpus BLEU is not a mean of sentence scores, so a result keeps each sentence's BLEU sufficient
statistics (`bleu_stats`); the corpus score of any resample of the sentences (a paired bootstrap) is
`bleu_from_stats` of their sum, exactly what ``sacrebleu`` computes on those sentences.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


@functools.cache
def _bleu() -> Any:
    from sacrebleu.metrics.bleu import BLEU  # noqa: PLC0415 - only generation tasks need it

    return BLEU()


def _streams(references: Sequence[Sequence[str]]) -> list[list[str | None]]:
    """sacrebleu's reference streams (stream k = every input's k-th reference, None where it has fewer)."""
    width = max(len(refs) for refs in references)
    return [[refs[k] if k < len(refs) else None for refs in references] for k in range(width)]


def bleu_stats(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> Tensor:
    """``[N, 10]`` per-sentence BLEU statistics (hypothesis and closest reference length, matched and
    total n-grams for n = 1..4), in sacrebleu's order."""
    stats = _bleu()._extract_corpus_statistics(list(hypotheses), _streams(references))
    return torch.tensor(stats, dtype=torch.long)


def bleu_from_stats(stats: Tensor) -> float:
    """Corpus BLEU (0–100) of the sentences whose statistics are the rows of ``stats`` ``[N, 10]``."""
    return float(_bleu()._compute_score_from_stats([int(v) for v in stats.sum(0).tolist()]).score)


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """sacrebleu's corpus BLEU (0–100), multi-reference."""
    return float(_bleu().corpus_score(list(hypotheses), _streams(references)).score)


def sentence_bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> Tensor:
    """``[N]`` smoothed sentence-level BLEU (0–100, sacrebleu's ``exp`` smoothing): a per-example
    objective for selection, where corpus BLEU has no per-example value."""
    from sacrebleu.metrics.bleu import BLEU  # noqa: PLC0415

    scorer = BLEU(effective_order=True)
    return torch.tensor([scorer.sentence_score(h, list(refs)).score for h, refs in zip(hypotheses, references,
                                                                                       strict=True)],
                        dtype=torch.float64)


@functools.cache
def _rouge() -> Any:
    from rouge_score import rouge_scorer  # noqa: PLC0415

    return rouge_scorer.RougeScorer(["rougeL"])


def rouge_l(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> Tensor:
    """``[N]`` ROUGE-L F-measure (0–100) of each hypothesis against its best reference
    (``rouge-score``'s ``score_multi``)."""
    scorer = _rouge()
    return torch.tensor([100 * scorer.score_multi(list(refs), h)["rougeL"].fmeasure
                         for h, refs in zip(hypotheses, references, strict=True)], dtype=torch.float64)
