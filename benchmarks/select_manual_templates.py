"""Choose each built-in task's default manual prompt on the *train* split of smollm2-135m.

For every task, a few standard candidates are scored on up to 200 seeded train examples (the
16-shot/32-shot train where the task has no full train); the winner is what
`autoprompt/tasks/builtin.py` fixes in code. Candidates: LM-BFF's cloze template with ``[P]``
moved last, and instruction-style templates that name the label words.

    python benchmarks/select_manual_templates.py [--n 200] [--model smollm2-135m]

Writes ``benchmarks/results/manual_templates.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from autoprompt import Evaluator, Prompt, load_model, load_task
from autoprompt.results.versions import versions

SENT = {
    "cloze (LM-BFF)": ("{sentence} It was [P]", ["terrible", "great"]),
    "instruction": ("Review: {sentence}\nSentiment (positive or negative): [P]", ["negative", "positive"]),
    "instruction-question": ("Review: {sentence}\nIs this review positive or negative?\nAnswer: [P]",
                             ["negative", "positive"]),
}
NLI2 = {
    "cloze (LM-BFF, [P] last)": ("{premise} Question: {hypothesis} Yes or No? Answer: [P]", ["Yes", "No"]),
    "instruction (GPT-3)": ("{premise}\nQuestion: {hypothesis} True or False?\nAnswer: [P]", ["True", "False"]),
}
CANDIDATES: dict[str, dict[str, tuple[str, list[str]]]] = {
    "sst2": SENT, "mr": SENT, "cr": SENT,
    "sst5": {
        "cloze (LM-BFF)": ("{sentence} It was [P]", ["terrible", "bad", "okay", "good", "great"]),
        "instruction": ("Review: {sentence}\nRate it terrible, bad, okay, good or great.\nAnswer: [P]",
                        ["terrible", "bad", "okay", "good", "great"]),
    },
    "trec": {
        "cloze (LM-BFF words)": ("Question: {sentence}\nAnswer type: [P]",
                                 ["Description", "Entity", "Expression", "Human", "Location", "Number"]),
        "instruction": ("Question: {sentence}\nIs it asking for a description, an entity, an abbreviation, a human, "
                        "a location or a number?\nAnswer: [P]",
                        ["description", "entity", "abbreviation", "human", "location", "number"]),
    },
    "rte": NLI2,
    "cb": {
        "cloze (LM-BFF, [P] last)": ("{premise} Question: {hypothesis} Yes, No or Maybe? Answer: [P]",
                                     ["Yes", "No", "Maybe"]),
        "instruction (GPT-3)": ("{premise}\nQuestion: {hypothesis} True, False or Neither?\nAnswer: [P]",
                                ["True", "False", "Neither"]),
    },
    "mnli": {
        "cloze (LM-BFF, [P] last)": ("{premise} Question: {hypothesis} Yes, No or Maybe? Answer: [P]",
                                     ["No", "Yes", "Maybe"]),
        "instruction (GPT-3)": ("{premise}\nQuestion: {hypothesis} True, False or Neither?\nAnswer: [P]",
                                ["False", "True", "Neither"]),
    },
    "qnli": {
        "cloze (LM-BFF, [P] last)": ("{question} Question: {sentence} Yes or No? Answer: [P]", ["Yes", "No"]),
        "instruction": ("{sentence}\nQuestion: {question} Does the sentence answer the question?\nAnswer: [P]",
                        ["Yes", "No"]),
    },
    "boolq": {
        "cloze (PET)": ("{passage}\nQuestion: {question}?\nAnswer: [P]", ["No", "Yes"]),
        "instruction": ("{passage}\nQuestion: {question}? Yes or No?\nAnswer: [P]", ["No", "Yes"]),
    },
    "mrpc": {
        "cloze (LM-BFF, [P] last)": ("{sentence1} Question: {sentence2} Same meaning? Answer: [P]", ["No", "Yes"]),
        "instruction": ("Sentence 1: {sentence1}\nSentence 2: {sentence2}\nQuestion: Do both sentences mean the same "
                        "thing?\nAnswer: [P]", ["No", "Yes"]),
    },
    "qqp": {
        "cloze (LM-BFF, [P] last)": ("{question1} Question: {question2} Same question? Answer: [P]", ["No", "Yes"]),
        "instruction": ("Question 1: {question1}\nQuestion 2: {question2}\nQuestion: Do both questions ask the same "
                        "thing?\nAnswer: [P]", ["No", "Yes"]),
    },
    "mpqa": {
        "cloze (LM-BFF)": ("{sentence} It was [P]", ["terrible", "great"]),
        "instruction": ("Phrase: {sentence}\nSentiment (positive or negative): [P]", ["negative", "positive"]),
        "instruction-question": ("Phrase: {sentence}\nIs this phrase positive or negative?\nAnswer: [P]",
                                 ["negative", "positive"]),
    },
    "subj": {
        "cloze (LM-BFF)": ("{sentence} This is [P]", ["subjective", "objective"]),
        "instruction": ("Sentence: {sentence}\nSubjective or objective: [P]", ["subjective", "objective"]),
        "instruction-question": ("Sentence: {sentence}\nIs this sentence an opinion or a fact?\nAnswer: [P]",
                                 ["opinion", "fact"]),
    },
    "agnews": {
        "cloze": ("{text} This article is about [P]", ["world", "sports", "business", "technology"]),
        "instruction": ("Article: {text}\nIs this article about world, sports, business or technology?\nAnswer: [P]",
                        ["world", "sports", "business", "technology"]),
    },
}
NO_FULL_TRAIN = {"qnli": 16, "mnli": 16, "qqp": 16, "agnews": 16}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tasks", default=",".join(CANDIDATES))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "manual_templates.json"))
    args = parser.parse_args()
    lm = load_model(args.model)
    report = {"model": args.model, "n": args.n, "split": "train", "versions": versions(), "tasks": {}}
    for name in args.tasks.split(","):
        data = load_task(name, shots=NO_FULL_TRAIN.get(name))
        train = list(data.train)
        random.Random(0).shuffle(train)
        train = train[: args.n]
        ev = Evaluator(lm, data.task)
        rows = {}
        for label, (template, words) in CANDIDATES[name].items():
            prompt = Prompt(template, dict(zip(data.task.labels, [[w] for w in words])))
            start = time.perf_counter()
            score = ev.score(prompt, train).score
            rows[label] = {"template": template, "words": words, "score": round(score, 4),
                           "seconds": round(time.perf_counter() - start, 1)}
            print(f"{name:7s} {score:.3f}  {label}: {template!r} {words}", flush=True)
        best = max(rows, key=lambda k: rows[k]["score"])
        report["tasks"][name] = {"n": len(train), "metric": data.task.metric, "candidates": rows, "best": best}
        print(f"{name:7s} best: {best}", flush=True)
    out = Path(args.out)
    if out.is_file():  # keep the other tasks' figures when only some are rerun
        earlier = json.loads(out.read_text())
        if earlier.get("model") == report["model"] and earlier.get("n") == report["n"]:
            report["tasks"] = {**earlier.get("tasks", {}), **report["tasks"]}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
