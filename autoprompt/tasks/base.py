"""Task values: `Example`, `Task` (what to predict) and `TaskData` (the splits of one protocol)."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoprompt.errors import AutopromptError
from autoprompt.prompts import Prompt, Template, Verbalizer
from autoprompt.tasks.kinds import TaskKind, kind_named, kind_of_metric

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class Example:
    """One labelled input: text fields and the index of the gold label in `Task.labels`, or, on a
    generation task, the reference texts (``targets``; label 0).

    A generation train example has one reference; a dev or test example holds every reference of
    its input (BLEU and ROUGE-L are scored against all of them). In a task set, ``task`` names the
    member the example came from (it picks a prompt's per-task part, `SoftPrompt.for_task`).
    """

    fields: Mapping[str, str]
    label: int
    targets: tuple[str, ...] = ()
    task: str = ""


@dataclass(frozen=True)
class Task:
    """What to predict and the default manual prompt to beat.

    Attributes:
        name: task id (``sst2``, ``lama:P19``, or a custom name).
        fields: input field names the examples carry.
        labels: label names, in class-index order.
        template: the default manual template text.
        verbalizer: label → label words of the default prompt.
        metric: ``accuracy``, ``f1`` (binary, class 1 positive), ``macro_f1``, ``lama`` (a ranking
            task), or ``bleu`` (a generation task: corpus BLEU against all references, with ROUGE-L).
        description: one line for ``autoprompt tasks``.
        availability: what splits exist locally, in words (shown by ``autoprompt tasks``).
        kind: ``classification`` (``[P]`` is scored by label words), ``ranking`` (the gold object
            among many candidates: LAMA) or ``generation`` (``[P]`` is the generated continuation;
            no labels, no verbalizer); default: the kind its metric belongs to (`autoprompt.tasks.kinds`).
    """

    name: str
    fields: tuple[str, ...]
    labels: tuple[str, ...]
    template: str
    verbalizer: Mapping[str, Sequence[str]]
    metric: str = "accuracy"
    description: str = ""
    availability: str = ""
    kind: str = ""

    def __post_init__(self) -> None:
        if not self.kind:  # frozen: the default is filled in once, here
            object.__setattr__(self, "kind", kind_of_metric(self.metric, self.name).name)
        self.kind_spec.check(self)
        Template(self.template).check_fields(self.fields)

    @property
    def kind_spec(self) -> TaskKind:
        """The kind's object: its metrics, selection statistic and result fields (`autoprompt.tasks.kinds`)."""
        return kind_named(self.kind, self.name)

    @property
    def is_generation(self) -> bool:
        """``[P]`` is a generated text, scored against references (not a choice among label words)."""
        return self.kind_spec.generates

    @property
    def default_prompt(self) -> Prompt:
        return Prompt(Template(self.template), Verbalizer(self.verbalizer))


SplitLoader = Callable[[], list[Example]]


@dataclass
class TaskData:
    """The train/dev/test splits of one task under one protocol, loaded lazily.

    A split that does not exist locally is a loader that raises an `AutopromptError` naming
    what does exist, so ``--split test`` works for a task that has no training data.

    Attributes:
        task: the task.
        protocol: how the splits were made (``shots``, ``data_seed``, the source of each split).
        members: a task set's member tasks (`autoprompt.tasks.taskset`), each scored on its own test.
    """

    task: Task
    protocol: dict[str, Any]
    loaders: dict[str, SplitLoader] = field(repr=False)
    _cache: dict[str, list[Example]] = field(default_factory=dict, repr=False)
    members: list[TaskData] = field(default_factory=list, repr=False)

    def split(self, name: str) -> list[Example]:
        """The examples of ``train``, ``dev`` or ``test``; raise if empty or unavailable."""
        if name not in SPLITS:
            raise AutopromptError(f"unknown split {name!r}; use one of {list(SPLITS)}")
        if name not in self._cache:
            examples = self.loaders[name]()
            if not examples:
                raise AutopromptError(
                    f"split {name!r} of task {self.task.name} is empty; check the data files"
                )
            self._cache[name] = examples
        return self._cache[name]

    @property
    def train(self) -> list[Example]:
        return self.split("train")

    @property
    def dev(self) -> list[Example]:
        return self.split("dev")

    @property
    def test(self) -> list[Example]:
        return self.split("test")


def unavailable(message: str) -> SplitLoader:
    """A split loader that explains why the split does not exist here."""

    def load() -> list[Example]:
        raise AutopromptError(message)

    return load


def carve_dev(examples: list[Example], seed: int, size: int | None = None) -> tuple[list[Example], list[Example]]:
    """Hold a seeded slice out of ``examples`` for selection: returns ``(train, dev)``.

    The default size is 10% of the examples, at most 1,000, at least 1.
    """
    size = size if size is not None else max(1, min(1000, len(examples) // 10))
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    dev_idx = set(order[:size])
    train = [ex for i, ex in enumerate(examples) if i not in dev_idx]
    dev = [examples[i] for i in sorted(dev_idx)]
    return train, dev


def stratified_sample(examples: Sequence[Example], k: int, seed: int = 0) -> list[Example]:
    """A seeded sample of ``k`` examples with each class in its share of ``examples`` (largest
    remainders first), in the examples' order; all of them when ``k`` >= their number.

    Data files are often sorted by label, so the first ``k`` would be one class.
    """
    if k >= len(examples):
        return list(examples)
    by_class: dict[int, list[int]] = {}
    for i, ex in enumerate(examples):
        by_class.setdefault(ex.label, []).append(i)
    quotas = {c: k * len(idx) / len(examples) for c, idx in by_class.items()}
    counts = {c: int(q) for c, q in quotas.items()}
    for c in sorted(quotas, key=lambda c: (counts[c] - quotas[c], c))[: k - sum(counts.values())]:
        counts[c] += 1
    rng = random.Random(f"stratified:{seed}")
    chosen = sorted(i for c, idx in sorted(by_class.items()) for i in rng.sample(idx, counts[c]))
    return [examples[i] for i in chosen]


def resolve_data_dir(data_dir: str | Path | None) -> Path | None:
    """``--data-dir``, else ``AUTOPROMPT_DATA_DIR``, else None (the hub)."""
    chosen = data_dir if data_dir is not None else os.environ.get("AUTOPROMPT_DATA_DIR")
    if chosen is None or chosen == "":
        return None
    path = Path(chosen).expanduser()
    if not path.is_dir():
        raise AutopromptError(
            f"data directory {path} does not exist; set `data_dir` or AUTOPROMPT_DATA_DIR to the "
            "folder that holds sst2/, rte/, lm-bff-16shot/, ..."
        )
    return path


def examples_fingerprint(examples: Sequence[Example]) -> str:
    """A stable hash of a list of examples (used as an evaluator cache key)."""
    h = hashlib.sha256()
    for ex in examples:
        key: tuple[Any, ...] = (sorted(ex.fields.items()), ex.label) + ((ex.targets,) if ex.targets else ())
        h.update(repr(key + ((ex.task,) if ex.task else ())).encode())
    return h.hexdigest()[:16]
