"""Benchmark suites: a matrix of searches run as one optuna study, shared by any number of workers.

A suite (a table of a TOML file, e.g. ``benchmarks/suite.toml``) is tasks × data seeds × strategy
entries on one model; each combination is a *cell*, one normal search. `run` turns the cells into
an optuna study over a grid (``GridSampler`` over the cell names, RDB storage, heartbeats and one
retry of a dead worker's trial, as `autoprompt tune` uses), so the same command on N machines with
one ``--storage`` URL shares the work, and every finished cell lands in one leaderboard.

Exactly once: optuna's grid can hand a cell out twice when workers race near the end (and a retried
trial may find its cell done). Before a cell runs, a worker skips it if the leaderboard has it or
another live trial holds it; after it ran, the cell and its run are recorded in one transaction
whose primary key (suite, cell) lets only the first worker's insert through. A killed worker's
trial is failed by the stale-heartbeat check and retried; a retry on the same machine resumes the
run folder from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import time
import tomllib
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoprompt.backends.precision import resolve_dtype
from autoprompt.errors import AutopromptError
from autoprompt.experiments.tune import storage_url
from autoprompt.experiments.workers import STARTED, SURPLUS, fail_orphans, open_rdb_study, run_one_trial, run_processes
from autoprompt.io import check_writable_folder
from autoprompt.results import leaderboard as lb
from autoprompt.results.record import finished
from autoprompt.search import SearchSpec, find_run, run_search

if TYPE_CHECKING:
    from optuna.study import Study
    from optuna.trial import Trial

SUITES_FILE = Path("benchmarks") / "suite.toml"


@dataclasses.dataclass(frozen=True)
class Suite:
    """One suite: what each cell runs. Attributes mirror the TOML table (see ``benchmarks/suite.toml``)."""

    name: str
    model: str
    tasks: tuple[str, ...]
    data_seeds: tuple[int, ...]
    strategies: Mapping[str, Mapping[str, Any]]  # entry name → {strategy, params, budget}
    out: str
    shots: int | None = None
    test_limit: int | None = None
    description: str = ""
    dtype: str = "fp32"  # what the cells' search steps compute in; an entry's own ``dtype`` overrides it

    def cells(self) -> dict[str, SearchSpec]:
        """Cell name (``task/seed/entry``) → its search, in the suite's order."""
        cells = {}
        for task in self.tasks:
            for data_seed in self.data_seeds:
                for entry, conf in self.strategies.items():
                    cells[f"{task}/{data_seed}/{entry}"] = SearchSpec(
                        task=task, strategy=conf.get("strategy", entry), params=dict(conf.get("params", {})),
                        model=self.model, shots=self.shots, data_seed=data_seed, seed=0, budget=conf.get("budget"),
                        out=self.out, test_limit=self.test_limit, dtype=conf.get("dtype", self.dtype))
        return cells


def load_suite(name: str, suites: str | Path | None = None) -> Suite:
    """The suite ``name`` of the TOML file ``suites`` (default ``benchmarks/suite.toml``), or the suite
    in the TOML file ``name`` itself."""
    path = Path(name) if name.endswith(".toml") else Path(suites or SUITES_FILE)
    try:
        tables = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise AutopromptError(f"suite file {path} does not exist; give `suites`, the TOML file of suites "
                              "(e.g. benchmarks/suite.toml)") from None
    except tomllib.TOMLDecodeError as err:
        raise AutopromptError(f"suite file {path} is not valid TOML ({err})") from None
    table = tables if name.endswith(".toml") else tables.get(name)
    if not isinstance(table, dict):
        raise AutopromptError(f"no suite {name!r} in {path}; choose one of {', '.join(tables)}")
    missing = [k for k in ("model", "tasks", "data_seeds", "strategies", "out") if k not in table]
    if missing:
        raise AutopromptError(f"suite {name!r} in {path} lacks {', '.join(missing)}")
    suite = Suite(Path(name).stem if name.endswith(".toml") else name, table["model"], tuple(table["tasks"]),
                  tuple(int(s) for s in table["data_seeds"]), dict(table["strategies"]), table["out"],
                  table.get("shots"), table.get("test_limit"), table.get("description", ""), table.get("dtype", "fp32"))
    for entry, conf in suite.strategies.items():
        try:
            resolve_dtype(str(conf.get("dtype", suite.dtype)), "cpu")
        except AutopromptError as err:
            raise AutopromptError(f"suite {name!r} in {path}, entry {entry!r}: {err}") from None
    return suite


@dataclasses.dataclass
class SuiteRun:
    """What a worker needs (picklable: local workers are separate processes)."""

    suite: Suite
    storage: str              # the optuna study's storage URL
    db: str                   # the leaderboard every cell lands in
    study: str
    heartbeat: int = 10
    grace: int = 30
    threads: int | None = None  # torch threads per worker (default: the cores shared out)
    data_dir: str | None = None

    def cells(self) -> dict[str, SearchSpec]:
        """The suite's cells, reading data from ``data_dir``."""
        return {cell: dataclasses.replace(spec, data_dir=self.data_dir) for cell, spec in self.suite.cells().items()}


def recorded(run: SuiteRun) -> dict[str, dict[str, Any]]:
    """The suite's cells the leaderboard has (cell → its run key, worker and time).

    Only the cells the suite has now: a leaderboard shared by many runs may hold cells of this
    suite's name that an edited suite file (or an earlier suite of the same name) no longer has.
    """
    cells = run.cells()
    return {cell: row for cell, row in lb.recorded_cells(run.suite.name, run.db).items() if cell in cells}


def status(run: SuiteRun) -> dict[str, str]:
    """Cell → ``done`` (in the leaderboard), ``resume`` (a run folder here) or ``todo``."""
    done = recorded(run)
    return {cell: "done" if cell in done else "resume" if find_run(spec) else "todo"
            for cell, spec in run.cells().items()}


def _open(run: SuiteRun) -> Study:
    import optuna  # noqa: PLC0415

    # one seed for every worker: a grid id names a cell of the seed's shuffled grid, so workers with
    # different seeds would read each other's ids as other cells (duplicates and misses)
    cells = list(run.cells())
    sampler = optuna.samplers.GridSampler({"cell": cells}, seed=0)
    study = open_rdb_study(run.study, run.storage, sampler, optuna.pruners.NopPruner(), run.heartbeat, run.grace)
    drawn = next((t.distributions["cell"] for t in study.get_trials(deepcopy=False) if "cell" in t.distributions), None)
    if drawn is not None and list(getattr(drawn, "choices", ())) != cells:
        raise AutopromptError(f"study {run.study!r} in {run.storage} runs another set of cells than suite "
                              f"{run.suite.name!r} has now; give `study` a new name (cells the leaderboard has are "
                              "not run again) or leave it out")
    return study


def default_study(suite: Suite) -> str:
    """``suite-<name>-<digest of its cells>``: an edited suite gets a study of its own (a grid cannot change)."""
    digest = hashlib.sha256("\n".join(suite.cells()).encode()).hexdigest()[:8]
    return f"suite-{suite.name}-{digest}"


def _objective(run: SuiteRun, trial: Trial, lm: Any, worker: str) -> float:
    from optuna.trial import TrialState  # noqa: PLC0415

    trial.set_user_attr(STARTED, True)
    cells = run.cells()
    cell = str(trial.suggest_categorical("cell", list(cells)))
    holders = [t.number for t in trial.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
               if t.params.get("cell") == cell and t.number < trial.number]
    if cell in lb.recorded_cells(run.suite.name, run.db) or holders:  # handed out twice
        trial.set_user_attr(SURPLUS, True)
        return float("nan")  # optuna records a NaN value as FAILED
    spec = cells[cell]
    folder = find_run(spec)
    result = finished(run_search(spec, lm=lm, resume=folder))
    trial.set_user_attr("run_dir", result.run_dir)
    if not lb.record_cell(result, run.suite.name, cell, worker, run.db):
        trial.set_user_attr(SURPLUS, True)  # another worker finished it first: its row stands
        return float("nan")
    return result.scores.dev


def worker(run: SuiteRun, index: int = 0, poll: float = 2.0) -> int:
    """Run cells until every cell of the suite is recorded; the number this worker recorded."""
    import optuna  # noqa: PLC0415
    import torch  # noqa: PLC0415

    from autoprompt.backends.store import load_model  # noqa: PLC0415

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats, in optuna's words
    if run.threads:
        torch.set_num_threads(run.threads)
    study = _open(run)
    name = f"{socket.gethostname()}:{os.getpid()}"
    loaded: dict[str, Any] = {}  # the model, loaded when this worker first has a cell to run

    def objective(trial: Trial) -> float:
        trial.set_user_attr(STARTED, True)  # before the model loads: a slow load must not read as an orphan
        if "lm" not in loaded:
            loaded["lm"] = load_model(run.suite.model)
        return _objective(run, trial, loaded["lm"], name)

    total, mine = len(run.cells()), 0
    while True:
        optuna.storages.fail_stale_trials(study)  # a killed worker's trial: FAILED, then retried
        fail_orphans(study, run.grace)
        done = len(recorded(run))
        if done >= total:
            return mine
        counts = {s: len(study.get_trials(deepcopy=False, states=(s,)))
                  for s in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)}
        if done + counts[optuna.trial.TrialState.RUNNING] >= total and not counts[optuna.trial.TrialState.WAITING]:
            time.sleep(poll)  # the last cells are running elsewhere
            continue
        last = run_one_trial(study, objective)  # this worker's trial, not the newest of all workers
        if last.state == optuna.trial.TrialState.COMPLETE:
            mine += 1


def _worker_main(run: SuiteRun, index: int) -> None:
    try:
        worker(run, index)
    except AutopromptError as err:
        raise SystemExit(f"suite worker {index}: error: {err}") from None


def suite_run(name: str, *, suites: str | Path | None = None, storage: str | None = None, db: str | None = None,
              workers: int = 1, study: str | None = None, heartbeat: int = 10, grace: int = 30,
              data_dir: str | Path | None = None, dry_run: bool = False) -> dict[str, Any]:
    """Run (or join) a suite; returns its cells' states, wall time and the leaderboard's aggregate rows.

    Args:
        name: the suite's name in ``suites``, or a TOML file holding one suite.
        suites: the TOML file of suites (default ``benchmarks/suite.toml``).
        storage: the optuna storage URL shared by every worker (default: a SQLite file in the suite's
            ``out``; ``postgresql://...`` for several machines).
        db: the leaderboard (default: the storage's database when it is a server, else
            ``<out>/leaderboard.db``).
        workers: worker processes on this machine (the cores are shared out between them).
        study: the study's name (default `default_study`: ``suite-<name>-<digest of its cells>``).
        heartbeat: seconds between a worker's heartbeats.
        grace: seconds without a heartbeat after which a worker counts as dead.
        data_dir: the local data folder.
        dry_run: list the cells and their state; run nothing.
    """
    if workers < 1:
        raise AutopromptError("`workers` must be at least 1")
    chosen = load_suite(name, suites)
    check_writable_folder(chosen.out, "suite output folder")
    url = storage_url(storage, chosen.out)
    shared = db or (url if not url.startswith("sqlite") else str(Path(chosen.out) / "leaderboard.db"))
    cores = os.cpu_count() or 1
    run = SuiteRun(chosen, url, shared, study or default_study(chosen), heartbeat, grace,
                   max(1, cores // workers) if workers > 1 else None, str(data_dir) if data_dir else None)
    states = status(run)
    out: dict[str, Any] = {"suite": chosen.name, "cells": len(states), "out": chosen.out, "storage": url, "db": shared,
                           "study": run.study, "workers": workers}
    if dry_run:
        return {**out, "states": states}
    started = time.perf_counter()
    _open(run)  # create the study (and fail fast on a bad storage) before the workers start
    if workers == 1:
        worker(run)
    else:
        run_processes(_worker_main, run, workers, "suite-worker")
    done = recorded(run)
    return {**out, "wall_s": round(time.perf_counter() - started, 1), "done": len(done),
            "by_worker": _count(done), "states": status(run)}


def _count(done: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for cell in done.values():
        counts[str(cell["worker"])] = counts.get(str(cell["worker"]), 0) + 1
    return counts
