"""Metrics over class log-probs: accuracy, F1, macro-F1, and LAMA's ranking metrics."""

from __future__ import annotations

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
