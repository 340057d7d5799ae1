"""Paraphrase strategy: conformance, slot preservation, mining, ensembles."""

from __future__ import annotations

import pytest

from autoprompt import Budget, Ensemble, Evaluator, Prompt, Template
from autoprompt.search import SearchContext, SearchSpec, create, run_search
from autoprompt.testing.conformance import check_strategy


def context(lm, task, budget=2000):
    limit = Budget(budget)
    return SearchContext(lm, task.task, task.train, task.dev, Evaluator(lm, task.task, budget=limit), limit, seed=0)


@pytest.mark.parametrize("select", ["top1", "topk", "optimized"])
def test_conformance(select, causal, task):
    check_strategy("paraphrase", {"select": select, "ensemble_k": 2, "num_paraphrases": 2, "score_examples": 8},
                   budget=300, lm=causal, data=task)


def test_conformance_masked_refill(masked, task):
    check_strategy("paraphrase", {"templates": "{sentence} it was [P] .", "score_examples": 8}, budget=300,
                   lm=masked, data=task)


def test_broken_rewrites_are_dropped_and_counted(causal, task, monkeypatch):
    searcher = create("paraphrase", {"sources": "manual,paraphrase", "score_examples": 8})
    rewrites = ["{sentence} Overall it was [P]",          # fine
                "Overall it was [P]",                     # lost the field
                "{sentence} Overall it was",              # lost [P]
                "{sentence} [P] was the verdict",         # [P] not last on a causal LM
                "{sentence} {other} was [P]",             # a field the task does not have
                "{sentence was [P]"]                      # unparsable
    monkeypatch.setattr(type(searcher), "rewrite", lambda self, ctx, template, salt: list(rewrites))
    ctx = context(causal, task)
    state = searcher.step(ctx, searcher.start(ctx))
    assert state["dropped"] == 5
    assert set(state["pool"]) == {"{sentence} It was [P]", "{sentence} Overall it was [P]"}


def test_a_budget_bound_step_scores_what_it_can_also_watch_on_dev(causal, task, monkeypatch):
    """The step's last templates are capped by the budget left *after* the dev watch that follows,
    so a budget-bound step lands instead of running out half-way (and being lost)."""
    searcher = create("paraphrase", {"sources": "manual,paraphrase", "score_examples": 8})
    rewrites = [f"{{sentence}} {word} it was [P]" for word in ("So", "Overall", "Honestly", "Really", "Well", "Yes")]
    monkeypatch.setattr(type(searcher), "rewrite", lambda self, ctx, template, salt: list(rewrites))
    probe = context(causal, task)
    searcher.start(probe)
    # after the start, 60 forwards: 3 new templates on 8 train + the 3 watched on 12 dev = 60; 4 would be 68
    ctx = context(causal, task, budget=probe.budget.used + 60)
    state = searcher.step(ctx, searcher.start(ctx))
    assert len(state["pool"]) == 4 and set(state["dev"]) == set(state["pool"])
    assert ctx.budget.used == ctx.budget.max_forwards


def test_every_candidate_keeps_its_slots(causal, task):
    ctx = context(causal, task)
    searcher = create("paraphrase", {"num_paraphrases": 4, "score_examples": 8})
    state = searcher.start(ctx)
    for _ in range(2):
        state = searcher.step(ctx, state)
    for source in state["pool"]:  # parsed afresh, not by the filter that admitted it
        template = Template(source)
        assert template.fields == ("sentence",) and template.predict_is_last and template.source.count("[P]") == 1


def test_mining_middle_words(causal, task, tmp_path):
    ctx = context(causal, task)
    mined = create("paraphrase", {"num_mined": 3}).mine(ctx)
    # the tiny sentences read "the <noun> was <adjective>": "bad"/"good" follow "the <noun> was"
    assert mined and all(t.startswith("{sentence} ") and t.endswith(" [P]") for t in mined)
    assert any(" was [P]" in t for t in mined)


def test_mining_relation_corpus(causal, tmp_path):
    from autoprompt import Example, Task, TaskData  # noqa: PLC0415

    train = [Example({"subject": "Ada"}, 0), Example({"subject": "Bob"}, 1)]
    task = Task("lama:toy", ("subject",), ("London", "Paris"), "{subject} lives in [P]",
                {"London": ["London"], "Paris": ["Paris"]}, "lama")
    data = TaskData(task, {}, {"train": lambda: train, "dev": lambda: train, "test": lambda: train})
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Ada was born in London in 1815.\nBob was born in Paris.\nAda visited London.\n")
    ctx = context(causal, data)
    mined = create("paraphrase", {"corpus": str(corpus)}).mine(ctx)
    assert mined[0] == "{subject} was born in [P]" and "{subject} visited [P]" in mined


def test_ensemble_artifact_reloads_and_scores(causal, task, tmp_path):
    result = run_search(SearchSpec(task="tiny", strategy="paraphrase", budget=400, out=str(tmp_path),
                                   params={"select": "optimized", "ensemble_k": 2, "score_examples": 8,
                                           "num_paraphrases": 2, "gate": False}), lm=causal, data=task)
    from autoprompt import load_prompt  # noqa: PLC0415

    found = load_prompt(f"{result.run_dir}/prompt.json")
    assert isinstance(found, Ensemble) and len(found.members) == 2
    assert sum(found.weights) == pytest.approx(1.0)
    assert Evaluator(causal, task.task).score(found, task.test).score == pytest.approx(result.scores.test)
    assert isinstance(found.members[0], Prompt)
