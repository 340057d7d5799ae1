"""Custom tasks from data files plus a small spec (TOML on the CLI, keyword arguments in Python).

A full ``task.toml``::

    name = "reviews"
    fields = ["text"]                 # or a table {text = "review_body"} mapping field -> column
    label_column = "label"
    labels = ["0", "1"]               # label values as they appear in the file, in class order
    template = "{text} It was [P]"
    metric = "accuracy"               # accuracy, f1 or macro_f1
    # format = "csv"                  # csv, tsv, jsonl or label-first; default: from each file's suffix
    # columns = ["label", "text"]     # CSV/TSV without a header row: the columns, in order
    [files]
    train = "train.csv"               # dev is optional: a seeded slice of train otherwise
    test = "test.csv"
    [verbalizer]
    "0" = ["bad"]
    "1" = ["good"]

A generation task names the reference column instead of labels and label words (``[P]`` is then
the generated text; see `autoprompt.tasks.generation` for how its splits are drawn)::

    name = "descriptions"
    fields = ["mr"]
    target_column = "ref"
    template = "{mr}\nDescription: [P]"
    [files]
    train = "train.csv"               # rows of the same input are one input with several references
    test = "test.csv"

Formats: CSV/TSV with a header row, or without one when ``columns`` names the columns; JSONL (one
object per line); ``label-first``, the ``<label> <text>`` lines of MR/CR/MPQA/SUBJ (columns
``label`` and ``text``). File paths are resolved against the spec's folder and must stay inside it
(a spec shared with a run folder reads nothing else on the machine that loads it); ``data_outside =
true`` lets ``[files]`` name absolute paths or ``../`` (paths given in Python are always taken as given).

With ``shots=K`` (``--shots K --data-seed S``), train and dev are K examples per class each,
sampled class-balanced and seeded from the train file, as LM-BFF samples its splits.
"""

from __future__ import annotations

import random
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from autoprompt import events
from autoprompt.errors import AutopromptError
from autoprompt.io import excerpt, read_user_text
from autoprompt.schema import TaskFile, validate
from autoprompt.tasks.base import Example, SplitLoader, Task, TaskData, carve_dev, unavailable
from autoprompt.tasks.generation import generation_data, group_references
from autoprompt.tasks.readers import read_table


def _examples(rows: list[dict[str, Any]], path: Path, columns: Mapping[str, str], label_column: str,
              labels: Sequence[str]) -> list[Example]:
    index = {str(v): i for i, v in enumerate(labels)}
    out = []
    for n, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise AutopromptError(f"{path} row {n} is not an object with columns")
        missing = [c for c in [*columns.values(), label_column] if c not in row]
        if missing:
            raise AutopromptError(f"{path} row {n} lacks column(s) {excerpt(missing)}; it has {excerpt(sorted(row))}")
        raw = _text(row[label_column], path, n, label_column, label=True).strip()
        if raw not in index:
            raise AutopromptError(f"{path} row {n}: label {excerpt(raw, 40)} is not one of {excerpt(list(labels))}")
        out.append(Example({f: _text(row[c], path, n, c).strip() for f, c in columns.items()}, index[raw]))
    return out


def _text(value: Any, path: Path, row: int, column: str, label: bool = False) -> str:
    """A cell as text: strings as they are (and, for a label, whole numbers and booleans); a null, a list or
    an object is refused rather than scored as its Python repr ("None", "['a']")."""
    if isinstance(value, str):
        return value
    if label and isinstance(value, int | bool):
        return str(value).lower() if isinstance(value, bool) else str(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    shown = "null" if value is None else type(value).__name__
    raise AutopromptError(f"{path} row {row}: column {excerpt(column)} holds {shown}, not text; write it as a string "
                          "(or drop the row)")


def sample_k_shot(examples: Sequence[Example], shots: int, seed: int, n_classes: int,
                  source: str) -> tuple[list[Example], list[Example]]:
    """``shots`` examples per class for train and another ``shots`` per class for dev, seeded."""
    by_class = [[ex for ex in examples if ex.label == c] for c in range(n_classes)]
    short = [c for c, members in enumerate(by_class) if len(members) < 2 * shots]
    if short:
        have = ", ".join(f"class {c}: {len(by_class[c])}" for c in short)
        raise AutopromptError(f"{source}: {shots} shots need {2 * shots} examples of every class (train and dev); "
                              f"it has {have}; use fewer shots")
    rng = random.Random(f"k-shot:{shots}:{seed}")
    drawn = [rng.sample(members, 2 * shots) for members in by_class]
    return ([ex for d in drawn for ex in d[:shots]], [ex for d in drawn for ex in d[shots:]])


def _split_files(name: str, files: Mapping[str, str | Path], base: Path | None, required: set[str],
                 wrong: str) -> dict[str, Path]:
    """The task's train/dev/test paths, relative ones resolved against ``base``; each must exist.
    ``wrong`` says what the task needs when a split is unknown or one of ``required`` is missing."""
    paths = {k: (base / v if base and not Path(v).is_absolute() else Path(v)) for k, v in files.items()}
    if set(paths) - {"train", "dev", "test"} or not required <= set(paths):
        raise AutopromptError(f"{wrong}; got {sorted(paths)}")
    for split, path in paths.items():
        if not path.is_file():
            raise AutopromptError(f"custom task {name}: the {split} file {path} does not exist; fix [files]")
    return paths


def custom_task(
    name: str,
    files: Mapping[str, str | Path],
    fields: Sequence[str] | Mapping[str, str],
    label_column: str,
    labels: Sequence[str],
    template: str,
    verbalizer: Mapping[str, Sequence[str]],
    metric: str = "accuracy",
    data_seed: int = 13,
    base: Path | None = None,
    shots: int | None = None,
    fmt: str | None = None,
    columns: Sequence[str] | None = None,
) -> TaskData:
    """Build a task from data files.

    Args:
        name: the task's name in run records.
        files: ``train``/``dev``/``test`` → path; ``dev`` may be left out (carved from train).
        fields: field names (equal to column names) or a field → column mapping.
        label_column: the column that holds the label.
        labels: label values as written in the file, in class order.
        template: the default manual template.
        verbalizer: label value → label words.
        metric: ``accuracy``, ``f1`` or ``macro_f1``.
        data_seed: seed of the dev slice (or of the k-shot sample).
        base: folder that relative paths are resolved against.
        shots: sample a class-balanced k-shot train and dev from the train file.
        fmt: ``csv``, ``tsv``, ``jsonl`` or ``label-first`` (default: from each file's suffix).
        columns: the column names of CSV/TSV files without a header row.
    """
    columns_of = dict(fields) if isinstance(fields, Mapping) else {f: f for f in fields}
    labels = [str(v) for v in labels]
    if len(set(labels)) != len(labels):
        raise AutopromptError(f"custom task {name}: labels {labels} repeat a value; list each label once")
    task = Task(name, tuple(columns_of), tuple(labels), template,
                {str(k): list(v) for k, v in verbalizer.items()}, metric, f"custom task from {base or '.'}")
    paths = _split_files(name, files, base, {"test"}, "custom task files must be train/dev/test with at least test")
    if shots is not None and "train" not in paths:
        raise AutopromptError(f"custom task {name}: {shots} shots are sampled from a train file; add one under [files]")

    def load(split: str) -> list[Example]:
        return _examples(read_table(paths[split], fmt, columns), paths[split], columns_of, label_column, labels)

    # mypy types a lambda with a default argument as taking one: cast to the no-argument loader it is
    loaders = {s: cast(SplitLoader, lambda s=s: load(s)) for s in paths}
    if "train" in paths and (shots is not None or "dev" not in paths):
        box: dict[str, tuple[list[Example], list[Example]]] = {}

        def carved(i: int) -> list[Example]:
            if "v" not in box:
                train = load("train")
                box["v"] = (sample_k_shot(train, shots, data_seed, len(labels), str(paths["train"]))
                            if shots is not None else carve_dev(train, data_seed))
            return box["v"][i]

        loaders["train"], loaders["dev"] = (lambda: carved(0)), (lambda: carved(1))
    for split in ("train", "dev"):
        if split not in loaders:
            loaders[split] = unavailable(f"custom task {name} has no {split} file; add it under [files]")
    if "train" in paths:
        loaders["train"] = _say_missing_classes(name, labels, loaders["train"])
    protocol = {"shots": shots, "data_seed": data_seed, "sources": {k: str(v) for k, v in paths.items()}}
    return TaskData(task, protocol, loaders)


def _say_missing_classes(name: str, labels: Sequence[str], load: SplitLoader) -> SplitLoader:
    """The train loader ``load``, warning in one line when train holds no example of some class (what
    fits on train — label words, demonstrations, centroids, a class prior — cannot see that class)."""

    def loaded() -> list[Example]:
        examples = load()
        present = {ex.label for ex in examples}
        missing = [label for c, label in enumerate(labels) if c not in present]
        if examples and missing:
            events.warn(f"custom task {name}: its train split has no example of class {', '.join(missing)}, so "
                        f"nothing fitted on train sees {'it' if len(missing) == 1 else 'them'}; add examples of "
                        "every class, or drop the class from `labels`")
        return examples

    return loaded


def _check_inside(spec: Path, files: Mapping[str, str]) -> None:
    """Refuse a ``[files]`` entry that leaves the spec's folder: a spec file shared with a run folder or a
    repository must not read whatever it names on the machine that loads it."""
    home = spec.parent.resolve()
    for split, name in files.items():
        target = (spec.parent / name).resolve()
        if Path(name).is_absolute() or not target.is_relative_to(home):
            raise AutopromptError(f"task spec {spec}: [files] {split} = {name!r} is outside the spec's folder; move "
                                  "the data beside the spec, or set data_outside = true in the spec")


def load_custom(path: Path, data_seed: int = 13, shots: int | None = None) -> TaskData:
    """Read a task spec TOML file (see the module docstring)."""
    try:
        raw = tomllib.loads(read_user_text(path, "task spec"))
    except tomllib.TOMLDecodeError as err:
        raise AutopromptError(f"task spec {path} is not valid TOML: {err}") from None
    spec = validate(TaskFile, raw, f"task spec {path}", "; see the example in the README or `autoprompt.tasks.custom`")
    if not spec.data_outside:
        _check_inside(path, cast(Mapping[str, str], spec.files))
    if spec.target_column is not None:
        if spec.labels is not None or spec.verbalizer is not None or spec.metric not in (None, "bleu"):
            raise AutopromptError(f"task spec {path}: a generation task (target_column) has no labels, verbalizer "
                                  "or classification metric; drop them")
        return custom_generation_task(spec.name or path.stem, cast(Mapping[str, str], spec.files), spec.fields,
                                      spec.target_column, spec.template, data_seed, path.parent, shots, spec.format,
                                      spec.columns)
    if spec.labels is None or spec.verbalizer is None or spec.metric == "bleu":
        raise AutopromptError(f"task spec {path}: a classification task needs `labels` and `verbalizer` (at least "
                              "two each) and metric accuracy, f1 or macro_f1; a generation task names its "
                              "`target_column` instead")
    return custom_task(
        # the schema keys `files` by Literal split names; a Mapping is invariant in its key type
        spec.name or path.stem, cast(Mapping[str, str], spec.files), spec.fields, spec.label_column,
        [str(v) for v in spec.labels],
        spec.template, {k: [v] if isinstance(v, str) else v for k, v in spec.verbalizer.items()},
        spec.metric or "accuracy", data_seed, path.parent, shots, spec.format, spec.columns,
    )


def custom_generation_task(
    name: str,
    files: Mapping[str, str | Path],
    fields: Sequence[str] | Mapping[str, str],
    target_column: str,
    template: str,
    data_seed: int = 13,
    base: Path | None = None,
    shots: int | None = None,
    fmt: str | None = None,
    columns: Sequence[str] | None = None,
) -> TaskData:
    """A generation task from data files: inputs and a reference column (several rows of one input
    are one input with several references).

    Train and dev are drawn from the train file by input (`autoprompt.tasks.generation`): ``shots``
    training references, or all of it less a seeded dev slice; a dev file, where given, is the dev
    set. Arguments as `custom_task`.
    """
    columns_of = dict(fields) if isinstance(fields, Mapping) else {f: f for f in fields}
    task = Task(name, tuple(columns_of), (), template, {}, "bleu", f"custom generation task from {base or '.'}",
                kind="generation")
    paths = _split_files(name, files, base, {"train", "test"},
                         "a custom generation task needs train and test files (dev optional)")
    groups = {s: group_references(read_table(p, fmt, columns), columns_of, target_column, str(p))
              for s, p in paths.items()}
    # a given dev set is used as it is; train never holds an input of dev or test
    return generation_data(task, groups["train"], groups["test"], shots, data_seed,
                           {k: str(v) for k, v in paths.items()}, dev=groups.get("dev"))
