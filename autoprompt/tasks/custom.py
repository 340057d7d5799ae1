"""Custom tasks from a data file plus a small spec (TOML on the CLI, keyword arguments in Python).

Example ``task.toml``::

    name = "reviews"
    fields = ["text"]                 # or a table {text = "review_body"} mapping field -> column
    label_column = "label"
    labels = ["0", "1"]               # label values as they appear in the file, in class order
    template = "{text} It was [P]"
    metric = "accuracy"
    [files]
    train = "train.csv"               # .csv / .tsv (with a header) or .jsonl
    test = "test.csv"                 # dev is optional: a seeded slice of train otherwise
    [verbalizer]
    "0" = ["bad"]
    "1" = ["good"]

Relative file paths are resolved against the spec's folder.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autoprompt.errors import AutopromptError
from autoprompt.tasks.base import Example, Task, TaskData, carve_dev, unavailable
from autoprompt.tasks.readers import read_csv, read_jsonl, read_tsv


def _read_table(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return read_jsonl(path)
    if suffix == ".tsv":
        return read_tsv(path)  # type: ignore[return-value]
    if suffix == ".csv":
        rows = read_csv(path)
        return [dict(zip(rows[0], r)) for r in rows[1:]] if rows else []
    raise AutopromptError(f"data file {path}: unsupported format {suffix!r}; use .csv, .tsv or .jsonl")


def _examples(path: Path, columns: Mapping[str, str], label_column: str, labels: Sequence[str]) -> list[Example]:
    index = {str(v): i for i, v in enumerate(labels)}
    out = []
    for n, row in enumerate(_read_table(path), start=1):
        missing = [c for c in [*columns.values(), label_column] if c not in row]
        if missing:
            raise AutopromptError(f"{path} row {n} lacks column(s) {missing}; it has {sorted(row)}")
        raw = str(row[label_column])
        if raw not in index:
            raise AutopromptError(f"{path} row {n}: label {raw!r} is not one of {list(labels)}")
        out.append(Example({f: str(row[c]).strip() for f, c in columns.items()}, index[raw]))
    return out


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
        data_seed: seed of the dev slice when ``dev`` is not given.
        base: folder that relative paths are resolved against.
    """
    columns = dict(fields) if isinstance(fields, Mapping) else {f: f for f in fields}
    labels = [str(v) for v in labels]
    task = Task(name, tuple(columns), tuple(labels), template,
                {str(k): list(v) for k, v in verbalizer.items()}, metric, f"custom task from {base or '.'}")
    paths = {k: (base / v if base and not Path(v).is_absolute() else Path(v)) for k, v in files.items()}
    unknown = set(paths) - {"train", "dev", "test"}
    if unknown or "test" not in paths:
        raise AutopromptError(f"custom task files must be train/dev/test with at least test; got {sorted(paths)}")

    def load(split: str) -> list[Example]:
        return _examples(paths[split], columns, label_column, labels)

    loaders = {s: (lambda s=s: load(s)) for s in paths}
    if "train" in paths and "dev" not in paths:
        box: dict[str, tuple[list[Example], list[Example]]] = {}

        def carved(i: int) -> list[Example]:
            box.setdefault("v", carve_dev(load("train"), data_seed))
            return box["v"][i]

        loaders["train"], loaders["dev"] = (lambda: carved(0)), (lambda: carved(1))
    for split in ("train", "dev"):
        if split not in loaders:
            loaders[split] = unavailable(f"custom task {name} has no {split} file; add it under [files]")
    protocol = {"shots": None, "data_seed": data_seed, "sources": {k: str(v) for k, v in paths.items()}}
    return TaskData(task, protocol, loaders)


def load_custom(path: Path, data_seed: int = 13) -> TaskData:
    """Read a task spec TOML file (see the module docstring)."""
    try:
        spec = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise AutopromptError(f"task spec {path} does not exist") from None
    except tomllib.TOMLDecodeError as err:
        raise AutopromptError(f"task spec {path} is not valid TOML: {err}") from None
    required = ("fields", "label_column", "labels", "template", "verbalizer", "files")
    missing = [k for k in required if k not in spec]
    if missing:
        raise AutopromptError(f"task spec {path} lacks {missing}; see `autoprompt tasks --help`")
    return custom_task(
        spec.get("name", path.stem), spec["files"], spec["fields"], spec["label_column"], spec["labels"],
        spec["template"], spec["verbalizer"], spec.get("metric", "accuracy"), data_seed, path.parent,
    )

