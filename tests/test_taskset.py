"""Task sets (``--task sst2,mr,cr``): one prompt trained on the union, each member scored on its own test."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from autoprompt import AutopromptError, Evaluator, SoftPrompt, load_prompt
from autoprompt.api import predict
from autoprompt.results.leaderboard import load_rows
from autoprompt.results.recording import record_finished
from autoprompt.scoring.budget import Budget
from autoprompt.search import SearchContext, SearchSpec, create, run_search
from autoprompt.search.loop import limit_test
from autoprompt.tasks import load_task
from autoprompt.tasks.base import Example, Task, TaskData
from autoprompt.tasks.taskset import load_task_set
from autoprompt.testing import tiny_task
from autoprompt.testing.conformance import check_strategy


def _planted(lm, seed: int, name: str, flip: bool = False) -> TaskData:
    """A tiny task whose every label is the class the manual prompt does *not* pick (starts near 0%);
    ``flip``: the class it does pick (the same inputs then need the opposite answer)."""
    data = tiny_task(n=12, seed=seed)
    preds = Evaluator(lm, data.task).score(data.task.default_prompt, data.train).preds
    target = 1 - int(preds.float().mean().round())
    examples = [Example(ex.fields, 1 - target if flip else target) for ex in data.train]
    task = Task(name, data.task.fields, data.task.labels, data.task.template, data.task.verbalizer)
    return TaskData(task, data.protocol, {s: (lambda: examples) for s in ("train", "dev", "test")})


@pytest.fixture(scope="module")
def members(causal):
    return {"a": _planted(causal, 1, "a"), "b": _planted(causal, 2, "b")}


def test_a_task_set_is_the_union_of_its_members(members):
    data = load_task_set(["a", "b"], members.__getitem__)
    assert data.task.name == "a+b" and data.protocol["members"] == ["a", "b"]
    untagged = [dataclasses.replace(ex, task="") for ex in data.train]
    assert untagged == members["a"].train + members["b"].train and len(data.test) == 2 * len(members["a"].test)
    assert [ex.task for ex in data.train] == ["a"] * len(members["a"].train) + ["b"] * len(members["b"].train)
    assert [m.task.name for m in data.members] == ["a", "b"]
    limited = limit_test(data, 3)  # a limited set's test is still tagged member by member
    assert [ex.task for ex in limited.test] == ["a"] * 3 + ["b"] * 3


def test_members_must_ask_the_same_question(data_dir):
    with pytest.raises(AutopromptError, match="must share input fields, labels and metric"):
        load_task("sst2,trec", data_dir, 16, 13)
    with pytest.raises(AutopromptError, match="two or more different tasks"):
        load_task("sst2,sst2", data_dir, 16, 13)
    with pytest.raises(AutopromptError, match=r"load as \['sst2', 'sst2'\]"):
        load_task("sst2,SST2", data_dir, 16, 13)
    data = load_task("sst2,mr,cr", data_dir, 16, 13)
    assert data.task.name == "sst2+mr+cr" and len(data.train) == 3 * 32 and len(data.test) == 872 + 2000 + 2000


def test_one_shared_prefix_learns_a_planted_problem_of_both_members_from_their_union(causal, members, tmp_path):
    data = load_task_set(["a", "b"], members.__getitem__)
    params = {"steps": 40, "eval_every": 10, "lr": 0.05, "patience": 0, "batch_size": 8, "gate": False}
    result = run_search(SearchSpec(task="a,b", strategy="prefix", params=params, budget=10_000, out=str(tmp_path)),
                        lm=causal, data=data)
    assert set(result.members) == {"a", "b"}
    for name, member in result.members.items():  # each member on its own test, next to its own manual prompt
        assert member["manual_test"] < 0.25 and member["test"] == 1.0, name
        assert member["n"] == len(members[name].test)
        assert member["delta"]["delta"] == pytest.approx(member["test"] - member["manual_test"])
    record_finished(result, None, tmp_path)
    rows = load_rows(tmp_path / "leaderboard.db")
    assert [r["task"] for r in rows] == ["a+b"]  # the row names the task set


def test_prefix_conforms_on_a_task_set(causal, members):
    check_strategy("prefix", {"steps": 4, "eval_every": 2, "batch_size": 4}, budget=300, lm=causal,
                   data=load_task_set(["a", "b"], members.__getitem__))


@pytest.fixture(scope="module")
def opposed(causal):
    """Two members with the same inputs and opposite labels: no one shared prompt can answer both."""
    return {"a": _planted(causal, 1, "a"), "b": _planted(causal, 1, "b", flip=True)}


def test_a_per_task_part_learns_what_one_shared_prefix_cannot(causal, opposed, tmp_path):
    data = load_task_set(["a", "b"], opposed.__getitem__)
    params = {"steps": 40, "eval_every": 10, "lr": 0.05, "patience": 0, "batch_size": 8, "gate": False}
    shared = run_search(SearchSpec(task="a,b", strategy="prefix", params=params, budget=10_000,
                                   out=str(tmp_path / "shared")), lm=causal, data=data)
    # the same inputs get the same answer: what one member gains the other loses
    assert shared.members["a"]["test"] + shared.members["b"]["test"] == pytest.approx(1.0)
    own = run_search(SearchSpec(task="a,b", strategy="prefix", params={**params, "task_tokens": 2}, budget=10_000,
                                out=str(tmp_path / "own")), lm=causal, data=data)
    assert own.members["a"]["test"] == 1.0 and own.members["b"]["test"] == 1.0
    parts = own.details["task_parameters"]
    assert set(parts) == {"a", "b"} and parts["a"] == 2 * own.details["trainable_parameters"] // (10 + 2 * 2)

    prompt = load_prompt(f"{own.run_dir}/prompt.json")  # saved with both parts, in member order
    assert prompt.task_names == ("a", "b")
    for name, member in opposed.items():
        score = Evaluator(causal, member.task).score(prompt.for_task(name), member.test).score
        assert score == own.members[name]["test"]
        rows = predict(prompt, [ex.fields for ex in member.test[:3]], model=causal, member=name)
        assert [r["label"] for r in rows] == [member.task.labels[ex.label] for ex in member.test[:3]]
    with pytest.raises(AutopromptError, match="per-task parts for a, b; pick the inputs' task with `member`"):
        predict(prompt, [opposed["a"].test[0].fields], model=causal)
    with pytest.raises(AutopromptError, match="per-task parts for a, b, not for an input of no task"):
        Evaluator(causal, opposed["a"].task).score(prompt, opposed["a"].test)
    with pytest.raises(AutopromptError, match=r"no per-task parts, so `member` \('a'\) picks nothing"):
        predict(opposed["a"].task.default_prompt, [opposed["a"].test[0].fields], model=causal, member="a")


def test_task_tokens_needs_a_task_set_and_a_prefix(causal, members, tmp_path):
    with pytest.raises(AutopromptError, match="is one task; search a set"):
        run_search(SearchSpec(task="a", strategy="prefix", params={"task_tokens": 2, "steps": 2}, budget=1000,
                              out=str(tmp_path)), lm=causal, data=members["a"])
    with pytest.raises(AutopromptError, match="use strategy=prefix"):
        run_search(SearchSpec(task="a", strategy="prompt_tuning", params={"task_tokens": 2}, budget=1000,
                              out=str(tmp_path)), lm=causal, data=members["a"])
    with pytest.raises(AutopromptError, match="with task_tokens use calibration=none"):
        create("prefix", {"task_tokens": 2, "calibration": "contextual"})


def test_a_soft_prompt_with_task_parts_round_trips_and_prefixes_each_member(tmp_path):
    shared, a, b = torch.randn(2, 2, 1, 3, 4), torch.randn(2, 2, 1, 2, 4), torch.randn(2, 2, 1, 2, 4)
    soft = SoftPrompt(prefix=shared, tasks={"zeta": a, "alpha": b})
    assert torch.equal(soft.for_task("zeta").prefix, torch.cat([shared, a], dim=3))
    assert soft.for_task("alpha").prefix_length == 5 and soft.for_task("alpha").tasks is None
    soft.save(tmp_path / "soft.safetensors")
    loaded = SoftPrompt.load(tmp_path / "soft.safetensors")
    assert loaded.task_names == ("zeta", "alpha") and loaded.digest == soft.digest
    with pytest.raises(AutopromptError, match="beside a shared prefix"):
        SoftPrompt(slots=torch.randn(2, 4), tasks={"a": a})


def test_prefix_with_task_parts_conforms_on_a_task_set(causal, members):
    check_strategy("prefix", {"steps": 4, "eval_every": 2, "batch_size": 4, "task_tokens": 1}, budget=300,
                   lm=causal, data=load_task_set(["a", "b"], members.__getitem__))


def test_a_subset_of_scores_recomputes_the_metric_on_its_rows():
    from autoprompt.scoring.metrics import score  # noqa: PLC0415
    from autoprompt.scoring.scores import EvalResult  # noqa: PLC0415

    gen = torch.Generator().manual_seed(0)
    logprobs, labels = torch.randn(12, 3, generator=gen), torch.randint(0, 3, (12,), generator=gen)
    whole = EvalResult("macro_f1", score("macro_f1", logprobs, labels), logprobs, labels)
    rows = torch.arange(4, 10)
    part = whole.subset(rows)
    assert part.n == 6 and torch.equal(part.logprobs, logprobs[4:10])
    assert part.score == score("macro_f1", logprobs[4:10], labels[4:10])


def test_randomly_initialised_task_parts_draw_noise_of_their_own(causal, members):
    data = load_task_set(["a", "b"], members.__getitem__)
    ctx = SearchContext(causal, data.task, data.train, data.dev, Evaluator(causal, data.task, budget=Budget()),
                        Budget(), seed=3)
    searcher = create("prefix", {"init": "random", "num_tokens": 2, "task_tokens": 2})
    soft = searcher.build(ctx)()
    a, b, shared = soft.tasks["a"], soft.tasks["b"], soft.prefix
    assert float(a.std()) > 0 and not torch.equal(a, b)  # each member its own stream, not copies of one draw
    assert not torch.equal(a.flatten()[:8], shared.flatten()[:8])  # nor the shared prefix's leading values
    again = searcher.build(ctx)()  # reproducible from the seed
    assert torch.equal(again.tasks["a"], a) and torch.equal(again.prefix, shared)
