"""What a study tunes: its configuration, search spaces and their TOML, seeds, the storage URL."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoprompt.errors import AutopromptError
from autoprompt.io import check_writable_folder

if TYPE_CHECKING:  # for annotations only: optuna and matplotlib are imported lazily, where used

    from optuna.trial import Trial



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
    dtype: str = "fp32"  # what each trial's search steps compute in (`SearchSpec.dtype`)

    @property
    def leaderboard(self) -> str:
        """Where every trial records: ``db``, ``$AUTOPROMPT_DB``, else one ``<out>/leaderboard.db``."""
        from autoprompt.results.recording import leaderboard_db  # noqa: PLC0415

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
