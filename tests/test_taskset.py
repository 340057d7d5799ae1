"""Task sets (``--task sst2,mr,cr``): one prompt trained on the union, each member scored on its own test."""

from __future__ import annotations

import pytest

from autoprompt import AutopromptError, Evaluator
from autoprompt.leaderboard import load_rows
from autoprompt.search import SearchSpec, run_search
from autoprompt.tasks import load_task
from autoprompt.tasks.base import Example, Task, TaskData
from autoprompt.tasks.taskset import load_task_set
from autoprompt.testing import tiny_task
from autoprompt.testing.conformance import check_strategy


def _planted(lm, seed: int, name: str) -> TaskData:
    """A tiny task whose every label is the class the manual prompt does *not* pick (starts near 0%)."""
    data = tiny_task(n=12, seed=seed)
    preds = Evaluator(lm, data.task).score(data.task.default_prompt, data.train).preds
    target = 1 - int(preds.float().mean().round())
    examples = [Example(ex.fields, target) for ex in data.train]
    task = Task(name, data.task.fields, data.task.labels, data.task.template, data.task.verbalizer)
    return TaskData(task, data.protocol, {s: (lambda: examples) for s in ("train", "dev", "test")})


@pytest.fixture(scope="module")
def members(causal):
    return {"a": _planted(causal, 1, "a"), "b": _planted(causal, 2, "b")}


def test_a_task_set_is_the_union_of_its_members(members):
    data = load_task_set(["a", "b"], members.__getitem__)
    assert data.task.name == "a+b" and data.protocol["members"] == ["a", "b"]
    assert data.train == members["a"].train + members["b"].train and data.test == members["a"].test + members["b"].test
    assert [m.task.name for m in data.members] == ["a", "b"]


def test_members_must_ask_the_same_question(data_dir):
    with pytest.raises(AutopromptError, match="must share input fields, labels and metric"):
        load_task("sst2,trec", data_dir, 16, 13)
    with pytest.raises(AutopromptError, match="two or more different tasks"):
        load_task("sst2,sst2", data_dir, 16, 13)
    data = load_task("sst2,mr,cr", data_dir, 16, 13)
    assert data.task.name == "sst2+mr+cr" and len(data.train) == 3 * 32 and len(data.test) == 872 + 2000 + 2000


def test_one_shared_prefix_learns_a_planted_problem_of_both_members_from_their_union(causal, members, tmp_path):
    data = load_task_set(["a", "b"], members.__getitem__)
    params = {"steps": 40, "eval_every": 10, "lr": 0.05, "patience": 0, "batch_size": 8, "gate": False}
    result = run_search(SearchSpec(task="a,b", strategy="prefix", params=params, budget=10_000, out=str(tmp_path)),
                        lm=causal, data=data)
    assert set(result["members"]) == {"a", "b"}
    for name, member in result["members"].items():  # each member on its own test, next to its own manual prompt
        assert member["manual_test"] < 0.25 and member["test"] == 1.0, name
        assert member["n"] == len(members[name].test)
        assert member["delta"]["delta"] == pytest.approx(member["test"] - member["manual_test"])
    rows = load_rows(tmp_path / "leaderboard.db")
    assert [r["task"] for r in rows] == ["a+b"]  # the row names the task set


def test_prefix_conforms_on_a_task_set(causal, members):
    check_strategy("prefix", {"steps": 4, "eval_every": 2, "batch_size": 4}, budget=300, lm=causal,
                   data=load_task_set(["a", "b"], members.__getitem__))
