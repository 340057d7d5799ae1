"""What a search costs before it runs: the minimum useful budget, and seconds from timed forwards."""

from __future__ import annotations

import time
from typing import Any

from autoprompt.backends import ScoringModel
from autoprompt.backends.aliases import default_budget
from autoprompt.backends.store import load_model
from autoprompt.errors import AutopromptError
from autoprompt.io import MIN_FREE_BYTES
from autoprompt.scoring.evaluator import Evaluator
from autoprompt.scoring.generation import scoring_forwards
from autoprompt.search.base import Searcher
from autoprompt.search.registry import available, create
from autoprompt.search.runs import SearchSpec
from autoprompt.tasks import load_task
from autoprompt.tasks.base import Example, TaskData


def check_budget(searcher: Searcher[Any], limit: int, data: TaskData) -> int:
    """``searcher``'s minimum useful budget on ``data``; raise if ``limit`` is below it, or if the
    strategy does not search this kind of task."""
    kind = data.task.kind
    if kind not in searcher.task_kinds:
        able = [n for n, cls in available().items() if kind in cls.task_kinds]
        raise AutopromptError(f"strategy {searcher.name} does not search {kind} tasks such as {data.task.name} "
                              f"(it chooses among label words); use one of {', '.join(able)}")
    if searcher.needs_every_class:
        present = {ex.label for ex in data.train}
        missing = [label for c, label in enumerate(data.task.labels) if c not in present]
        if missing:
            raise AutopromptError(f"strategy {searcher.name} needs train examples of every class, but "
                                  f"{data.task.name}'s train has none of {missing}; add them to its train data")
    # dev as it is charged: on a generation task each of its references is scored too
    minimum = searcher.minimum_budget(len(data.train), scoring_forwards(data.dev))
    if limit < minimum:
        raise AutopromptError(
            f"budget {limit} is below {searcher.name}'s minimum useful budget on {data.task.name}: {minimum} "
            f"example-forwards (its start and one step on {len(data.train)} train and {len(data.dev)} dev "
            f"examples); give a budget of at least {minimum}")
    return minimum


def disk_estimate(limit: int, data: TaskData) -> int:
    """Bytes a search under budget ``limit`` writes at most, at its peak.

    The checkpoint keeps the evaluator's scores (`Evaluator.cached`): per example-forward one
    float32 log-prob per class, the label and the top token (``4 × classes + 16`` bytes), and a new
    checkpoint is written beside the old one before that one goes (so twice); the trace takes a
    line per step (at most one step per example-forward, about 300 bytes). Results, the prompt and
    a soft part's tensors fit in the `MIN_FREE_BYTES` floor.
    """
    per_forward = 2 * (4 * max(len(data.task.labels), 1) + 16) + 300
    return MIN_FREE_BYTES + limit * per_forward


def estimate(spec: SearchSpec, lm: ScoringModel | None = None, data: TaskData | None = None) -> dict[str, Any]:
    """What a search would cost: budget, split sizes, and seconds from timing a few forwards."""
    searcher = create(spec.strategy, spec.params)
    data = data or load_task(spec.task, spec.data_dir, spec.shots, spec.data_seed, spec.model)
    budget = spec.budget if spec.budget is not None else default_budget(searcher.default_budget, spec.model)
    minimum = check_budget(searcher, budget, data)
    lm = lm or load_model(spec.model, device_map=spec.device_map)
    per_forward = seconds_per_forward(lm, data)
    start_cost, per_step = searcher.costs(len(data.train), scoring_forwards(data.dev))
    return {"task": data.task.name, "strategy": spec.strategy, "params": searcher.params(), "budget": budget,
            "minimum_budget": minimum, "steps": (budget - start_cost) // max(1, per_step),
            "train": len(data.train), "dev": len(data.dev), "seconds_per_forward": round(per_forward, 4),
            "estimated_search_s": round(budget * per_forward, 1),
            "note": "steps: at most, at the minimum's cost per step (steps that accept a change may cost more); "
                    "a backward counts as two forwards; test and baseline scoring come on top"
                    + ("; timed on teacher-forced references: decoding dev and test outputs comes on top too"
                       if data.task.is_generation else "")}


def seconds_per_forward(lm: ScoringModel, data: TaskData) -> float:
    """Seconds one example-forward takes here, timed on up to 16 dev examples with the manual prompt.

    On a generation task the budget's forwards are teacher-forced references (training, dev
    likelihood), so those are timed: greedy decoding of a whole output is not one forward.
    """
    sample, prompt = data.dev[:16], data.task.default_prompt
    ev = Evaluator(lm, data.task, cache=False)
    if ev.generation is not None:
        def run(examples: list[Example]) -> int:
            assert ev.generation is not None  # narrowed above; mypy loses it in a closure
            ev.generation.likelihood(prompt, examples)
            return sum(len(ex.targets) for ex in examples)
    else:
        def run(examples: list[Example]) -> int:
            ev.score(prompt, examples)
            return len(examples)
    run(sample[:2])  # warm-up
    start = time.perf_counter()
    units = run(sample)
    return (time.perf_counter() - start) / units
