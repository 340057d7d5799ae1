"""LAMA T-REx fact retrieval (``lama:P19``) as ranking over the relation's candidate objects.

Each relation is a task whose "labels" are every object that occurs in the relation's data, and
whose verbalizer maps each object to its own name; the evaluator ranks them by the log-prob of
the name's full token sequence (P@1, P@10, MRR). Splits: AutoPrompt's train/dev, and the
original LAMA test facts (ParaRel's vocabulary-filtered copy where LAMA's file is missing).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import cast

from autoprompt.errors import AutopromptError
from autoprompt.tasks.base import Example, SplitLoader, Task, TaskData
from autoprompt.tasks.readers import read_jsonl

# LAMA templates whose object is not last, rewritten so ``[P]`` ends the prompt (causal LMs).
_OBJECT_LAST = {
    "P413": "{subject} plays in the position of [P]",
    "P1923": "The teams that took part in {subject} include [P]",
    "P106": "By profession, {subject} is a [P]",
    "P102": "{subject} is a member of the political party [P]",
    "P27": "{subject} is a citizen of [P]",
    "P136": "{subject} plays music of the genre [P]",
    "P140": "{subject} is affiliated with the religion of [P]",
    "P190": "{subject} is a twin city of [P]",
}


def lama_root(root: Path) -> Path:
    return root / "lama_trex"


def lama_relations(root: Path) -> list[str]:
    """All T-REx relation ids with AutoPrompt train data, sorted."""
    base = lama_root(root) / "autoprompt_original"
    if not base.is_dir():
        raise AutopromptError(f"LAMA data not found at {base}; point AUTOPROMPT_DATA_DIR at the data folder")
    return sorted(p.name for p in base.iterdir() if p.is_dir())


def _template(root: Path, relation: str) -> str:
    for line in (lama_root(root) / "relations.jsonl").read_text().splitlines():
        meta = json.loads(line)
        if meta["relation"] == relation:
            if relation in _OBJECT_LAST:
                return _OBJECT_LAST[relation]
            text: str = meta["template"].replace("[X]", "{subject}").replace("[Y]", "[P]")
            return text.rstrip(" .")
    raise AutopromptError(f"relation {relation} is not in relations.jsonl")


def load_lama(relation: str, root: Path, shots: int | None) -> TaskData:
    """The task ``lama:<relation>`` with AutoPrompt's train/dev and the LAMA test facts."""
    if shots is not None:
        raise AutopromptError("LAMA has no k-shot protocol; leave `shots` out")
    known = lama_relations(root)
    if relation not in known:
        raise AutopromptError(f"unknown LAMA relation {relation!r}; known: {', '.join(known)}")
    base = lama_root(root) / "autoprompt_original" / relation
    test_path = base / "test.jsonl"
    if not test_path.is_file():
        test_path = lama_root(root) / "pararel_trex_lms_vocab" / f"{relation}.jsonl"
    rows = {"train": read_jsonl(base / "train.jsonl"), "dev": read_jsonl(base / "dev.jsonl"),
            "test": read_jsonl(test_path)}
    objects = sorted({r["obj_label"] for split in rows.values() for r in split})
    index = {o: i for i, o in enumerate(objects)}
    examples = {s: [Example({"subject": r["sub_label"]}, index[r["obj_label"]]) for r in split]
                for s, split in rows.items()}
    majority = Counter(r["obj_label"] for r in rows["train"]).most_common(1)[0][0]
    task = Task(
        name=f"lama:{relation}", fields=("subject",), labels=tuple(objects),
        template=_template(root, relation), verbalizer={o: [o] for o in objects}, metric="lama",
        description=f"LAMA T-REx {relation}: rank {len(objects)} candidate objects",
        availability="AutoPrompt train/dev; LAMA test",
    )
    protocol = {"shots": None, "data_seed": None, "majority_label": index[majority],
                "sources": {"train": str(base / "train.jsonl"), "test": str(test_path)}}
    # mypy types a lambda with a default argument as taking one: cast to the no-argument loader it is
    return TaskData(task, protocol, {s: cast(SplitLoader, lambda s=s: examples[s]) for s in examples})
