"""What scoring returns: `EvalResult` (one prompt's class log-probs and metric on a list of examples)
and the two log-space operations calibration is made of."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from autoprompt.scoring import metrics


@dataclass
class EvalResult:
    """Scores of one prompt on one list of examples.

    Attributes:
        score: the task metric (accuracy, F1, macro-F1; P@1 for LAMA; corpus BLEU, 0–100, for generation).
        logprobs: ``[N, C]`` class log-probs, in example order; on a generation task ``[N, 1]``, each
            input's mean per-token log-likelihood of its references (teacher-forced).
        extra: LAMA's ``p@10``, ``mrr``, ``majority_p@1``, ``vocab_p@1`` (and its ``vocab_n``);
            generation's ``rougeL`` and ``loglik_per_token``.
        outputs: the generated texts (generation tasks).
        bleu_stats: ``[N, 10]`` each output's BLEU statistics (`text_metrics.bleu_stats`), so a
            resample of the inputs has an exact corpus BLEU.
        sentence_scores: ``[N]`` smoothed sentence BLEU of each output (a per-input objective).
    """

    metric: str
    score: float
    logprobs: Tensor
    labels: Tensor
    extra: dict[str, float] = field(default_factory=dict)
    top_token: Tensor | None = field(default=None, repr=False)
    outputs: list[str] | None = field(default=None, repr=False)
    bleu_stats: Tensor | None = field(default=None, repr=False)
    sentence_scores: Tensor | None = field(default=None, repr=False)

    @property
    def preds(self) -> Tensor:
        return self.logprobs.argmax(-1)

    @property
    def n(self) -> int:
        return len(self.labels)

    def subset(self, rows: Tensor) -> EvalResult:
        """The scores of the examples ``rows`` (``[M]`` indices) with the headline metric recomputed on
        them (``extra`` is dropped; a generation result keeps no per-example ROUGE-L, so it cannot be cut)."""
        if self.bleu_stats is not None:
            raise ValueError("a generation result cannot be subset: score the examples again")
        logprobs, labels = self.logprobs[rows], self.labels[rows]
        return EvalResult(self.metric, metrics.score(self.metric, logprobs, labels), logprobs, labels,
                          top_token=None if self.top_token is None else self.top_token[rows])

    def per_class(self, label_names: Sequence[str]) -> dict[str, dict[str, int]]:
        """Per label: gold count, predicted count, correct count."""
        gold, pred = Counter(self.labels.tolist()), Counter(self.preds.tolist())
        correct = Counter(self.labels[self.preds == self.labels].tolist())
        return {name: {"gold": gold[i], "predicted": pred[i], "correct": correct[i]}
                for i, name in enumerate(label_names) if gold[i] or pred[i]}


def log_mean_prob(logprobs: Tensor) -> Tensor:
    """``[N, C]`` class log-probs → ``[C]`` log of the mean class distribution (each row normalised)."""
    return torch.logsumexp(logprobs.log_softmax(-1), dim=0) - torch.log(torch.tensor(float(len(logprobs))))


def calibrate_logprobs(logprobs: Tensor, log_prior: Tensor) -> Tensor:
    """``softmax(log p(c | x) − log prior(c))`` in log space: ``[N, C]``, each row a distribution."""
    return (logprobs.log_softmax(-1) - log_prior.to(logprobs.dtype)).log_softmax(-1)
