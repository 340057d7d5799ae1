"""Metrics over class log-probs: accuracy, F1, macro-F1, and LAMA's ranking metrics.

A task names its metric; its kind (`autoprompt.tasks.kinds`) gives the `Metric` object, which also
says what scoring may assume for it (LAMA's special cases live in `LamaRanking`, not in the evaluator).
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor


def accuracy(preds: Tensor, labels: Tensor) -> float:
    return float((preds == labels).float().mean()) if len(labels) else 0.0


def f1_for(preds: Tensor, labels: Tensor, positive: int) -> float:
    tp = int(((preds == positive) & (labels == positive)).sum())
    fp = int(((preds == positive) & (labels != positive)).sum())
    fn = int(((preds != positive) & (labels == positive)).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def macro_f1(preds: Tensor, labels: Tensor, num_classes: int) -> float:
    """Mean F1 over the classes present in the gold labels or the predictions."""
    present = sorted(set(labels.tolist()) | set(preds.tolist()))
    present = [c for c in present if 0 <= c < num_classes]
    return sum(f1_for(preds, labels, c) for c in present) / len(present) if present else 0.0


def ranking(logprobs: Tensor, labels: Tensor) -> dict[str, float]:
    """P@1, P@10 and MRR of the gold class among all classes (ties rank pessimistically)."""
    gold = logprobs.gather(1, labels[:, None])                      # [N, 1]
    rank = (logprobs >= gold).sum(-1).float()                       # 1 = best
    return {
        "p@1": float((rank <= 1).float().mean()),
        "p@10": float((rank <= 10).float().mean()),
        "mrr": float((1.0 / rank).mean()),
    }


def score(metric: str, logprobs: Tensor, labels: Tensor) -> float:
    """The task's headline metric."""
    preds = logprobs.argmax(-1)
    if metric == "f1":
        return f1_for(preds, labels, positive=1)
    if metric == "macro_f1":
        return macro_f1(preds, labels, logprobs.shape[-1])
    return accuracy(preds, labels)  # accuracy, and LAMA's P@1


class Metric:
    """A task's headline metric over class log-probs ``[N, C]`` and gold labels ``[N]``."""

    #: only the gold class's rank matters: a backend may skip words that cannot outrank it
    ranks_gold: ClassVar[bool] = False
    #: a class prior means something here (it does not over LAMA's hundreds of objects)
    calibratable: ClassVar[bool] = True

    def __init__(self, name: str) -> None:
        self.name = name

    def score(self, logprobs: Tensor, labels: Tensor) -> float:
        return score(self.name, logprobs, labels)

    def extras(self, logprobs: Tensor, labels: Tensor, top_token: Tensor | None = None,
               gold_token: Tensor | None = None, majority_label: int | None = None) -> dict[str, float]:
        """Further figures reported with the score (none for classification)."""
        return {}


class LamaRanking(Metric):
    """LAMA: P@1 over the relation's candidate objects, with P@10, MRR, the majority baseline and
    the classic P@1 over the whole vocabulary (on facts whose object is one token)."""

    ranks_gold = True
    calibratable = False

    def extras(self, logprobs: Tensor, labels: Tensor, top_token: Tensor | None = None,
               gold_token: Tensor | None = None, majority_label: int | None = None) -> dict[str, float]:
        """``gold_token``: per fact, the gold object's token if it is one token, else -1."""
        out = ranking(logprobs, labels)
        if majority_label is not None:
            out["majority_p@1"] = float((labels == majority_label).float().mean())
        if top_token is not None and gold_token is not None and bool((gold_token >= 0).any()):
            single = gold_token >= 0
            out["vocab_p@1"] = float(((top_token == gold_token) & single).sum() / single.sum())
            out["vocab_n"] = int(single.sum())
        return out


class TextMetric(Metric):
    """Generation: corpus BLEU against all references (with ROUGE-L); the generation scorer
    computes it from decoded texts (`autoprompt.scoring.generation`), not from class log-probs."""

    calibratable = False

    def score(self, logprobs: Tensor, labels: Tensor) -> float:
        raise TypeError("BLEU is computed from generated texts (EvalResult.bleu_stats), not class log-probs")
