"""Hyper-parameter tuning of a strategy with optuna, on one or many workers and machines.

Each trial is one normal search per data seed (artifacts, a leaderboard row each) with the
strategy's parameters drawn from a search space (the strategy's ``search_space``, or a TOML file).
A trial's value is the **dev** score, averaged over the data seeds; test scores are recorded as
trial attributes, never optimised. The best-so-far dev score is reported to optuna after every
search step, so a median or successive-halving pruner stops hopeless trials early.

The study lives in optuna's RDB storage: a SQLite file by default, any storage URL otherwise
(``postgresql://...`` for several machines). Workers heartbeat; a worker killed mid-trial leaves
its trial RUNNING until another worker's stale-trial check marks it FAILED, and the failed trial
is retried once with the same parameters. Workers on one study stop once it has ``n_trials``
complete or pruned trials; a trial started while that many are already done or running is
marked FAILED as surplus (so the count is exact however many workers race).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import shlex
import statistics
import time
import tomllib
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from autoprompt.errors import AutopromptError
from autoprompt.io import check_writable_folder

if TYPE_CHECKING:  # for annotations only: optuna and matplotlib are imported lazily, where used
    from datetime import datetime

    from matplotlib.figure import Figure
    from optuna.pruners import BasePruner
    from optuna.samplers import BaseSampler
    from optuna.study import Study
    from optuna.trial import FrozenTrial, Trial

SURPLUS = "surplus"
STARTED = "started"


@dataclasses.dataclass
class TuneConfig:
    """Everything a worker needs (picklable: workers are separate processes).

    Attributes mirror ``autoprompt tune``'s options; ``fixed`` are ``--param`` values that are
    not tuned.
    """

    task: str
    strategy: str
    n_trials: int
    space: dict[str, dict[str, Any]]
    storage: str
    study: str
    out: str = "runs"
    model: str = "smollm2-135m"
    shots: int | None = None
    data_seeds: tuple[int, ...] = (13,)
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0
    budget: int | None = None
    fixed: dict[str, Any] = dataclasses.field(default_factory=dict)
    data_dir: str | None = None
    db: str | None = None
    heartbeat: int = 10
    grace: int = 30

    @property
    def leaderboard(self) -> str:
        """Where every trial records: ``db``, ``$AUTOPROMPT_DB``, else one ``<out>/leaderboard.db``."""
        from autoprompt.search import leaderboard_db  # noqa: PLC0415

        return str(leaderboard_db(self.db, self.out))


def default_space(strategy: str) -> dict[str, dict[str, Any]]:
    """The search space a strategy ships (``Searcher.search_space``)."""
    from autoprompt.search import get_strategy  # noqa: PLC0415

    space = dict(get_strategy(strategy).search_space)
    if not space:
        raise AutopromptError(f"strategy {strategy} has no default search space; give one with `space=space.toml`")
    return space


def load_space(path: str | Path, strategy: str) -> dict[str, dict[str, Any]]:
    """A search space from TOML: one table per parameter (``[lr] type="float" low=1e-4 high=0.1 log=true``)."""
    from autoprompt.search import get_strategy, param_types  # noqa: PLC0415

    file = Path(path)
    if not file.is_file():
        raise AutopromptError(f"search space file {file} does not exist")
    try:
        space = tomllib.loads(file.read_text())
    except tomllib.TOMLDecodeError as err:
        raise AutopromptError(f"search space file {file} is not valid TOML ({err})") from None
    names = param_types(get_strategy(strategy))
    for name, spec in space.items():
        if name not in names:
            raise AutopromptError(f"search space: {strategy} has no parameter {name!r}; valid: {', '.join(names)}")
        kind = spec.get("type") if isinstance(spec, dict) else None
        if kind not in ("int", "float", "categorical"):
            raise AutopromptError(f"search space: {name} needs type = \"int\", \"float\" or \"categorical\"")
        if kind == "categorical" and not spec.get("choices"):
            raise AutopromptError(f"search space: {name} is categorical and needs choices = [...]")
        if kind != "categorical" and not ("low" in spec and "high" in spec and spec["low"] <= spec["high"]):
            raise AutopromptError(f"search space: {name} needs low <= high")
    return space


def suggest(trial: Trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Draw one value per parameter of ``space`` from the trial."""
    params: dict[str, Any] = {}
    for name, spec in space.items():
        if spec["type"] == "int":
            params[name] = trial.suggest_int(name, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log")))
        elif spec["type"] == "float":
            params[name] = trial.suggest_float(name, float(spec["low"]), float(spec["high"]),
                                               log=bool(spec.get("log")))
        else:
            params[name] = trial.suggest_categorical(name, list(spec["choices"]))
    return params


def grid(space: dict[str, dict[str, Any]], points: int = 3) -> dict[str, list[Any]]:
    """A grid for ``--sampler grid``: choices, or ``points`` values spread over each range."""
    import numpy as np  # noqa: PLC0415

    out: dict[str, list[Any]] = {}
    for name, spec in space.items():
        if spec["type"] == "categorical":
            out[name] = list(spec["choices"])
            continue
        low, high = float(spec["low"]), float(spec["high"])
        values = np.geomspace(low, high, points) if spec.get("log") else np.linspace(low, high, points)
        out[name] = sorted({round(float(v)) for v in values}) if spec["type"] == "int" else [float(v) for v in values]
    return out


def _sampler(config: TuneConfig, worker: int) -> BaseSampler:
    import optuna  # noqa: PLC0415

    seed = config.seed + 1000 * worker  # workers must not draw the same points
    if config.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if config.sampler == "grid":
        return optuna.samplers.GridSampler(grid(config.space), seed=seed)
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
    import optuna  # noqa: PLC0415
    from optuna.exceptions import ExperimentalWarning  # noqa: PLC0415
    from optuna.storages import RDBStorage  # noqa: PLC0415

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own progress lines say what happens
    url = config.storage
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            storage = RDBStorage(url, heartbeat_interval=config.heartbeat, grace_period=config.grace,
                                 heartbeat_stale_trial_callback=_retry_once(),
                                 engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None)
    except Exception as err:  # optuna/SQLAlchemy raise many kinds here; all mean "cannot open"
        raise AutopromptError(f"cannot open the optuna storage {url} ({type(err).__name__}: {err}); "
                              "check `storage`") from None
    return optuna.create_study(study_name=config.study, storage=storage, direction="maximize",
                               sampler=_sampler(config, worker), pruner=_pruner(config.pruner), load_if_exists=True)


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
    out = str(Path(config.out) / config.study / f"trial-{trial.number}")
    for k, data_seed in enumerate(config.data_seeds):
        spec = SearchSpec(task=config.task, strategy=config.strategy, params=params, model=config.model,
                          shots=config.shots, data_seed=data_seed, seed=config.seed, budget=config.budget,
                          out=out, data_dir=config.data_dir)

        def report(step: int, info: dict[str, Any], k: int = k, data_seed: int = data_seed) -> None:
            if info.get("best_dev") is None:
                return
            # the running mean over seeds: finished seeds' dev plus this seed's best so far
            trial.report((sum(devs) + info["best_dev"]) / (len(devs) + 1), step=k * 10_000 + step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at seed {data_seed}, step {step}")

        try:
            result = run_search(spec, db=config.leaderboard, on_step=report)
        except AutopromptError as err:  # e.g. a NaN loss at a too-large lr: this trial fails, the study goes on
            trial.set_user_attr("error", str(err))
            return float("nan")
        devs.append(result["scores"]["dev"])
        tests.append(result["scores"]["test"])
        runs.append(result["run_dir"])
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
        _retry_once()(study, next(f for f in study.get_trials(deepcopy=False) if f.number == t.number))
        failed.append(t.number)
    return failed


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
        study.optimize(lambda trial: objective(config, trial), n_trials=1)
        # mypy sees datetime | None; the comparison assumes every trial has a start or completion time
        last = max(study.get_trials(deepcopy=False),
                   key=lambda t: cast("datetime", t.datetime_start or t.datetime_complete))
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
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_worker_main, args=(config, i), name=f"tune-worker-{i}") for i in range(workers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
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
    for key, value in sorted(params.items()):
        parts += ["--param", f"{key}={value}"]
    return shlex.join(parts)


def study_section(name: str, storage: str) -> tuple[str, str, dict[str, bytes]]:
    """A report section for a stored study: (title, Markdown, PNGs)."""
    import optuna  # noqa: PLC0415

    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise AutopromptError(f"no study {name!r} in {storage}; check `study` and `storage`") from None
    attrs = study.user_attrs
    config = TuneConfig(task=attrs.get("task", "?"), strategy=attrs.get("strategy", "?"), n_trials=0, space={},
                        storage=storage, study=name, model=attrs.get("model", "?"), shots=attrs.get("shots"),
                        data_seeds=tuple(attrs.get("data_seeds", (13,))), seed=attrs.get("seed", 0),
                        budget=attrs.get("budget"), fixed=attrs.get("fixed", {}))
    body, images = study_figures(config)
    return f"Tuning: {name}", body, images


def study_figures(config: TuneConfig) -> tuple[str, dict[str, bytes]]:
    """Markdown and PNGs for the report: optimisation history and parameter importances."""
    import io  # noqa: PLC0415

    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    import optuna  # noqa: PLC0415
    import optuna.visualization.matplotlib as vis  # noqa: PLC0415

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    study = open_study(config)
    info = summary(config)
    images: dict[str, bytes] = {}
    lines = [f"Study `{config.study}` ({config.strategy} on {config.task}): trial states {info['states']}."]
    if "best" in info:
        best = info["best"]
        lines.append(f"Best trial #{best['number']}: dev {best['dev']:.4f}, test (recorded, not optimised) "
                     f"{best['test_mean']:.4f}; reproduce: `{best['command']}`")
    for name, plot in (("history", vis.plot_optimization_history), ("importances", vis.plot_param_importances)):
        try:
            ax = plot(study)
        except (ValueError, RuntimeError) as err:  # e.g. importances need two complete trials
            lines.append(f"({name}: {err})")
            continue
        buffer = io.BytesIO()
        figure = cast("Figure", ax.figure)  # optuna draws on a top-level figure, never a subfigure
        figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        plt.close(figure)
        file = f"tune-{name}-{''.join(c if c.isalnum() else '_' for c in config.study)}.png"
        images[file] = buffer.getvalue()
        lines.append(f"![{name} of {config.study}]({file})")
    return "\n\n".join(lines), images


def parse_seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise AutopromptError(f"`data_seeds` {text!r} must be comma-separated integers, e.g. 13,21,42") from None
    if not seeds:
        raise AutopromptError("`data_seeds` is empty; give e.g. 13,21,42")
    return seeds


def storage_url(storage: str | None, out: str | Path) -> str:
    """An optuna storage URL: the given one, or a SQLite file ``<out>/tune.db``."""
    if storage:
        return storage if "://" in storage else f"sqlite:///{Path(storage).resolve()}"
    check_writable_folder(out, "tuning output folder")
    Path(out).mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(Path(out) / 'tune.db').resolve()}"
