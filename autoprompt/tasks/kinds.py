"""Task kinds: what a task predicts, the metrics it may use, how its scores are read.

A task names its kind (`Task.kind`); the kind object (`Task.kind_spec`) is the one place that
knows what differs between kinds:

* `Classification` — ``[P]`` chooses among the classes' label words; accuracy, F1 or macro-F1;
  results carry per-class counts.
* `Ranking` — the gold object ranked among hundreds of candidates (LAMA); P@1 as the headline
  with P@10 and MRR; only the gold object's rank matters, and a class prior means nothing there.
* `Generation` — ``[P]`` is decoded text, scored against references by corpus BLEU (with ROUGE-L).

Each kind gives its `Metric` (what scoring may assume), its selection statistic on any subset of
examples (what the paired bootstrap and the gates resample), and the fields a scored result and a
finished search add. Adding a kind is one class here plus its tests; the evaluator asks only
`generates` (decode, or score label words).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol

from torch import Tensor

from autoprompt.errors import AutopromptError
from autoprompt.scoring import metrics, text_metrics
from autoprompt.scoring.metrics import LamaRanking, Metric, TextMetric
from autoprompt.scoring.scores import EvalResult


class Task(Protocol):
    """What a kind checks of a task (`autoprompt.tasks.base.Task`, which imports this module)."""

    @property
    def name(self) -> str: ...
    @property
    def metric(self) -> str: ...
    @property
    def labels(self) -> tuple[str, ...]: ...
    @property
    def verbalizer(self) -> Mapping[str, Sequence[str]]: ...


class TaskKind:
    """One kind of task (subclass it to add one, then list it in `KINDS`)."""

    #: the name a task gives in `Task.kind`
    name: ClassVar[str]
    #: the metrics a task of this kind may name
    metrics: ClassVar[tuple[str, ...]]
    #: ``[P]`` is decoded and compared to references (else it chooses among label words)
    generates: ClassVar[bool] = False

    def check(self, task: Task) -> None:
        """Raise a one-line error where ``task`` does not fit this kind."""
        if task.metric not in self.metrics:
            raise AutopromptError(f"task {task.name}: a {self.name} task cannot use metric {task.metric!r}; "
                                  f"{self.name} tasks use {' or '.join(self.metrics)}")

    def metric(self, name: str) -> Metric:
        """The `Metric` object scoring uses for ``name``."""
        return Metric(name)

    def statistic(self, result: EvalResult, idx: Tensor) -> float:
        """The task metric on the examples ``idx`` (repeats allowed) of ``result``: what a bootstrap resamples."""
        return metrics.score(result.metric, result.logprobs[idx], result.labels[idx])

    def result_fields(self, result: EvalResult, labels: Sequence[str]) -> dict[str, Any]:
        """What a scored split adds to ``evaluate``'s result beside the headline score."""
        return {"per_class": result.per_class(labels)}

    def search_fields(self, found: EvalResult, baseline: EvalResult) -> dict[str, Any]:
        """`RunRecord` fields a finished search adds from the found and manual prompts' test results."""
        return {}


class Classification(TaskKind):
    """Choose among a few classes by their label words."""

    name = "classification"
    metrics = ("accuracy", "f1", "macro_f1")


class Ranking(TaskKind):
    """Rank the gold object among many candidates (LAMA): P@1 headline, P@10 and MRR beside it."""

    name = "ranking"
    metrics = ("lama",)

    def metric(self, name: str) -> Metric:
        return LamaRanking(name)

    def result_fields(self, result: EvalResult, labels: Sequence[str]) -> dict[str, Any]:
        return {"lama": result.extra, "per_class": None}  # hundreds of objects: per-class counts say nothing

    def search_fields(self, found: EvalResult, baseline: EvalResult) -> dict[str, Any]:
        return {"lama": {"found": found.extra, "baseline": baseline.extra}}


class Generation(TaskKind):
    """Generate text for the input, scored against every reference by corpus BLEU (and ROUGE-L)."""

    name = "generation"
    metrics = ("bleu",)
    generates = True

    def check(self, task: Task) -> None:
        super().check(task)
        if task.labels or task.verbalizer:
            raise AutopromptError(f"task {task.name}: a generation task has no labels or label words")

    def metric(self, name: str) -> Metric:
        return TextMetric(name)

    def statistic(self, result: EvalResult, idx: Tensor) -> float:
        # corpus BLEU of the resampled outputs: their summed n-gram statistics, not a mean of sentence scores
        assert result.bleu_stats is not None  # a generation result keeps each output's statistics
        return text_metrics.bleu_from_stats(result.bleu_stats[idx])

    def result_fields(self, result: EvalResult, labels: Sequence[str]) -> dict[str, Any]:
        return {"per_class": None}


#: every kind by name (`Task.kind`)
KINDS: dict[str, TaskKind] = {kind.name: kind for kind in (Classification(), Ranking(), Generation())}


def kind_named(name: str, task: str = "") -> TaskKind:
    """The kind called ``name``; a one-line error naming the known ones otherwise."""
    try:
        return KINDS[name]
    except KeyError:
        where = f"task {task}: " if task else ""
        raise AutopromptError(f"{where}unknown kind {name!r}; use one of {', '.join(KINDS)}") from None


def kind_of_metric(metric: str, task: str = "") -> TaskKind:
    """The kind whose tasks use ``metric`` (each metric belongs to one kind)."""
    for kind in KINDS.values():
        if metric in kind.metrics:
            return kind
    where = f"task {task}: " if task else ""
    raise AutopromptError(f"{where}unknown metric {metric!r}; use one of "
                          f"{', '.join(m for k in KINDS.values() for m in k.metrics)}")
