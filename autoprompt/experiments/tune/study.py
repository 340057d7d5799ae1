"""Running a study: samplers, pruners, workers (heartbeats, orphaned and surplus trials), the objective."""

from __future__ import annotations

import multiprocessing
import shlex
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from autoprompt.backends import registry as backend_registry
from autoprompt.errors import AutopromptError
from autoprompt.io import check_writable_folder, path_part
from autoprompt.results.record import RunRecord
from autoprompt.results.recording import record_finished
from autoprompt.search import registry as strategy_registry

if TYPE_CHECKING:  # for annotations only: optuna and matplotlib are imported lazily, where used
    from optuna.pruners import BasePruner
    from optuna.samplers import BaseSampler
    from optuna.study import Study
    from optuna.trial import FrozenTrial, Trial

from autoprompt.experiments.tune.config import STARTED, SURPLUS, TuneConfig, grid, suggest


def _sampler(config: TuneConfig, worker: int) -> BaseSampler:
    import optuna  # noqa: PLC0415

    seed = config.seed + 1000 * worker  # workers must not draw the same points
    if config.sampler == "grid":  # but a grid id names a point of the seed's shuffled grid: one seed for all
        return optuna.samplers.GridSampler(grid(config.space), seed=config.seed)
    if config.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise AutopromptError(f"`sampler` {config.sampler!r} is not one of tpe, random, grid")


def _pruner(name: str) -> BasePruner:
    import optuna  # noqa: PLC0415

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if name == "none":
        return optuna.pruners.NopPruner()
    raise AutopromptError(f"`pruner` {name!r} is not one of median, halving, none")


def _retry_once() -> Callable[[Study, FrozenTrial], None]:
    """Optuna's callback that re-queues a stale (dead worker's) trial once."""
    from optuna import storages  # noqa: PLC0415
    from optuna.exceptions import ExperimentalWarning  # noqa: PLC0415

    # renamed in optuna 4.9 (the old name warns from then on); heartbeats are "experimental" in
    # optuna's terms since 2.8, and the warning says nothing a user can act on
    retry = getattr(storages, "RetryHeartbeatStaleTrialCallback", None) or storages.RetryFailedTrialCallback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return retry(max_retry=1)


def open_study(config: TuneConfig, worker: int = 0) -> Study:
    """The study in its RDB storage (created if missing), with heartbeats and one retry of failed trials."""
    return open_rdb_study(config.study, config.storage, _sampler(config, worker), _pruner(config.pruner),
                          config.heartbeat, config.grace)


def open_rdb_study(name: str, url: str, sampler: BaseSampler, pruner: BasePruner | None = None,
                   heartbeat: int = 10, grace: int = 30) -> Study:
    """A maximising study in the RDB storage ``url`` (created if missing): workers beat every
    ``heartbeat`` seconds, and a trial whose worker stopped beating for ``grace`` seconds is failed
    and retried once with the same parameters."""
    import optuna  # noqa: PLC0415
    from optuna.exceptions import ExperimentalWarning  # noqa: PLC0415
    from optuna.storages import RDBStorage  # noqa: PLC0415

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own progress lines say what happens
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            storage = RDBStorage(url, heartbeat_interval=heartbeat, grace_period=grace,
                                 heartbeat_stale_trial_callback=_retry_once(),
                                 engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None)
    except Exception as err:  # optuna/SQLAlchemy raise many kinds here; all mean "cannot open"
        raise AutopromptError(f"cannot open the optuna storage {url} ({type(err).__name__}: {err}); "
                              "check `storage`") from None
    return optuna.create_study(study_name=name, storage=storage, direction="maximize", sampler=sampler,
                               pruner=pruner, load_if_exists=True)


def _counts(study: Study) -> dict[str, int]:
    from optuna.trial import TrialState  # noqa: PLC0415

    trials = study.get_trials(deepcopy=False)
    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    return {"done": done, "running": sum(t.state == TrialState.RUNNING for t in trials),
            "waiting": sum(t.state == TrialState.WAITING for t in trials)}


def objective(config: TuneConfig, trial: Trial) -> float:
    """One trial: a search per data seed with the drawn parameters; the mean dev score."""
    import optuna  # noqa: PLC0415
    from optuna.trial import TrialState  # noqa: PLC0415

    from autoprompt.search import SearchSpec, run_search  # noqa: PLC0415

    trial.set_user_attr(STARTED, True)  # its heartbeat thread runs: optuna can tell if this worker dies
    earlier = [t for t in trial.study.get_trials(deepcopy=False)
               if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
               or (t.state == TrialState.RUNNING and t.number < trial.number)]
    if len(earlier) >= config.n_trials:  # another worker already started the last trial
        trial.set_user_attr(SURPLUS, True)
        return float("nan")  # optuna records a NaN value as FAILED
    params = {**config.fixed, **suggest(trial, config.space)}
    devs: list[float] = []
    tests: list[float] = []
    runs: list[str] = []
    out = str(Path(config.out) / path_part(config.study, "study") / f"trial-{trial.number}")
    for k, data_seed in enumerate(config.data_seeds):
        spec = SearchSpec(task=config.task, strategy=config.strategy, params=params, model=config.model,
                          shots=config.shots, data_seed=data_seed, seed=config.seed, budget=config.budget,
                          out=out, data_dir=config.data_dir, dtype=config.dtype)

        def report(step: int, info: dict[str, Any], k: int = k, data_seed: int = data_seed) -> None:
            if info.get("best_dev") is None:
                return
            # the running mean over seeds: finished seeds' dev plus this seed's best so far
            trial.report((sum(devs) + info["best_dev"]) / (len(devs) + 1), step=k * 10_000 + step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at seed {data_seed}, step {step}")

        try:
            result = record_finished(run_search(spec, on_step=report), config.leaderboard, out)
        except AutopromptError as err:  # e.g. a NaN loss at a too-large lr: this trial fails, the study goes on
            trial.set_user_attr("error", str(err))
            return float("nan")
        finished = RunRecord.from_json(result)
        devs.append(finished.scores.dev)
        tests.append(finished.scores.test)
        runs.append(finished.run_dir)
        trial.set_user_attr("runs", runs)
        trial.set_user_attr("dev_per_seed", devs)
        trial.set_user_attr("test_per_seed", tests)  # recorded, never optimised
    trial.set_user_attr("test_mean", statistics.mean(tests))
    return statistics.mean(devs)


def fail_orphans(study: Study, grace: float) -> list[int]:
    """Fail (and retry) RUNNING trials whose worker died before the trial's first heartbeat.

    Optuna's stale-trial check only sees trials that have a heartbeat; a worker killed between
    creating a trial and starting its heartbeat would leave the trial RUNNING forever. Such a
    trial never reached the objective (which marks it ``started`` first thing).
    """
    from datetime import datetime  # noqa: PLC0415

    from optuna.exceptions import UpdateFinishedTrialError  # noqa: PLC0415
    from optuna.trial import TrialState  # noqa: PLC0415

    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        age = (datetime.now() - t.datetime_start).total_seconds() if t.datetime_start else 0.0
        if STARTED in t.user_attrs or age <= grace:
            continue
        try:
            study.tell(t.number, state=TrialState.FAIL)
        except (UpdateFinishedTrialError, ValueError):
            continue  # another worker got there first
        _retry_once()(study, _trial(study, t.number))
        failed.append(t.number)
    return failed


def run_one_trial(study: Study, objective: Callable[[Trial], float]) -> FrozenTrial:
    """Run one trial of ``objective`` (with the study's heartbeats); the trial as stored.

    A worker that could not beat in time (a loaded machine, a long pause) may find its trial failed
    by another worker that took it for dead and queued its retry. Optuna then refuses to store the
    trial's end (a ``ValueError``, or an ``AssertionError`` from its own logging), and the objective
    may have stopped on an ``UpdateFinishedTrialError``. The retry redoes the work (or finds it
    recorded), so this worker warns and carries on instead of dying. Any other error is re-raised.
    """
    from optuna.exceptions import UpdateFinishedTrialError  # noqa: PLC0415
    from optuna.trial import TrialState  # noqa: PLC0415

    from autoprompt.events import warn  # noqa: PLC0415

    numbers: list[int] = []
    own_errors: list[BaseException] = []  # errors of the objective itself: never ours to swallow

    def tracked(trial: Trial) -> float:
        numbers.append(trial.number)
        try:
            return objective(trial)
        except UpdateFinishedTrialError:
            raise
        except BaseException as err:
            own_errors.append(err)
            raise

    try:
        study.optimize(tracked, n_trials=1)
    except (ValueError, AssertionError, UpdateFinishedTrialError):
        if own_errors or not numbers or _trial(study, numbers[0]).state != TrialState.FAIL:
            raise
        warn(f"trial {numbers[0]} was failed by another worker that took this one for dead (no heartbeat for "
             "the grace period) and will be retried; raise `grace` if this machine is busy")
    if not numbers:  # optuna stopped before the objective ran
        raise AutopromptError("optuna started no trial; check the storage")
    return _trial(study, numbers[0])


def _trial(study: Study, number: int) -> FrozenTrial:
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def worker(config: TuneConfig, index: int = 0, poll: float = 2.0) -> None:
    """Run trials until the study has ``n_trials`` complete or pruned ones."""
    import optuna  # noqa: PLC0415

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    study = open_study(config, index)
    errors = 0
    while True:
        optuna.storages.fail_stale_trials(study)  # a killed worker's trial: FAILED, then retried
        fail_orphans(study, config.grace)
        counts = _counts(study)
        if counts["done"] >= config.n_trials:
            return
        if counts["done"] + counts["running"] >= config.n_trials and not counts["waiting"]:
            time.sleep(poll)  # the last trials are running elsewhere
            continue
        last = run_one_trial(study, lambda trial: objective(config, trial))  # this worker's, not the newest
        errors = errors + 1 if "error" in last.user_attrs else 0
        if errors >= 3:  # the same mistake every time is a setup problem, not a bad draw
            raise AutopromptError(f"three trials in a row failed; the last: {last.user_attrs['error']}")


def _worker_main(config: TuneConfig, index: int) -> None:
    try:
        worker(config, index)
    except AutopromptError as err:
        raise SystemExit(f"worker {index}: error: {err}") from None


def tune(config: TuneConfig, workers: int = 1) -> dict[str, Any]:
    """Run the study on ``workers`` processes here (each may also run on other machines); its summary."""
    check_writable_folder(config.out, "tuning output folder")
    study = open_study(config)  # create it (and fail fast on a bad storage) before the workers start
    for key in ("task", "strategy", "model", "shots", "seed", "budget", "fixed"):
        study.set_user_attr(key, getattr(config, key))
    study.set_user_attr("data_seeds", list(config.data_seeds))
    if workers <= 1:
        worker(config)
    else:
        run_processes(_worker_main, config, workers, "tune-worker")
    return summary(config)


def run_processes(target: Callable[[Any, int], None], config: Any, n: int, name: str) -> None:
    """``target(config, i)`` for i < ``n``, each in its own spawned process; returns when all have ended.

    A spawned process starts from a fresh interpreter: the strategies and backends registered in this
    one are registered again there first (`Plugins`), so a worker finds what its parent found.
    """
    ctx = multiprocessing.get_context("spawn")
    plugins = Plugins(strategy_registry.carried(), backend_registry.carried())
    procs = [ctx.Process(target=_spawned, args=(target, config, i, plugins), name=f"{name}-{i}") for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()


@dataclass(frozen=True)
class Plugins:
    """The in-process registrations a spawned worker repeats: ``{name: "module:attr"}`` of each kind."""

    strategies: dict[str, str]
    backends: dict[str, str]

    def install(self) -> None:
        for name, spec in self.strategies.items():
            strategy_registry.register(spec, name)
        for scheme, spec in self.backends.items():
            backend_registry.register_backend(scheme, spec)


def _spawned(target: Callable[[Any, int], None], config: Any, index: int, plugins: Plugins) -> None:
    plugins.install()
    target(config, index)


def summary(config: TuneConfig) -> dict[str, Any]:
    """Trial counts, the best trial, its scores and the command that reproduces it."""
    from optuna.trial import TrialState  # noqa: PLC0415

    study = open_study(config)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    out: dict[str, Any] = {
        "study": config.study, "storage": config.storage, "task": config.task, "strategy": config.strategy,
        "n_trials": config.n_trials,
        "states": {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState},
        "surplus": sum(bool(t.user_attrs.get(SURPLUS)) for t in trials),
    }
    if complete:
        best = max(complete, key=lambda t: cast(float, t.value))  # a COMPLETE trial has a value
        params = {**config.fixed, **best.params}
        out["best"] = {"number": best.number, "dev": best.value, "params": params,
                       "dev_per_seed": best.user_attrs.get("dev_per_seed"),
                       "test_per_seed": best.user_attrs.get("test_per_seed"),
                       "test_mean": best.user_attrs.get("test_mean"), "runs": best.user_attrs.get("runs"),
                       "command": reproduce_command(config, params)}
    return out


def reproduce_command(config: TuneConfig, params: dict[str, Any], data_seed: int | None = None) -> str:
    """``autoprompt search ...`` that reruns a trial's search on one data seed."""
    parts = ["autoprompt", "search", "--task", config.task, "--strategy", config.strategy, "--model", config.model]
    if config.shots:
        parts += ["--shots", str(config.shots)]
    parts += ["--data-seed", str(data_seed if data_seed is not None else config.data_seeds[0]),
              "--seed", str(config.seed)]
    if config.budget is not None:
        parts += ["--budget", str(config.budget)]
    if config.dtype != "fp32":
        parts += ["--dtype", config.dtype]
    for key, value in sorted(params.items()):
        parts += ["--param", f"{key}={value}"]
    return shlex.join(parts)
