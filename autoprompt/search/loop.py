"""`run_search`: start (or resume) a strategy, step it under the budget with a checkpoint after every
step, then hand the state to `finish` (the gate and the held-out scores) and write ``result.json``.
Recording in the leaderboard is the caller's (`autoprompt.results.recording`).

    ctx   = SearchContext(lm, task, train, dev, evaluator, budget)
    state = strategy.start(ctx); while budget: state = strategy.step(ctx, state)  # checkpoint each step
    result = finish(...)   # selection.choose(candidates + manual), dev/test scores, result.json
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autoprompt import events
from autoprompt.backends import ScoringModel
from autoprompt.backends.aliases import default_budget
from autoprompt.backends.precision import resolve_dtype
from autoprompt.backends.store import load_model
from autoprompt.errors import AutopromptError, BudgetExhausted, SearchInterrupted
from autoprompt.io import check_writable_folder
from autoprompt.prompts import Prompt, Rule, load_prompt
from autoprompt.results.record import Interrupted, RunRecord
from autoprompt.scoring.budget import Budget
from autoprompt.scoring.evaluator import Evaluator
from autoprompt.search.base import Searcher
from autoprompt.search.context import SearchContext
from autoprompt.search.estimate import check_budget, disk_estimate
from autoprompt.search.finish import SearchRun, finish, finish_stage
from autoprompt.search.model_view import ModelView
from autoprompt.search.parts import check_start
from autoprompt.search.registry import create
from autoprompt.search.runs import RunDir, SearchSpec, locked_on_resume
from autoprompt.tasks import load_task
from autoprompt.tasks.base import Example, Task, TaskData
from autoprompt.tasks.taskset import union_split

OnStep = Callable[[int, dict[str, Any]], None]


@locked_on_resume
def run_search(
    spec: SearchSpec,
    *,
    lm: ScoringModel | None = None,
    data: TaskData | None = None,
    resume: str | Path | None = None,
    progress: bool = False,
    stop_after: int | None = None,
    on_step: OnStep | None = None,
) -> RunRecord | Interrupted:
    """Run (or resume) a search and write its artifacts (recording it is the caller's:
    `autoprompt.results.recording.record_finished`).

    Returns the finished run (`RunRecord`: ``result.json``'s content, typed), or `Interrupted` after
    ``stop_after`` steps.

    Args:
        spec: what to run.
        lm: an already loaded backend (default: load ``spec.model``).
        data: already loaded splits (default: load ``spec.task``).
        resume: a run folder to continue from its last checkpoint.
        progress: report progress events (the CLI's listener draws them as bars).
        stop_after: stop after this many steps of this call (for tests of interruption).
        on_step: called after every checkpointed step with (step, ``{"best_dev", "budget"}``); an
            exception it raises stops the run there, checkpoint intact (a tuner prunes this way).
    """
    outcome = _run(spec, lm, data, resume, progress, stop_after, on_step, None)
    assert not isinstance(outcome, dict)  # only a stage returns its summary
    return outcome


def run_stage(spec: SearchSpec, stage_dir: Path, *, lm: ScoringModel, data: TaskData, resume: str | Path | None,
              progress: bool, stop_after: int | None, on_step: OnStep | None) -> dict[str, Any] | Interrupted:
    """Run (or resume) one stage of a pipeline (`autoprompt.search.pipeline`) in ``stage_dir``: the gate
    decides against the stage's start on ``data.dev`` (the pipeline's held-out part of train) and
    writes ``stage.json``, whose content it returns; nothing reads test, nothing is recorded. The
    pipeline holds its folder's lock."""
    outcome = _run(spec, lm, data, resume, progress, stop_after, on_step, stage_dir)
    assert not isinstance(outcome, RunRecord)  # a stage finishes with its summary
    return outcome


def _run(spec: SearchSpec, lm: ScoringModel | None, data: TaskData | None, resume: str | Path | None, progress: bool,
         stop_after: int | None, on_step: OnStep | None,
         stage_dir: Path | None) -> RunRecord | Interrupted | dict[str, Any]:
    started = time.perf_counter()
    folder = RunDir(resume) if resume is not None else None
    if folder is not None:
        spec = folder.spec() if stage_dir is not None else folder.resumed_spec()
        done = folder.stage_result() if stage_dir is not None else folder.result()
        if done is not None:  # finished: nothing to run (the caller records it, a no-op if it is)
            return done if stage_dir is not None else RunRecord.from_json(done)
    if "," in spec.strategy or spec.strategy == "auto":
        raise AutopromptError(f"{spec.strategy} is a pipeline, not one strategy: run it with "
                              "autoprompt.search.run_pipeline (or autoprompt.api.search)")
    searcher = create(spec.strategy, spec.params)
    spec.params = searcher.params()
    for name in ("seed", "data_seed"):  # every consumer (torch, random, the bootstrap) takes 0 .. 2**32 - 1
        value = getattr(spec, name)
        if not 0 <= value < 2**32:
            raise AutopromptError(f"`{name}` must be between 0 and {2**32 - 1}, got {value}")
    resolve_dtype(spec.dtype, "cpu")  # an unknown dtype is refused before any work (the device decides auto later)
    if spec.max_seconds is not None and not spec.max_seconds > 0:
        raise AutopromptError(f"max_seconds must be a positive number of seconds, got {spec.max_seconds}")
    data = data or load_task(spec.task, spec.data_dir, spec.shots, spec.data_seed, spec.model)
    if spec.test_limit is not None:
        data = limit_test(data, spec.test_limit)
    limit = spec.budget if spec.budget is not None else default_budget(searcher.default_budget, spec.model)
    minimum = check_budget(searcher, limit, data)
    # a read-only folder, a broken link or too little disk for what the run will write: one line before any work
    check_writable_folder(stage_dir or (folder.path if folder is not None else spec.out), "run folder",
                          need=disk_estimate(limit, data))
    start = load_start(spec.start, data.task, searcher) if spec.start is not None else None
    lm = lm or load_model(spec.model, device_map=spec.device_map)
    if spec.start is not None and start is not None:
        check_start_model(spec.start, start, lm.name)
    begin = start if start is not None else data.task.default_prompt
    rule = Rule(searcher.rule) if searcher.rule is not None else begin.rule.unfitted()
    check_rule(rule, searcher, lm, data.task)
    folder = folder or RunDir.create(spec, data.task.name, stage_dir)

    budget = Budget(limit)
    # LAMA ranks hundreds of objects: a class prior over them is not what calibration is for
    calibration = searcher.calibration if data.task.kind_spec.metric(data.task.metric).calibratable else "none"
    ctx = SearchContext(ModelView.of(lm), data.task, data.train, data.dev, Evaluator(lm, data.task, budget=budget),
                        budget, spec.seed, calibration=calibration, objective=searcher.objective, warm_start=start,
                        rule=rule)
    run = SearchRun(spec, searcher, data, lm, folder, ctx, budget, {}, 0, lm.weights_checksum(), started, 0.0,
                    dtype=resolve_dtype(spec.dtype, lm.device))
    if resume is not None and folder.has_checkpoint():
        _restore(run)
    else:
        _start(run, minimum)
    if not _steps(run, progress, stop_after, on_step):
        return Interrupted(str(folder.path), run.steps)
    if stage_dir is not None:
        summary = finish_stage(run)
        folder.write_stage_result(summary)
        return summary
    result = finish(run, progress)
    folder.write_result(result.to_json())
    return result


def load_start(path: str, task: Task, searcher: Searcher[Any]) -> Prompt:
    """The warm start at ``path``, checked against the task and what ``searcher`` can keep."""
    if not Path(path).is_file():
        raise AutopromptError(f"start prompt {path} does not exist; give the prompt.json of an earlier run")
    prompt = load_prompt(path)
    source = prompt.meta.get("task")
    if source is not None and source != task.name:
        raise AutopromptError(f"start prompt {path} was found for task {source}, not {task.name}; start from a "
                              f"prompt of {task.name}")
    labels = list(prompt.verbalizer.labels) if isinstance(prompt, Prompt) else []
    if labels and set(labels) != set(task.labels):
        raise AutopromptError(f"start prompt {path} has the labels {labels}, but {task.name} has "
                              f"{list(task.labels)}; start from a prompt of {task.name}")
    return check_start(searcher.name, searcher.searches, searcher.carries, prompt, task.default_prompt)


def check_start_model(path: str, prompt: Prompt, model: str) -> None:
    """A start found on another model is refused: its triggers and soft part mean nothing here."""
    source = prompt.meta.get("model")
    if source is not None and source != model:
        raise AutopromptError(f"start prompt {path} was found on model {source}, not {model}; move it with "
                              "`transfer` first, or start from a prompt found on this model")


def _start(run: SearchRun, minimum: int) -> None:
    info: dict[str, Any] = {}
    run.ctx.report, run.ctx.warn = info.update, _warner(run, info)
    try:
        with run.lm.computing_in(run.dtype):
            run.state = run.searcher.start(run.ctx)
    except BudgetExhausted:
        raise AutopromptError(f"budget {run.budget.max_forwards} does not pay for {run.spec.strategy}'s start on "
                              f"{run.data.task.name} (estimated minimum {minimum}); give a larger budget") from None


def _restore(run: SearchRun) -> None:
    """The state, step, budget spent, paid-for examples and elapsed time of the last checkpoint."""
    ckpt = run.folder.read_checkpoint()
    try:
        run.state, run.steps = ckpt["state"], ckpt["step"]
        run.budget.forwards, run.budget.backwards = ckpt["budget"]["forwards"], ckpt["budget"]["backwards"]
        run.budget.tokens = ckpt["budget"].get("tokens", 0)
        run.ctx.evaluator.paid.update(tuple(k) for k in ckpt["paid"])
        run.ctx.evaluator.restore_cached(ckpt.get("cache", []))
        run.elapsed_before = ckpt["elapsed_s"]
    except (KeyError, TypeError) as err:
        raise AutopromptError(f"checkpoint {run.folder.checkpoint_path} is corrupt ({type(err).__name__}); "
                              "start a new run instead of resuming this one") from None


def _steps(run: SearchRun, progress: bool, stop_after: int | None, on_step: OnStep | None) -> bool:
    """Step until the strategy is done or the budget ends (True), or ``stop_after`` steps (False)."""
    budget, ctx = run.budget, run.ctx
    trace = run.folder.trace(keep=run.steps if run.folder.has_checkpoint() else None)
    budget.max_seconds, budget.started = run.spec.max_seconds, time.monotonic()  # the start is what any run costs
    clock = time.perf_counter() - run.elapsed_before
    taken, idle, spent = 0, 0, budget.used
    bar = events.Progress(f"{run.spec.strategy} on {run.data.task.name}", budget.max_forwards, "fwd",
                          initial=budget.used, enabled=progress)
    try:
        with bar:
            while not run.state.get("done") and not budget.exhausted and (stop_after is None or taken < stop_after):
                info: dict[str, Any] = {}
                ctx.step_index, ctx.report, ctx.warn = run.steps, info.update, _warner(run, info)
                try:
                    with run.lm.computing_in(run.dtype):
                        # a copy: a step that fails half-way leaves the run's state as it was
                        run.state = run.searcher.step(ctx, copy.deepcopy(run.state))
                except BudgetExhausted:
                    break
                run.steps += 1
                taken += 1
                idle = idle + 1 if budget.used == spent else 0
                spent = budget.used
                if idle >= IDLE_STEPS:  # every candidate was scored before: steps cost nothing and never end
                    ctx.warn(f"{idle} steps in a row cost no budget (every candidate they drew was already "
                             "scored): the search space is exhausted, so the search stops here")
                    run.state = {**run.state, "done": True}
                best_dev = run.state.get("best_dev")
                trace.append({"step": run.steps, **info, "best_dev": best_dev, "budget": budget.used,
                              "forwards": budget.forwards, "backwards": budget.backwards,
                              "time_s": round(time.perf_counter() - clock, 3)})
                run.folder.write_checkpoint(run.steps, run.state, {
                    "budget": budget.to_json(), "paid": sorted(ctx.evaluator.paid), "cache": ctx.evaluator.cached(),
                    "elapsed_s": time.perf_counter() - clock})
                bar.update(budget.used, step=run.steps, best_dev=best_dev)
                if on_step is not None:
                    on_step(run.steps, {"best_dev": best_dev, "budget": budget.used})
    except KeyboardInterrupt:
        raise SearchInterrupted(str(run.folder.path)) from None
    return stop_after is None or taken < stop_after or bool(run.state.get("done")) or budget.exhausted


IDLE_STEPS = 50  # steps in a row without spending budget after which a search has nothing left to try


def _warner(run: SearchRun, info: dict[str, Any]) -> Callable[[str], None]:
    """``ctx.warn`` for one step: kept for the result, added to the step's trace line, and shown."""

    def warn(message: str) -> None:
        run.warnings.append(message)
        info["warnings"] = [*info.get("warnings", []), message]
        events.warn(message)

    return warn


def check_rule(rule: Rule, searcher: Searcher[Any], lm: ScoringModel, task: Task) -> None:
    """Refuse, before any work, a decision rule the model, the task or the strategy cannot use."""
    if rule.direct:
        return
    if not task.kind_spec.metric(task.metric).calibratable:
        raise AutopromptError(f"rule {rule.name!r} is for classification tasks; search {task.name} with rule direct")
    if rule.name == "channel" and lm.kind != "causal":
        raise AutopromptError(f"rule 'channel' scores the input after the label, which needs a causal LM; {lm.name} is "
                              f"a {lm.kind} LM: use rule direct or centroid")
    if rule.name == "channel" and "soft" in searcher.searches:
        raise AutopromptError(f"{searcher.name} trains a soft prompt and rule 'channel' reads discrete prompts; use "
                              "rule direct or centroid")


def limit_test(data: TaskData, k: int) -> TaskData:
    """The same splits with a seeded random ``k`` of the test examples (recorded in the protocol).

    For quick benchmark suites on a CPU; such runs form their own leaderboard rows.
    """
    if k < 1:
        raise AutopromptError(f"test_limit {k} leaves nothing to score; give a positive number")

    if data.members:  # a task set: each member's own test is limited, the set's is their union
        members = [limit_test(m, k) for m in data.members]
        return TaskData(data.task, {**data.protocol, "test_limit": k},
                        {**data.loaders, "test": lambda: union_split(members, "test")}, members=members)

    def test() -> list[Example]:
        full = data.test
        return full if k >= len(full) else random.Random(0).sample(full, k)

    return TaskData(data.task, {**data.protocol, "test_limit": k}, {**data.loaders, "test": test})

