"""The conformance checks every registered strategy must pass (use them for your own strategies).

    from autoprompt.testing.conformance import check_strategy
    check_strategy("gradient", {"num_candidates": 4}, budget=400)
    check_minimum_budget("gradient", {"num_candidates": 4})
    check_warm_start("gradient", {"num_candidates": 4}, budget=400)
"""

from __future__ import annotations

import inspect
import tempfile
from pathlib import Path
from typing import Any

from autoprompt.backends import FrozenLM, weights_checksum
from autoprompt.errors import AutopromptError
from autoprompt.prompts import (
    Demonstration,
    Demonstrations,
    Prompt,
    Template,
    Verbalizer,
    load_prompt,
    prompt_from_json,
    save_prompt,
)
from autoprompt.results.record import RunRecord, finished
from autoprompt.search import SearchSpec, create, run_search
from autoprompt.search.parts import kept_parts_differ, present_parts
from autoprompt.tasks.base import Example, TaskData
from autoprompt.testing.tiny import NEGATIVE, NOUNS, POSITIVE, tiny_causal_lm, tiny_task


def _with_test_sentinel(data: TaskData) -> tuple[TaskData, list[str]]:
    """A copy of ``data`` whose test loader records who read it: only the core's final scoring
    (`autoprompt.search.finish`) may."""
    readers: list[str] = []
    real = data.loaders["test"]

    def load_test() -> list[Example]:
        modules = [frame.frame.f_globals.get("__name__", "") for frame in inspect.stack()[1:]]
        readers.append("finish" if "autoprompt.search.finish" in modules else
                       next((m for m in modules if not m.startswith(("autoprompt.tasks", __name__))), "?"))
        return real()

    return TaskData(data.task, data.protocol, {**data.loaders, "test": load_test}), readers


def check_strategy(name: str, params: dict[str, Any] | None = None, budget: int = 300,
                   lm: FrozenLM | None = None, data: TaskData | None = None) -> RunRecord:
    """Assert the contract of a strategy; returns the first run's result.

    * returns a valid prompt that survives a JSON round trip;
    * the same seed gives the same prompt and scores;
    * the budget is respected;
    * the model's weights are unchanged and do not require gradients;
    * ``test`` is never read during the search (a sentinel counts reads).
    """
    params = params or {}
    lm = lm or tiny_causal_lm()
    data = data or tiny_task()
    before = weights_checksum(lm.model)

    results = []
    for _ in range(2):  # the real run loop, twice with one seed
        sentinel, readers = _with_test_sentinel(data)
        with tempfile.TemporaryDirectory() as out:
            spec = SearchSpec(task=data.task.name, strategy=name, params=dict(params), budget=budget, seed=3, out=out)
            results.append(finished(run_search(spec, lm=lm, data=sentinel)))
            assert set(readers) <= {"finish"}, f"{name}'s search read the test split ({readers})"
            prompt = load_prompt(Path(results[-1].run_dir) / "prompt.json")  # the artifact as written
            assert prompt.fingerprint == results[-1].prompt_fingerprint
            with tempfile.TemporaryDirectory() as tmp:  # ... saved again and read back (tensors too)
                save_prompt(prompt, Path(tmp) / "prompt.json")
                assert load_prompt(Path(tmp) / "prompt.json").fingerprint == prompt.fingerprint, \
                    f"{name}'s prompt does not survive saving"
            if not any(m.soft for m in getattr(prompt, "members", (prompt,))):
                assert prompt_from_json(prompt.to_json()) == prompt, f"{name}'s prompt does not survive JSON"
    first, second = results
    assert first.prompt_fingerprint == second.prompt_fingerprint, f"{name} is not reproducible from its seed"
    assert first.scores == second.scores
    assert first.budget.used <= budget
    assert weights_checksum(lm.model) == before, f"{name} changed the model's weights"
    assert not any(p.requires_grad for p in lm.model.parameters())
    return first


def check_minimum_budget(name: str, params: dict[str, Any] | None = None, lm: FrozenLM | None = None,
                         data: TaskData | None = None, dev_cost: int | None = None) -> int:
    """Assert that the budget a strategy declares as its minimum buys one search step and that one
    example-forward less is refused up front with the minimum in the message; returns the minimum.

    Args:
        dev_cost: what one dev evaluation is charged (default ``len(dev)``; a generation task's
            dev also pays a forward per reference).
    """
    params = params or {}
    lm = lm or tiny_causal_lm()
    data = data or tiny_task()
    minimum = create(name, params).minimum_budget(len(data.train), len(data.dev) if dev_cost is None else dev_cost)
    with tempfile.TemporaryDirectory() as out:
        spec = SearchSpec(task=data.task.name, strategy=name, params=dict(params), budget=minimum, out=out)
        result = finished(run_search(spec, lm=lm, data=data))
        assert result.steps >= 1, f"{name}'s minimum budget {minimum} bought no search step"
        assert not any("0 search steps" in w for w in result.warnings), result.warnings
        spec.budget = minimum - 1
        try:
            run_search(spec, lm=lm, data=data)
        except AutopromptError as e:
            assert str(e).endswith(f"give a budget of at least {minimum}"), f"{name}: {e}"
        else:
            raise AssertionError(f"{name} ran on {minimum - 1}, one less than its minimum budget")
    return minimum


def warm_start_for(name: str, params: dict[str, Any], lm: FrozenLM, data: TaskData) -> Prompt:
    """A start prompt holding every part strategy ``name`` says it carries, each unlike the manual
    prompt's: other template words, two trigger tokens, other label words, one demonstration per class
    (for the tiny task: ``{sentence}`` input, two labels)."""
    searcher = create(name, params)
    carries = searcher.carries - searcher.searches
    manual = data.task.default_prompt
    field = data.task.fields[0]
    triggers = "triggers" in carries
    text = "Review: {" + field + "}" + (" [T] [T]" if triggers else "") + " It was [P]"
    template = Template(text) if "template" in carries or triggers else manual.template
    ids = tuple(lm.tokenize(" " + w)[0] for w in NOUNS[2:4]) if triggers else ()  # two of the corpus's nouns
    verbalizer = (Verbalizer(dict(zip(data.task.labels, ([NEGATIVE[1]], [POSITIVE[1]]), strict=False)))
                  if "verbalizer" in carries else manual.verbalizer)
    demos = None
    if "demos" in carries:
        first = {ex.label: ex for ex in reversed(data.train)}
        demos = Demonstrations(tuple(Demonstration(dict(first[c].fields), data.task.labels[c]) for c in sorted(first)))
    return Prompt(template, verbalizer, ids, demos=demos, meta={"task": data.task.name, "model": lm.name})


def check_warm_start(name: str, params: dict[str, Any] | None = None, budget: int = 300,
                     lm: FrozenLM | None = None, data: TaskData | None = None) -> RunRecord:
    """Assert that a strategy started from a saved prompt keeps every part it does not search.

    The start holds every part the strategy declares it carries (`warm_start_for`); the run is
    ungated (``gate=False``, so the reported prompt is the strategy's own), and each of its parts
    outside ``searches`` must equal the start's. A part the strategy can neither search nor carry
    is refused up front with a one-line error naming it. Returns the run's result.
    """
    params = dict(params or {})
    lm = lm or tiny_causal_lm()
    data = data or tiny_task()
    searcher = create(name, params)
    start = warm_start_for(name, params, lm, data)
    assert present_parts(start, data.task.default_prompt) >= (searcher.carries - searcher.searches) - {"soft"}, \
        f"the warm start for {name} lacks a part it carries"
    with tempfile.TemporaryDirectory() as out:
        path = Path(out) / "start.json"
        save_prompt(start, path)
        ungated = {**params, "gate": False} if searcher.gated else params
        spec = SearchSpec(task=data.task.name, strategy=name, params=ungated, budget=budget, seed=3, out=out,
                          start=str(path))
        result = finished(run_search(spec, lm=lm, data=data))
        found = load_prompt(Path(result.run_dir) / "prompt.json")
        changed = kept_parts_differ(start, found, searcher.searches)
        assert not changed, f"{name} changed the start's {changed}, which it does not search"
        named = result.start["fingerprint"] if result.start is not None else None
        assert named == start.fingerprint, f"{name}'s result does not name its start"
        lost = {"triggers", "demos"} - searcher.searches - searcher.carries
        if lost:  # a start it cannot build on is refused before any work, naming the part
            other = warm_start_for("manual", {}, lm, data)
            save_prompt(other, path)
            try:
                run_search(SearchSpec(task=data.task.name, strategy=name, params=params, budget=budget, out=out,
                                      start=str(path)), lm=lm, data=data)
            except AutopromptError as err:
                assert "cannot keep the start prompt's" in str(err), str(err)
            else:
                raise AssertionError(f"{name} accepted a start holding {sorted(lost)}, which it cannot keep")
    return result
