"""Verbalizer search: conformance, and recovery of planted label words by every method."""

from __future__ import annotations

import pytest
import torch

from autoprompt import Prompt, Task, TaskData
from autoprompt.search import SearchSpec, run_search
from autoprompt.testing import tiny_causal_lm, tiny_masked_lm, tiny_task
from autoprompt.testing.conformance import check_strategy

METHODS = ["likelihood", "probe", "petal"]


@pytest.mark.parametrize("method", METHODS)
def test_conformance(method, causal, task):
    check_strategy("verbalizer", {"method": method, "k": 4, "n_pairs": 5}, budget=200, lm=causal, data=task)


def test_conformance_masked_multi_token(masked, task):
    check_strategy("verbalizer", {"k": 4, "max_word_tokens": 3, "template": "{sentence} it was [P] ."},
                   budget=200, lm=masked, data=task)


def planted_task(lm, template: str, positive: str, negative: str) -> TaskData:
    """Relabel the tiny sentences by the side of a random direction ``u`` their slot state falls on,
    and make the LM head say ``positive`` along ``u`` and ``negative`` against it."""
    base = tiny_task(n=96, seed=1)
    prompt = Prompt(template, {"negative": [negative], "positive": [positive]})
    examples = base.train + base.dev + base.test
    hidden, _ = lm.slot_features([lm.encode(prompt, ex) for ex in examples])
    # a random direction orthogonal to the mean state: the classes split near zero, balanced
    mean = torch.nn.functional.normalize(hidden.mean(0), dim=0)
    u = torch.randn(hidden.shape[1], generator=torch.Generator().manual_seed(0))
    u = torch.nn.functional.normalize(u - (u @ mean) * mean, dim=0)
    proj = (hidden @ u).tolist()
    assert 0.3 < sum(p > 0 for p in proj) / len(proj) < 0.7
    relabelled = [type(ex)(ex.fields, int(p > 0)) for ex, p in zip(examples, proj, strict=True)]
    table = lm.word_table(prompt, ("negative", "positive"))
    head = lm.model.get_output_embeddings().weight
    with torch.no_grad():
        head[table[1][0][0]] = 10 * u
        head[table[0][0][0]] = -10 * u
    n = len(base.train)
    dev_end = n + len(base.dev)
    splits = {"train": relabelled[:n], "dev": relabelled[n:dev_end], "test": relabelled[dev_end:]}
    task = Task("planted", ("sentence",), ("negative", "positive"), template,
                {"negative": ["movie"], "positive": ["film"]})  # a manual verbalizer with no signal
    return TaskData(task, {"shots": None, "data_seed": 0}, {s: (lambda s=s: splits[s]) for s in splits})


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", ["causal", "masked"])
def test_recovers_planted_words(method, kind, tmp_path):
    if kind == "causal":
        lm, template = tiny_causal_lm(tie=False), "{sentence} It was [P]"
    else:
        lm, template = tiny_masked_lm(tie=False), "{sentence} it was [P] ."
    data = planted_task(lm, template, positive="good", negative="bad")
    result = run_search(SearchSpec(task="planted", strategy="verbalizer", params={"method": method, "k": 5},
                                   budget=2000, out=str(tmp_path)), lm=lm, data=data)
    assert result.prompt["verbalizer"] == {"negative": ["bad"], "positive": ["good"]}
    assert result.scores.dev > result.baseline.dev


def test_composes_with_gradient_both_ways(causal, task, tmp_path):
    """Artifacts feed each other (ungated: on a random model the gate would report the manual prompt)."""
    words = run_search(SearchSpec(task="tiny", strategy="verbalizer", params={"k": 4, "gate": False}, budget=200,
                                  out=str(tmp_path)), lm=causal, data=task)
    trig = run_search(SearchSpec(task="tiny", strategy="gradient", budget=200, out=str(tmp_path),
                                 params={"num_candidates": 3, "batch_size": 6, "gate": False,
                                         "verbalizer": f"{words.run_dir}/prompt.json"}), lm=causal, data=task)
    assert trig.prompt["verbalizer"] == words.prompt["verbalizer"]
    # and the other way round: label words for a prompt that already has triggers
    tpl = "{sentence} [T] [T] It was [P]"
    first = run_search(SearchSpec(task="tiny", strategy="gradient", budget=200, out=str(tmp_path),
                                  params={"num_candidates": 3, "batch_size": 6, "template": tpl,
                                          "gate": False}), lm=causal, data=task)
    then = run_search(SearchSpec(task="tiny", strategy="verbalizer", budget=200, out=str(tmp_path),
                                 params={"k": 4, "gate": False, "prompt": f"{first.run_dir}/prompt.json"}),
                      lm=causal, data=task)
    assert then.prompt["template"] == tpl
    assert then.prompt["trigger_ids"] == first.prompt["trigger_ids"]
