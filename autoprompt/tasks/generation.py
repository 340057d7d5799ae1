"""Generation tasks: inputs with reference texts, split *by input* so no input is in two splits.

E2E (Novikova et al. 2017) is built in: restaurant meaning representations (``mr``) and human
references. The copy in ``<data>/e2e`` has the official dev and test sets but not the 42k-reference
train set, so the protocol is Prefix-Tuning's low-data one (Li and Liang 2021, §7.2): ``--shots N``
draws N training references from ``devset.csv`` by meaning representation (whole MRs in a seeded
order, the last one cut to reach N), and a dev set of the MRs that follow, with 30% as many
references as train (at least 4 MRs); without ``--shots`` every dev-set MR outside a seeded 10% dev
slice trains. ``test`` is ``testset_w_refs.csv``: 630 MRs, each scored against all its references.

A train example carries one reference; dev and test examples carry all of their input's references.
Custom generation tasks (a file with an input and a target column) follow the same protocol.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autoprompt.errors import AutopromptError
from autoprompt.io import excerpt
from autoprompt.tasks.base import Example, SplitLoader, Task, TaskData
from autoprompt.tasks.readers import read_table

E2E_TASK = Task(
    "e2e", ("mr",), (), "{mr}\nDescription: [P]", {}, "bleu",
    "E2E NLG: restaurant meaning representation → one-sentence description (BLEU, ROUGE-L; generation)",
    "dev and test (the train set is absent: low-data protocol from the dev set)", kind="generation",
)

Group = tuple[dict[str, str], list[str]]  # one input's fields and all its references


def group_references(rows: Sequence[Mapping[str, str]], columns: Mapping[str, str], target: str,
                     source: str) -> list[Group]:
    """The rows as (fields, references) per distinct input, in order of first appearance."""
    groups: dict[tuple[tuple[str, str], ...], Group] = {}
    for n, row in enumerate(rows, start=1):
        missing = [c for c in [*columns.values(), target] if c not in row]
        if missing:
            raise AutopromptError(f"{source} row {n} lacks column(s) {excerpt(missing)}; it has {excerpt(sorted(row))}")
        fields = {f: str(row[c]).strip() for f, c in columns.items()}
        ref = str(row[target]).strip()
        if not ref:
            continue
        key = tuple(sorted(fields.items()))
        groups.setdefault(key, (fields, []))[1].append(ref)
    return list(groups.values())


def one_per_reference(groups: Sequence[Group]) -> list[Example]:
    """Training examples: one per (input, reference) pair."""
    return [Example(fields, 0, (ref,)) for fields, refs in groups for ref in refs]


def all_references(groups: Sequence[Group]) -> list[Example]:
    """Evaluation examples: one per input, with every reference."""
    return [Example(fields, 0, tuple(refs)) for fields, refs in groups]


def split_by_input(groups: Sequence[Group], shots: int | None, seed: int,
                   draw_dev: bool = True) -> tuple[list[Example], list[Example]]:
    """``(train, dev)`` from one pool, no input in both (see the module docstring).

    Args:
        groups: the pool's inputs and references.
        shots: training references (low-data protocol), or None for the whole pool less a dev slice.
        seed: the order the inputs are drawn in.
        draw_dev: False where a dev set is given: train only (all of the pool without ``shots``).
    """
    order = list(groups)
    random.Random(f"by-input:{seed}").shuffle(order)
    if shots is None:  # the whole pool: a tenth of its inputs for dev, unless a dev set is given
        n_dev = max(1, len(order) // 10) if draw_dev else 0
        return one_per_reference(order[n_dev:]), all_references(order[:n_dev])
    train: list[Example] = []
    taken = 0  # inputs drawn: an input's references go to train until it holds `shots`
    while len(train) < shots and taken < len(order):
        fields, refs = order[taken]
        train.extend(Example(fields, 0, (r,)) for r in refs[: shots - len(train)])
        taken += 1
    dev: list[Example] = []  # the next inputs, with ≥ 30% as many references as train and ≥ 4 inputs
    while draw_dev and taken < len(order) and (sum(len(ex.targets) for ex in dev) < math.ceil(0.3 * shots)
                                               or len(dev) < 4):
        fields, refs = order[taken]
        dev.append(Example(fields, 0, tuple(refs)))
        taken += 1
    if len(train) < shots or (draw_dev and not dev):
        total = sum(len(refs) for _, refs in groups)
        raise AutopromptError(f"{shots} training references{' and a dev set' if draw_dev else ''} need more than "
                              f"the pool's {total} references over {len(groups)} inputs; use fewer shots")
    return train, dev


def generation_data(task: Task, pool: Sequence[Group], test: Sequence[Group], shots: int | None, seed: int,
                    sources: Mapping[str, str], dev: Sequence[Group] | None = None) -> TaskData:
    """A generation task's splits: ``test`` (and ``dev``) as given; train (and dev, when none is
    given) drawn by input from ``pool``, less every input that is also in a given split."""
    held_out = {tuple(sorted(fields.items())) for fields, _ in [*test, *(dev or [])]}
    pool = [g for g in pool if tuple(sorted(g[0].items())) not in held_out]
    box: dict[str, tuple[list[Example], list[Example]]] = {}

    def drawn(i: int) -> list[Example]:
        if "v" not in box:
            box["v"] = split_by_input(pool, shots, seed, draw_dev=dev is None)
        return box["v"][i]

    given_dev = all_references(dev) if dev is not None else None
    loaders: dict[str, SplitLoader] = {"train": lambda: drawn(0),
                                       "dev": (lambda: given_dev) if given_dev is not None else (lambda: drawn(1)),
                                       "test": lambda: all_references(test)}
    protocol: dict[str, Any] = {"shots": shots, "data_seed": seed, "sources": dict(sources),
                                "split": "by input: no input in two splits",
                                "shots_unit": "training references"}
    return TaskData(task, protocol, loaders)


def load_e2e(root: Path, shots: int | None, seed: int) -> TaskData:
    """E2E from ``<root>/e2e`` (``devset.csv`` → train/dev by MR, ``testset_w_refs.csv`` → test)."""
    folder = root / "e2e"
    files = {"pool": folder / "devset.csv", "test": folder / "testset_w_refs.csv"}
    for path in files.values():
        if not path.is_file():
            raise AutopromptError(f"E2E data file {path} does not exist; the data folder needs e2e/devset.csv "
                                  "and e2e/testset_w_refs.csv (see its README)")
    columns = {"mr": "mr"}
    rows = {name: read_table(path, "csv") for name, path in files.items()}
    pool = group_references(rows["pool"], columns, "ref", str(files["pool"]))
    test = group_references(rows["test"], columns, "ref", str(files["test"]))
    return generation_data(E2E_TASK, pool, test, shots, seed,
                           {"train": f"{files['pool']} (by MR)", "dev": f"{files['pool']} (by MR)",
                            "test": str(files["test"])})
