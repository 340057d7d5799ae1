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

Another model gets its own choice where the same procedure on its own scores picks differently
(`MODEL_PROMPTS`, applied by ``load_task(..., model=...)`` and recorded in the protocol as
``manual_prompt``): gemma3-270m, a base model, differs on 10 of 14 tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from autoprompt.errors import AutopromptError
from autoprompt.tasks.base import Task, TaskData
from autoprompt.tasks.readers import read_label_first
from autoprompt.tasks.splits import (
    Make,
    agnews,
    glue_task,
    lmbff_test,
    mrpc,
    rte,
    sentence_task,
    superglue,
)


@dataclass(frozen=True)
class _Builtin:
    task: Task
    make: Make
    shots: tuple[int, ...]


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
        glue_task("sst2/glue", "SST-2", {"sentence": "sentence"}, "label", ("0", "1"),
                   "sst2/glue/train.tsv", "sst2/glue/dev.tsv", ""), (16,)),
    "sst5": _Builtin(
        _t("sst5", _SENT, ("very negative", "negative", "neutral", "positive", "very positive"),
           "{sentence} It was [P]", ("terrible", "bad", "okay", "good", "great"),
           "accuracy", "SST-5 five-way movie-review sentiment",
           "full: train 8,544 / dev 1,101 / test 2,210; 16-shot: LM-BFF"),
        sentence_task(lambda r: read_label_first(r / "sst5/stsa.fine.train"),
                       lambda r: read_label_first(r / "sst5/stsa.fine.dev"),
                       lambda r: read_label_first(r / "sst5/stsa.fine.test"), "sst-5", ("0", "1", "2", "3", "4")),
        (16,)),
    "mr": _Builtin(
        _t("mr", _SENT, ("negative", "positive"), "Review: {sentence}\nSentiment (positive or negative): [P]",
           ("negative", "positive"), "accuracy", "MR movie-review polarity",
           "full: rt-polarity minus LM-BFF's 2,000 test rows; 16-shot: LM-BFF"),
        sentence_task(lambda r: read_label_first(r / "mr/rt-polarity.all"), None, lmbff_test("mr"), "mr",
                       ("0", "1"), exclude_test_from_train=True), (16,)),
    "cr": _Builtin(
        _t("cr", _SENT, ("negative", "positive"), "Review: {sentence}\nSentiment (positive or negative): [P]",
           ("negative", "positive"), "accuracy", "CR customer-review polarity",
           "full: custrev minus LM-BFF's 2,000 test rows; 16-shot: LM-BFF"),
        sentence_task(lambda r: read_label_first(r / "cr/custrev.all"), None, lmbff_test("cr"), "cr",
                       ("0", "1"), exclude_test_from_train=True), (16,)),
    "mpqa": _Builtin(
        _t("mpqa", _SENT, ("negative", "positive"), "Phrase: {sentence}\nSentiment (positive or negative): [P]",
           ("negative", "positive"), "accuracy", "MPQA opinion polarity "
           "of short phrases", "full: mpqa.all minus LM-BFF's 2,000 test rows; 16-shot: LM-BFF"),
        sentence_task(lambda r: read_label_first(r / "mpqa/mpqa.all"), None, lmbff_test("mpqa"), "mpqa",
                       ("0", "1"), exclude_test_from_train=True), (16,)),
    "subj": _Builtin(
        _t("subj", _SENT, ("subjective", "objective"), "{sentence} This is [P]", ("subjective", "objective"),
           "accuracy", "SUBJ subjectivity of movie-review sentences",
           "full: subj.all minus LM-BFF's 2,000 test rows; 16-shot: LM-BFF"),
        sentence_task(lambda r: read_label_first(r / "subj/subj.all"), None, lmbff_test("subj"), "subj",
                       ("0", "1"), exclude_test_from_train=True), (16,)),
    "trec": _Builtin(
        _t("trec", _SENT, ("description", "entity", "abbreviation", "human", "location", "number"),
           "Question: {sentence}\nAnswer type: [P]",
           ("Description", "Entity", "Expression", "Human", "Location", "Number"),
           "accuracy", "TREC six-way question type",
           "full: train 5,452 / test 500; 16-shot: LM-BFF"),
        sentence_task(lambda r: read_label_first(r / "trec/TREC.train.all"), None,
                       lambda r: read_label_first(r / "trec/TREC.test.all"), "trec", ("0", "1", "2", "3", "4", "5")),
        (16,)),
    "rte": _Builtin(
        _t("rte", ("premise", "hypothesis"), ("entailment", "not_entailment"),
           "{premise}\nQuestion: {hypothesis} True or False?\nAnswer: [P]", ("True", "False"),
           "accuracy", "RTE textual entailment",
           "full: GLUE train 2,490 / dev 277 as test; 16-shot: LM-BFF; 32-shot: FewGLUE"),
        rte, (16, 32)),
    "cb": _Builtin(
        _t("cb", ("premise", "hypothesis"), ("entailment", "contradiction", "neutral"),
           "{premise} Question: {hypothesis} Yes, No or Maybe? Answer: [P]", ("Yes", "No", "Maybe"),
           "macro_f1", "CB three-way entailment (macro-F1)",
           "full: SuperGLUE train 250 / val 56 as test; 32-shot: FewGLUE"),
        superglue("cb", {"premise": "premise", "hypothesis": "hypothesis"},
                   ("entailment", "contradiction", "neutral"), True), (32,)),
    "boolq": _Builtin(
        _t("boolq", ("passage", "question"), ("False", "True"),
           "{passage}\nQuestion: {question}?\nAnswer: [P]", ("No", "Yes"), "accuracy",
           "BoolQ yes/no questions on a passage",
           "no full train: FewGLUE 32-shot train + dev32, val 3,270 as test"),
        superglue("boolq", {"passage": "passage", "question": "question"}, ("False", "True"), False), (32,)),
    "mrpc": _Builtin(
        _t("mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"),
           "{sentence1} Question: {sentence2} Same meaning? Answer: [P]", ("No", "Yes"), "f1", "MRPC paraphrase (F1)",
           "full: MSRP train 3,668 / GLUE dev 408 as test; 16-shot: LM-BFF"),
        mrpc, (16,)),
    "qnli": _Builtin(
        _t("qnli", ("question", "sentence"), ("entailment", "not_entailment"),
           "{question} Question: {sentence} Yes or No? Answer: [P]", ("Yes", "No"),
           "accuracy", "QNLI question/sentence entailment",
           "no full train: 16-shot LM-BFF train/dev, GLUE dev 5,463 as test"),
        glue_task("qnli/glue", "QNLI", {"question": "question", "sentence": "sentence"}, "label",
                   ("entailment", "not_entailment"), None, "qnli/glue/dev.tsv",
                   "qnli has no full training set locally"), (16,)),
    "mnli": _Builtin(
        _t("mnli", ("premise", "hypothesis"), ("contradiction", "entailment", "neutral"),
           "{premise}\nQuestion: {hypothesis} True, False or Neither?\nAnswer: [P]", ("False", "True", "Neither"),
           "accuracy", "MNLI three-way entailment",
           "only 16-shot LM-BFF train/dev_matched; no labelled test locally (evaluate with `split=dev`)"),
        glue_task("mnli", "MNLI", {"premise": "sentence1", "hypothesis": "sentence2"}, "gold_label",
                   ("contradiction", "entailment", "neutral"), None, None, "mnli has no full training set locally",
                   "mnli's test (GLUE dev_matched) is not available locally; use `split=dev`", "dev_matched.tsv"),
        (16,)),
    "qqp": _Builtin(
        _t("qqp", ("question1", "question2"), ("not_duplicate", "duplicate"),
           "{question1} Question: {question2} Same question? Answer: [P]", ("No", "Yes"), "f1",
           "QQP duplicate questions (F1)",
           "only 16-shot LM-BFF train/dev; no labelled test locally (evaluate with `split=dev`)"),
        glue_task("qqp", "QQP", {"question1": "question1", "question2": "question2"}, "is_duplicate",
                   ("0", "1"), None, None, "qqp has no full training set locally",
                   "qqp's test (GLUE dev) is not available locally; use `split=dev`"), (16,)),
    "agnews": _Builtin(
        _t("agnews", ("text",), ("world", "sports", "business", "technology"),
           "{text} This article is about [P]", ("world", "sports", "business", "technology"), "accuracy",
           "AG News four-way topic",
           "no full train: official test 7,600; 16-shot: RLPrompt splits"),
        agnews, (16,)),
}


# Where another model's train choice differs from smollm2-135m's: (model, task) → (template, words).
# The same candidates and the same 200 seeded train examples decide
# (``python benchmarks/select_manual_templates.py --model M``, figures in
# ``benchmarks/results/manual_templates_<M>.json``); tasks not listed keep the default prompt.
MODEL_PROMPTS: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {
    # gemma3-270m, a base model: an instruction (mostly a question) before the label words wins
    ("gemma3-270m", "sst2"): (
        "Review: {sentence}\n"
        "Is this review positive or negative?\n"
        "Answer: [P]",
        ("negative", "positive")),
    ("gemma3-270m", "trec"): (
        "Question: {sentence}\n"
        "Is it asking for a description, an entity, an abbreviation, a human, a location or a number?\n"
        "Answer: [P]",
        ("description", "entity", "abbreviation", "human", "location", "number")),
    ("gemma3-270m", "mr"): (
        "Review: {sentence}\n"
        "Is this review positive or negative?\n"
        "Answer: [P]",
        ("negative", "positive")),
    ("gemma3-270m", "cr"): (
        "{sentence} It was [P]",
        ("terrible", "great")),
    ("gemma3-270m", "subj"): (
        "Sentence: {sentence}\n"
        "Subjective or objective: [P]",
        ("subjective", "objective")),
    ("gemma3-270m", "mpqa"): (
        "Phrase: {sentence}\n"
        "Is this phrase positive or negative?\n"
        "Answer: [P]",
        ("negative", "positive")),
    ("gemma3-270m", "sst5"): (
        "Review: {sentence}\n"
        "Rate it terrible, bad, okay, good or great.\n"
        "Answer: [P]",
        ("terrible", "bad", "okay", "good", "great")),
    ("gemma3-270m", "cb"): (
        "{premise}\n"
        "Question: {hypothesis} True, False or Neither?\n"
        "Answer: [P]",
        ("True", "False", "Neither")),
    ("gemma3-270m", "boolq"): (
        "{passage}\n"
        "Question: {question}? Yes or No?\n"
        "Answer: [P]",
        ("No", "Yes")),
    ("gemma3-270m", "mrpc"): (
        "Sentence 1: {sentence1}\n"
        "Sentence 2: {sentence2}\n"
        "Question: Do both sentences mean the same thing?\n"
        "Answer: [P]",
        ("No", "Yes")),
}


def for_model(task: Task, model: str | None) -> Task:
    """``task`` with the manual prompt chosen for ``model`` where it differs from the default."""
    chosen = MODEL_PROMPTS.get((model or "", task.name))
    if chosen is None:
        return task
    template, words = chosen
    return replace(task, template=template, verbalizer={lab: [w] for lab, w in zip(task.labels, words, strict=True)})


def load_builtin(name: str, root: Path, shots: int | None, data_seed: int, model: str | None = None) -> TaskData:
    entry = BUILTIN[name]
    if shots is not None and shots not in entry.shots:
        raise AutopromptError(
            f"`shots` {shots} is not available for {name}; local k-shot splits: {list(entry.shots)} "
            "(or leave `shots` out for the full protocol)"
        )
    loaders, sources = entry.make(root, shots, data_seed)
    protocol: dict[str, Any] = {"shots": shots, "data_seed": data_seed, "sources": sources}
    task = for_model(entry.task, model)
    if task is not entry.task:
        protocol["manual_prompt"] = f"chosen on train for {model}"
    return TaskData(task, protocol, loaders)
