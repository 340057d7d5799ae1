"""The API's running side: searches, tuning, transfers, suites and importing finished runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoprompt.backends import ScoringModel
from autoprompt.backends.aliases import DEFAULT_MODEL
from autoprompt.backends.precision import resolve_dtype
from autoprompt.backends.store import check_device_map
from autoprompt.errors import AutopromptError
from autoprompt.results.record import RunRecord, finished

if TYPE_CHECKING:
    from autoprompt.search import SearchSpec


def import_runs(folder: str | Path, db: str | Path | None = None) -> tuple[int, int]:
    """Record every finished run under ``folder`` in the leaderboard; returns (added, already there).

    Results too old to name their leaderboard row get it from their strategy's defaults.
    """
    from autoprompt.results import leaderboard  # noqa: PLC0415
    from autoprompt.search.registry import variant  # noqa: PLC0415

    return leaderboard.import_runs(folder, db, variant)


def search(
    task: str | None = None,
    strategy: str | None = None,
    params: Mapping[str, Any] | Sequence[str] = (),
    *,
    model: str = DEFAULT_MODEL,
    shots: int | None = None,
    data_seed: int = 13,
    seed: int = 0,
    budget: int | None = None,
    max_seconds: float | None = None,
    out: str | Path = "runs",
    data_dir: str | Path | None = None,
    test_limit: int | None = None,
    resume: str | Path | None = None,
    db: str | Path | None = None,
    progress: bool = False,
    start: str | Path | None = None,
    dtype: str = "fp32",
    device_map: str | None = None,
) -> RunRecord:
    """Search for a prompt for ``task`` and score it and the manual prompt on dev and test.

    Returns the finished run, recorded in the leaderboard (`RunRecord`; its ``to_json()`` is the run
    folder's ``result.json``). ``strategy`` defaults to ``gradient``.
    ``resume`` continues a run folder with the spec it was started with; giving any setting that
    would change that spec is an error. ``params`` are the strategy's hyper-parameters, as a dict
    or as ``["k=v", ...]``. See `autoprompt.search.run_search` for the rest, and `estimate` for the
    budget and time a search would take.

    ``strategy`` may be a pipeline, ``"verbalizer,demos,gradient"``, or ``"auto"``
    (`autoprompt.search.pipeline`): ``params`` then hold ``stage.param`` entries and the pipeline's
    own (``budget_split``, ``holdout``, ``auto.effort``, ...). ``start`` is a ``prompt.json`` to
    build on (a warm start) instead of the task's manual prompt. ``dtype`` is what the search's steps
    compute in (``fp32``, ``bf16``, or ``auto``: bf16 where the hardware computes it natively); the
    gate and the dev/test scores are always fp32. ``device_map="auto"`` spreads a model bigger than one
    device over the GPUs, then the CPU, then disk (accelerate).
    """
    from autoprompt.results.recording import record_finished  # noqa: PLC0415
    from autoprompt.search import RunDir, SearchSpec, is_pipeline, run_pipeline, run_search  # noqa: PLC0415

    if resume is not None:
        given = {"task": task, "strategy": strategy, "budget": budget, "params": params, "shots": shots,
                 "max_seconds": max_seconds, "test_limit": test_limit, "start": start,
                 "dtype": dtype if dtype != "fp32" else None, "device_map": device_map}
        conflicting = [f"`{name}`" for name, value in given.items() if value]
        if conflicting:
            raise AutopromptError(f"resuming continues a run with the spec it was started with; "
                                  f"{', '.join(conflicting)} cannot change it: leave them out, or start a new run")
        folder = RunDir(resume)
        run = run_pipeline if is_pipeline(folder.spec().strategy) else run_search
        return finished(record_finished(run(SearchSpec("", ""), resume=resume, progress=progress), db,
                                        folder.resumed_spec().out))
    spec = _spec(task, strategy, params, model, shots, data_seed, seed, budget, max_seconds, out, data_dir,
                 test_limit, start, dtype, device_map)
    run = run_pipeline if is_pipeline(spec.strategy) else run_search
    return finished(record_finished(run(spec, progress=progress), db, spec.out))


def estimate(
    task: str | None,
    strategy: str | None = None,
    params: Mapping[str, Any] | Sequence[str] = (),
    *,
    model: str = DEFAULT_MODEL,
    shots: int | None = None,
    data_seed: int = 13,
    seed: int = 0,
    budget: int | None = None,
    max_seconds: float | None = None,
    out: str | Path = "runs",
    data_dir: str | Path | None = None,
    test_limit: int | None = None,
    start: str | Path | None = None,
    dtype: str = "fp32",
    device_map: str | None = None,
) -> dict[str, Any]:
    """What `search` with these arguments would spend, searching nothing: the budget, its minimum, the
    steps and a time estimate measured on this machine (a pipeline: each stage's, `search --dry-run`)."""
    from autoprompt.search import estimate as estimate_search  # noqa: PLC0415
    from autoprompt.search import estimate_pipeline, is_pipeline  # noqa: PLC0415

    spec = _spec(task, strategy, params, model, shots, data_seed, seed, budget, max_seconds, out, data_dir,
                 test_limit, start, dtype, device_map)
    return estimate_pipeline(spec) if is_pipeline(spec.strategy) else estimate_search(spec)


def _spec(task: str | None, strategy: str | None, params: Mapping[str, Any] | Sequence[str], model: str,
          shots: int | None, data_seed: int, seed: int, budget: int | None, max_seconds: float | None,
          out: str | Path, data_dir: str | Path | None, test_limit: int | None, start: str | Path | None,
          dtype: str, device_map: str | None) -> SearchSpec:
    from autoprompt.search import SearchSpec, parse_params  # noqa: PLC0415

    if not task:
        raise AutopromptError("give a `task` (or `resume` a run folder)")
    given_params = dict(params) if isinstance(params, Mapping) else parse_params(params)
    check_device_map(device_map)
    return SearchSpec(task=task, strategy=strategy or "gradient", params=given_params, model=model, shots=shots,
                      data_seed=data_seed, seed=seed, budget=budget, max_seconds=max_seconds, out=str(out),
                      data_dir=str(data_dir) if data_dir else None, test_limit=test_limit,
                      start=str(Path(start).resolve()) if start is not None else None, dtype=dtype,
                      device_map=device_map)


def tune(
    task: str,
    strategy: str = "gradient",
    *,
    n_trials: int = 20,
    space: str | Path | None = None,
    storage: str | None = None,
    study: str | None = None,
    workers: int = 1,
    out: str | Path = "runs",
    model: str = DEFAULT_MODEL,
    shots: int | None = None,
    data_seeds: str | Sequence[int] = "13",
    sampler: str = "tpe",
    pruner: str = "median",
    seed: int = 0,
    budget: int | None = None,
    params: Mapping[str, Any] | Sequence[str] = (),
    heartbeat: int = 10,
    grace: int = 30,
    data_dir: str | Path | None = None,
    db: str | None = None,
    dtype: str = "fp32",
) -> dict[str, Any]:
    """Tune ``strategy``'s hyper-parameters on ``task`` with optuna (see `autoprompt.experiments.tune`).

    Each trial is a search; its value is the mean dev score over ``data_seeds`` (test is recorded,
    never optimised). ``space`` is a TOML search space (default: the strategy's own); ``params``
    are fixed, untuned parameters. Several workers (``workers``, or the same call on other
    machines with a shared ``storage`` URL) work on one study. ``dtype`` is what each trial's search
    steps compute in (as `search`'s; gates and scores stay fp32).
    """
    from autoprompt.experiments.tune import TuneConfig, default_space, load_space, parse_seeds, storage_url  # noqa: PLC0415
    from autoprompt.experiments.tune import tune as run  # noqa: PLC0415
    from autoprompt.search import create, parse_params  # noqa: PLC0415

    if n_trials < 1 or workers < 1:
        raise AutopromptError("`n_trials` and `workers` must be at least 1")
    fixed = dict(params) if isinstance(params, Mapping) else parse_params(params)
    create(strategy, fixed)  # one-line errors for unknown names and bad values, before any trial
    resolve_dtype(dtype, "cpu")  # an unknown dtype too
    chosen = load_space(space, strategy) if space else default_space(strategy)
    seeds = parse_seeds(data_seeds) if isinstance(data_seeds, str) else tuple(data_seeds)
    config = TuneConfig(task=task, strategy=strategy, n_trials=n_trials,
                        space={k: v for k, v in chosen.items() if k not in fixed},
                        storage=storage_url(storage, out), out=str(out),
                        study=study or f"{Path(task).stem}-{strategy}-{shots or 'full'}shot", model=model, shots=shots,
                        data_seeds=seeds, sampler=sampler, pruner=pruner, seed=seed, budget=budget,
                        fixed=fixed, data_dir=str(data_dir) if data_dir else None, db=db, heartbeat=heartbeat,
                        grace=grace, dtype=dtype)
    return run(config, workers=workers)


def transfer(prompt: str | Path, model: str | ScoringModel, *, task: str | None = None, split: str = "test",
             source_model: str | ScoringModel | None = None, data_dir: str | Path | None = None,
             db: str | Path | None = None, record: bool = True, progress: bool = False) -> dict[str, Any]:
    """Score a prompt found on one model on ``model``, next to that model's manual prompt (see
    `autoprompt.experiments.transfer.transfer`)."""
    from autoprompt.experiments.transfer import transfer as run  # noqa: PLC0415

    return run(prompt, model, task=task, split=split, source_model=source_model, data_dir=data_dir, db=db,
               record=record, progress=progress)


def suite_run(name: str, *, suites: str | Path | None = None, storage: str | None = None, db: str | None = None,
              workers: int = 1, study: str | None = None, heartbeat: int = 10, grace: int = 30,
              data_dir: str | Path | None = None, dry_run: bool = False) -> dict[str, Any]:
    """Run (or join, from another machine) a benchmark suite as one optuna study over its cells (see
    `autoprompt.experiments.suite.suite_run`)."""
    from autoprompt.experiments.suite import suite_run as run  # noqa: PLC0415

    return run(name, suites=suites, storage=storage, db=db, workers=workers, study=study, heartbeat=heartbeat,
               grace=grace, data_dir=data_dir, dry_run=dry_run)
