"""Running a study: samplers, pruners, workers (heartbeats, orphaned and surplus trials), the objective."""

from __future__ import annotations

import shlex
import statistics
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from autoprompt.errors import AutopromptError
from autoprompt.io import check_writable_folder, path_part
from autoprompt.results.record import finished
from autoprompt.results.recording import record_finished

if TYPE_CHECKING:  # for annotations only: optuna and matplotlib are imported lazily, where used
    from optuna.pruners import BasePruner
    from optuna.samplers import BaseSampler
    from optuna.study import Study
    from optuna.trial import Trial

from autoprompt.experiments.tune.config import TuneConfig, grid, suggest
from autoprompt.experiments.workers import STARTED, SURPLUS, fail_orphans, open_rdb_study, run_one_trial, run_processes


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


def open_study(config: TuneConfig, worker: int = 0) -> Study:
    """The study in its RDB storage (created if missing), with heartbeats and one retry of failed trials."""
    return open_rdb_study(config.study, config.storage, _sampler(config, worker), _pruner(config.pruner),
                          config.heartbeat, config.grace)


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
            result = finished(record_finished(run_search(spec, on_step=report), config.leaderboard, out))
        except AutopromptError as err:  # e.g. a NaN loss at a too-large lr: this trial fails, the study goes on
            trial.set_user_attr("error", str(err))
            return float("nan")
        devs.append(result.scores.dev)
        tests.append(result.scores.test)
        runs.append(result.run_dir)
        trial.set_user_attr("runs", runs)
        trial.set_user_attr("dev_per_seed", devs)
        trial.set_user_attr("test_per_seed", tests)  # recorded, never optimised
    trial.set_user_attr("test_mean", statistics.mean(tests))
    return statistics.mean(devs)


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
