"""The core reports progress and warnings as events; it draws nothing itself."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import ClassVar

from autoprompt import Evaluator, events, search
from autoprompt.search import Searcher, SearchSpec, run_search


class Recorder(events.Listener):
    def __init__(self) -> None:
        self.seen: list[tuple] = []

    def started(self, job, total, unit, initial=0):
        self.seen.append(("started", job, total, unit, initial))

    def advanced(self, job, done, info):
        self.seen.append(("advanced", job, done, dict(info)))

    def ended(self, job):
        self.seen.append(("ended", job))

    def warned(self, message):
        self.seen.append(("warned", message))


def test_scoring_reports_progress_to_the_listener(causal, task):
    with events.listening(Recorder()) as rec:
        Evaluator(causal, task.task, batch_size=4).score(task.task.default_prompt, task.dev, progress=True)
        Evaluator(causal, task.task).score(task.task.default_prompt, task.dev)  # progress off: nothing
    kinds = [e[0] for e in rec.seen]
    assert kinds[0] == "started" and kinds[-1] == "ended" and set(kinds[1:-1]) == {"advanced"}
    assert rec.seen[0][1:4] == ("scoring", len(task.dev), "ex")
    assert rec.seen[-2][2] == len(task.dev)  # the last advance reaches the total


@dataclasses.dataclass
class _Grumbler(Searcher):
    """Two steps of the manual prompt, with a warning in the first."""

    name: ClassVar[str] = "grumbler"
    summary: ClassVar[str] = "warns once"

    def start(self, ctx):
        return {"n": 0}

    def step(self, ctx, state):
        if state["n"] == 0:
            ctx.warn("the first step is suspicious")
        ctx.evaluator.score(ctx.task.default_prompt, ctx.train[:2])
        return {"n": state["n"] + 1, "best_dev": 0.5, "done": state["n"] >= 1}

    def best(self, ctx, state):
        return ctx.task.default_prompt


def test_a_search_reports_steps_and_warnings(causal, task, tmp_path):
    search.register(_Grumbler)
    try:
        with events.listening(Recorder()) as rec:
            result = run_search(SearchSpec(task.task.name, "grumbler", out=str(tmp_path)), lm=causal, data=task,
                                progress=True)
    finally:
        search.unregister("grumbler")
    job = f"grumbler on {task.task.name}"
    steps = [e for e in rec.seen if e[0] == "advanced" and e[1] == job]
    assert [e[3]["step"] for e in steps] == [1, 2] and steps[-1][3]["best_dev"] == 0.5
    assert ("started", job, result.budget.limit, "fwd", 0) in rec.seen and ("ended", job) in rec.seen
    assert rec.seen.count(("warned", "the first step is suspicious")) == 1
    assert "the first step is suspicious" in result.warnings
    trace = [json.loads(line) for line in (Path(result.run_dir) / "trace.jsonl").read_text().splitlines()]
    assert trace[0]["warnings"] == ["the first step is suspicious"] and "warnings" not in trace[1]


def test_without_a_listener_warnings_go_to_the_logger(caplog):
    with caplog.at_level(logging.WARNING, logger="autoprompt"):
        events.warn("something to read")
    assert caplog.records[-1].getMessage() == "something to read"
