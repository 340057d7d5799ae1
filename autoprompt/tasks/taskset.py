"""Task sets: ``sst2,mr,cr`` as one task whose splits are the union of its members' (P-tuning v2's
multi-task setting: one prompt, e.g. one shared prefix, trained on every member's data at once).

The members must ask the same question: the same input fields, labels and kind. The set's prompt is
the first member's manual prompt, applied to every member's inputs; after the search each member
is scored on its own test next to its own manual prompt (the run's ``members``), and the leaderboard
row is the set's (``sst2+mr+cr``). Every example of the set carries its member's name (`Example.task`),
so a prompt with a per-task part (P-tuning v2's ``task_tokens``) scores each input with its own part.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from autoprompt.errors import AutopromptError
from autoprompt.tasks.base import Example, Task, TaskData


def load_task_set(names: Sequence[str], load: Callable[[str], TaskData]) -> TaskData:
    """One task over the union of ``names``' splits (each member loaded by ``load``)."""
    if len(set(names)) != len(names) or len(names) < 2:
        raise AutopromptError(f"a task set needs two or more different tasks, got {list(names)}")
    members = [load(name) for name in names]
    loaded = [m.task.name for m in members]
    if len(set(loaded)) != len(loaded):  # two spellings or files of one task: their examples' tags would merge
        raise AutopromptError(f"a task set needs two or more different tasks, but {list(names)} load as {loaded}")
    first = members[0].task
    for member in members[1:]:
        t = member.task
        if (t.fields, t.labels, t.kind, t.metric) != (first.fields, first.labels, first.kind, first.metric):
            raise AutopromptError(
                f"tasks in a set must share input fields, labels and metric: {first.name} has fields "
                f"{list(first.fields)}, labels {list(first.labels)}, {first.metric}; {t.name} has "
                f"{list(t.fields)}, {list(t.labels)}, {t.metric}; train them one by one")
    task = Task("+".join(m.task.name for m in members), first.fields, first.labels, first.template,
                first.verbalizer, first.metric, f"task set: {', '.join(m.task.name for m in members)}",
                kind=first.kind)

    def union(split: str) -> Callable[[], list[Example]]:
        return lambda: union_split(members, split)

    protocol: dict[str, Any] = {
        "shots": members[0].protocol.get("shots"), "data_seed": members[0].protocol.get("data_seed"),
        "members": [m.task.name for m in members],
        "sources": {m.task.name: m.protocol.get("sources") for m in members},
        "set_prompt": f"{first.name}'s manual prompt on every member's inputs",
    }
    return TaskData(task, protocol, {s: union(s) for s in ("train", "dev", "test")}, members=members)


def union_split(members: Sequence[TaskData], split: str) -> list[Example]:
    """The members' ``split`` in member order, each example tagged with its member's name (a
    prompt's per-task part, `SoftPrompt.for_task`, is picked by it)."""
    return [dataclasses.replace(ex, task=m.task.name) for m in members for ex in m.split(split)]
