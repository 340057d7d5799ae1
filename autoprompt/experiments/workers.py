"""The worker machinery `tune` and `suite` share: one optuna study in RDB storage with heartbeats, a trial
at a time per worker (robust to workers taken for dead), and worker processes that find the same
plug-ins as their parent."""

from __future__ import annotations

import multiprocessing
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autoprompt.backends import registry as backend_registry
from autoprompt.errors import AutopromptError
from autoprompt.search import registry as strategy_registry

#: trial marks every worker sets: ``started`` once the objective runs (a RUNNING trial without it and past the
#: grace period is an orphan, `fail_orphans`), ``surplus`` on a trial started after the study was complete
STARTED = "started"
SURPLUS = "surplus"

if TYPE_CHECKING:  # for annotations only: optuna is imported lazily, where used
    from optuna.pruners import BasePruner
    from optuna.samplers import BaseSampler
    from optuna.study import Study
    from optuna.trial import FrozenTrial, Trial


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
