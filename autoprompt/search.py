"""Search framework: the `Searcher` interface, its registry, `SearchContext` and the run loop.

A strategy is a dataclass whose fields are its hyper-parameters, with three methods::

    @dataclass
    class Random(Searcher):
        name = "random"; summary = "random trigger tokens"; default_budget = 2000
        num_candidates: int = 8

        def start(self, ctx) -> dict: ...          # the initial state (JSON-able)
        def step(self, ctx, state) -> dict: ...    # one step: returns the new state
        def best(self, ctx, state) -> Prompt: ...  # the prompt to report

The run loop (`run_search`) owns everything that must be fair and shared: the frozen model, the
splits (a strategy sees ``train`` and ``dev``, never ``test``), the `Budget`, checkpoints after
every step (so ``--resume`` ends exactly where an uninterrupted run would), the trace, the
progress bar, and the final scores on ``dev`` and ``test`` next to the manual baseline.

A step draws its randomness from ``ctx.rng(step)``, seeded by (seed, step): a resumed run needs
no saved generator state to repeat the same draws.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import sys
import time
import types
import typing
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from tqdm.auto import tqdm

from autoprompt.errors import AutopromptError, BudgetExhausted, SearchInterrupted
from autoprompt.evaluator import Budget, EvalResult, Evaluator
from autoprompt.io import atomic_write_json, check_writable_folder, read_json
from autoprompt.leaderboard import record
from autoprompt.models import FrozenLM, weights_checksum
from autoprompt.prompts import CALIBRATION_METHODS, AnyPrompt, Prompt, Segment, Template, Verbalizer, save_prompt
from autoprompt.schema import CheckpointFile, SpecFile, validate
from autoprompt.selection import Objective, bootstrap_delta, choose, objective_score
from autoprompt.tasks.base import Example, Task, TaskData, examples_fingerprint

ENTRY_POINT_GROUP = "autoprompt.searchers"


# ---- the strategy interface ---------------------------------------------------------------------

@dataclass
class Searcher(ABC):
    """Base class of strategies: subclasses are dataclasses whose fields are hyper-parameters.

    Three fields every strategy shares belong to the core's selection protocol
    (`autoprompt.selection`): how prompts are calibrated, the objective candidates are compared
    on, and the gate that keeps the manual prompt unless a found one is reliably better.

    Args:
        calibration: ``none``, ``contextual`` (content-free inputs) or ``prior`` (mean class
            distribution over the train inputs); the found prompt carries it.
        objective: ``margin`` (mean calibrated gold-class log-prob margin over the best other class),
            ``loglik`` (mean calibrated gold-class log-probability, classes normalised) or ``accuracy``.
        min_gain: the reported prompt must beat the manual one on the selection data by more
            than this many paired standard errors of the objective (0: any gain).
        gate: False reports the best candidate on the selection data even where the manual prompt
            is better (for studying what a search finds; its result says it was not gated).
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    #: example-forwards that keep a 16-shot SST-2 search under 15 minutes on 2 CPU cores
    default_budget: ClassVar[int] = 3000
    #: what ``autoprompt tune`` searches by default: ``{param: {"type": "int"|"float"|"categorical",
    #: "low", "high", "log", "choices"}}``
    search_space: ClassVar[dict[str, dict[str, Any]]] = {}
    #: whether the result passes the gate (False only for ``manual``: it reports what it was given)
    gated: ClassVar[bool] = True
    #: how many of `candidates` the core re-scores at the end
    final_candidates: ClassVar[int] = 3

    calibration: Literal["none", "contextual", "prior"] = "prior"
    objective: Literal["margin", "loglik", "accuracy"] = "margin"
    min_gain: float = 1.0
    gate: bool = True

    @abstractmethod
    def start(self, ctx: SearchContext) -> dict[str, Any]:
        """The initial state (JSON-able: it is checkpointed after every step)."""

    @abstractmethod
    def step(self, ctx: SearchContext, state: dict[str, Any]) -> dict[str, Any]:
        """One search step; return the new state. Set ``state["done"] = True`` to stop early."""

    @abstractmethod
    def best(self, ctx: SearchContext, state: dict[str, Any]) -> AnyPrompt:
        """The strategy's own pick (the first of `candidates` unless it says otherwise)."""

    def candidates(self, ctx: SearchContext, state: dict[str, Any]) -> list[AnyPrompt]:
        """The prompts the core re-scores and gates at the end, most promising first."""
        return [self.best(ctx, state)]

    def fitted(self, ctx: SearchContext, state: dict[str, Any]) -> Sequence[Example]:
        """The train examples the search fitted on (the rest of train joins dev in the final selection)."""
        return ctx.train

    def costs(self, train: int, dev: int) -> tuple[int, int]:
        """Example-forwards of the start and of one step on splits of these sizes (an upper estimate).

        Their sum is the minimum useful budget: below it a search cannot take a step, so
        `run_search` refuses it. Default: the start scores one prompt on dev and estimates its
        calibration on train; a step scores one prompt on train.
        """
        return self._calibration_cost(train) + dev, train

    def minimum_budget(self, train: int, dev: int) -> int:
        """The start and one step (`costs`)."""
        return sum(self.costs(train, dev))

    def _calibration_cost(self, inputs: int) -> int:
        """Example-forwards `SearchContext.calibrate` spends on one prompt and ``inputs`` inputs that
        are not scored anyway (``prior`` on the examples a prompt is then scored on is a cache hit)."""
        return {"none": 0, "contextual": 3, "prior": inputs}[self.calibration]

    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def details(self, ctx: SearchContext, state: dict[str, Any]) -> dict[str, Any]:
        """Extra facts for ``result.json`` (e.g. trainable parameters, a readout); none by default."""
        return {}

    def __post_init__(self) -> None:
        if self.calibration not in CALIBRATION_METHODS:
            raise AutopromptError(f"calibration must be one of {', '.join(CALIBRATION_METHODS)}, not "
                                  f"{self.calibration!r}")
        if not self.min_gain >= 0:
            raise AutopromptError(f"min_gain must be >= 0 standard errors, got {self.min_gain}")


# ---- registry -----------------------------------------------------------------------------------

def available() -> dict[str, type[Searcher]]:
    """Strategies registered under the ``autoprompt.searchers`` entry-point group, by name."""
    found: dict[str, type[Searcher]] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        cls = ep.load()
        found[ep.name] = cls
    return dict(sorted(found.items()))


def get_strategy(name: str) -> type[Searcher]:
    """The strategy class registered as ``name`` (only that plug-in is imported)."""
    found = [ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        names = sorted(ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP))
        raise AutopromptError(f"unknown strategy {name!r}; choose one of {', '.join(names) or '(none installed)'}")
    return found[0].load()


def param_types(cls: type[Searcher]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}  # type: ignore[arg-type]


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return "|".join(map(str, typing.get_args(tp)))
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    return "None" if tp is type(None) else getattr(tp, "__name__", str(tp))


def describe_params(cls: type[Searcher]) -> str:
    """``name: type = default`` for every parameter (for errors and ``autoprompt strategies``)."""
    types_ = param_types(cls)
    return ", ".join(f"{f.name}: {_type_name(types_[f.name])} = {f.default!r}"
                     for f in dataclasses.fields(cls))  # type: ignore[arg-type]


def _convert(value: Any, tp: Any, key: str, cls: type[Searcher]) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        if value in typing.get_args(tp):
            return value
        raise ValueError
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value in (None, "none", "None") and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key, cls)
            except (ValueError, TypeError):
                continue
        raise ValueError
    if tp is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError
    if tp is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return int(value)
    if tp is float:
        return float(value)
    if tp is str:
        return str(value)
    raise TypeError(f"parameter {key} of {cls.name} has an unsupported type {tp}")


def parse_params(items: Sequence[str]) -> dict[str, str]:
    """``["k=v", ...]`` (the CLI's ``--param``) as a dict; a one-line error for anything else."""
    out = {}
    for item in items:
        if "=" not in item:
            raise AutopromptError(f"--param {item!r} is not key=value; see `autoprompt strategies` for the names")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def create(name: str, params: Mapping[str, Any] | Sequence[str] = ()) -> Searcher:
    """Instantiate a strategy from ``{"k": v}`` or ``["k=v", ...]``; one-line errors otherwise."""
    cls = get_strategy(name)
    if not isinstance(params, Mapping):
        params = parse_params(params)
    types_ = param_types(cls)
    converted = {}
    for key, value in params.items():
        if key not in types_:
            raise AutopromptError(f"{name} has no parameter {key!r}; valid: {describe_params(cls)}")
        try:
            converted[key] = _convert(value, types_[key], key, cls)
        except ValueError:
            raise AutopromptError(f"{name} parameter {key}={value!r} is not a valid "
                                  f"{_type_name(types_[key])}; valid: {describe_params(cls)}") from None
    try:
        return cls(**converted)
    except AutopromptError:
        raise
    except (TypeError, ValueError) as err:
        raise AutopromptError(f"{name}: {err}") from None


# ---- what a strategy sees -----------------------------------------------------------------------

@dataclass
class SearchContext:
    """Everything a strategy may use. There is no ``test`` here, by design.

    Attributes:
        lm: the frozen model (never write its weights).
        task: labels, metric and the default manual prompt.
        train: examples to search on.
        dev: examples to select on.
        evaluator: the shared scorer; it charges ``budget``.
        budget: example-forwards (and backwards) left.
        seed: the search seed.
        report: call with a dict to add fields to the current step's trace line.
        warn: call with a message for the user (shown, and kept in the trace and the result).
        calibration: how prompts are calibrated in this search (`calibrate` applies it).
        objective: what candidates are compared on (`objective_scores`).
    """

    lm: FrozenLM
    task: Task
    train: list[Example]
    dev: list[Example]
    evaluator: Evaluator
    budget: Budget
    seed: int
    report: Callable[[dict[str, Any]], None] = lambda info: None
    warn: Callable[[str], None] = lambda message: print(f"warning: {message}", file=sys.stderr)
    step_index: int = 0
    calibration: str = "none"
    objective: Objective = "margin"

    def calibrate(self, prompts: Sequence[AnyPrompt], inputs: Sequence[Example] | None = None) -> list[AnyPrompt]:
        """The prompts with this search's calibration estimated and attached (charged to the budget).

        ``prior`` estimates the class prior on ``inputs`` (default: all train inputs; labels unused).
        """
        return self.evaluator.calibrate(prompts, self.calibration, inputs if inputs is not None else self.train)

    def objective_scores(self, prompts: Sequence[AnyPrompt], examples: Sequence[Example]) -> list[float]:
        """The selection objective of each prompt on ``examples``, scored as one batched job."""
        return [objective_score(r, self.objective) for r in self.evaluator.score_many(prompts, examples)]

    def rng(self, step: int | None = None) -> random.Random:
        """A generator seeded by (seed, step): the same draws after a resume."""
        step = self.step_index if step is None else step
        return random.Random(f"{self.seed}:{step}")

    def sample(self, examples: Sequence[Example], k: int, salt: str = "", fixed: bool = False) -> list[Example]:
        """``k`` examples drawn without replacement (all of them if ``k`` >= their number).

        A new draw each step, or with ``fixed`` the same draw in every step of the run.
        """
        if k >= len(examples):
            return list(examples)
        step = "fixed" if fixed else self.step_index
        return random.Random(f"{self.seed}:{step}:{salt}").sample(list(examples), k)


# ---- run specification, artifacts, loop ---------------------------------------------------------

@dataclass
class SearchSpec:
    """Everything needed to rerun a search (written to ``spec.json``)."""

    task: str
    strategy: str
    params: dict[str, Any] = field(default_factory=dict)
    model: str = "smollm2-135m"
    shots: int | None = None
    data_seed: int = 13
    seed: int = 0
    budget: int | None = None
    max_seconds: float | None = None
    out: str = "runs"
    data_dir: str | None = None
    test_limit: int | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "run spec") -> SearchSpec:
        return cls(**validate(SpecFile, data, source).model_dump())

    @classmethod
    def load(cls, run_dir: Path) -> SearchSpec:
        """The ``spec.json`` of the run folder ``run_dir``."""
        path = run_dir / "spec.json"
        if not path.is_file():
            raise AutopromptError(f"{run_dir} is not a run folder (no spec.json); give the folder of one run")
        try:
            data = read_json(path)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise AutopromptError(f"{path} is not valid JSON ({err}); the run cannot be resumed, start a new one") \
                from None
        return cls.from_json(data, str(path))


def find_run(spec: SearchSpec) -> Path | None:
    """The folder of an earlier run of the same spec under ``spec.out`` (finished first, newest first).

    Parameters are compared after defaults are filled in, so ``{}`` matches the explicit defaults;
    against the parameters the run recorded (every one, defaults included), so a run made before a
    parameter existed, or under another default, is not taken for this one.
    """
    wanted = {**spec.to_json(), "params": json.loads(json.dumps(create(spec.strategy, spec.params).params()))}
    found = []
    for path in Path(spec.out).glob(f"*/{spec.strategy}/*/spec.json"):
        try:
            old = read_json(path)
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            continue
        if all(old.get(k) == v for k, v in wanted.items() if k != "out"):
            found.append(path.parent)
    found.sort(key=lambda d: ((d / "result.json").is_file(), d.name), reverse=True)
    return found[0] if found else None


def finished_result(spec: SearchSpec) -> dict[str, Any] | None:
    """``result.json`` of an earlier finished run of the same spec, if there is one (benchmarks reuse it)."""
    folder = find_run(spec)
    return read_json(folder / "result.json") if folder and (folder / "result.json").is_file() else None


def _run_id(spec: SearchSpec) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    digest = hashlib.sha256(json.dumps(spec.to_json(), sort_keys=True).encode()).hexdigest()[:6]
    return f"{stamp}-s{spec.seed}-{digest}"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


class _Trace:
    """``trace.jsonl``: one line per step; on resume, lines past the checkpoint are dropped."""

    def __init__(self, path: Path, keep: int | None) -> None:
        self.path = path
        if keep is not None and path.exists():
            lines = path.read_text().splitlines()[:keep]
            path.write_text("".join(line + "\n" for line in lines))
        elif keep is None:
            path.write_text("")

    def append(self, row: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(row, default=str) + "\n")


def with_triggers(template: Template, num_triggers: int) -> Template:
    """The template itself if it has ``[T]`` slots, else ``num_triggers`` of them after the last field.

    AutoPrompt's templates put the triggers between the input and the prediction slot
    (``{sentence} [T] [T] [T] [P]``); after the last field keeps any instruction text intact.
    """
    if template.num_triggers:
        return template
    last_field = max(i for i, s in enumerate(template.segments) if s.kind == "field") if template.fields else 0
    triggers = [Segment("trigger", space=" ")] * num_triggers
    segments = list(template.segments)
    return Template.from_segments(segments[: last_field + 1] + triggers + segments[last_field + 1 :])


def starting_prompt(ctx: SearchContext, template: str | None = None, verbalizer: str | None = None,
                    num_triggers: int = 0, init: str = "the") -> Prompt:
    """The prompt a strategy starts from: the task's manual prompt, with overrides.

    Args:
        ctx: the search context.
        template: a template instead of the task's manual one.
        verbalizer: label words as JSON, or the path of a ``prompt.json`` whose verbalizer to
            use (so a verbalizer search can feed a trigger search).
        num_triggers: add this many ``[T]`` after the last field if the template has none.
        init: the initial trigger word (repeated), or one word per trigger.
    """
    manual = ctx.task.default_prompt
    tpl = Template(template) if template else manual.template
    tpl.check_fields(ctx.task.fields)
    if num_triggers:
        tpl = with_triggers(tpl, num_triggers)
    if verbalizer is None:
        verb = manual.verbalizer
    elif Path(verbalizer).suffix == ".json" and Path(verbalizer).is_file():
        verb = Prompt.load(verbalizer).verbalizer
    else:
        verb = Verbalizer.parse(verbalizer)
    ids: tuple[int, ...] = ()
    if tpl.num_triggers:
        words = init.split()
        if len(words) not in (1, tpl.num_triggers):
            raise AutopromptError(f"init {init!r} has {len(words)} words; give one word or one per trigger "
                                  f"({tpl.num_triggers})")
        words = words * tpl.num_triggers if len(words) == 1 else words
        ids = tuple(_one_token(ctx.lm, w) for w in words)
    return Prompt(tpl, verb, ids)


def keep_best(pool: Mapping[str, Mapping[str, Any]], size: int = 20) -> dict[str, Any]:
    """The ``size`` entries of ``pool`` with the highest ``"score"``, best first (a candidate pool in a
    strategy's state: trigger sets or templates, each ``{"score": ..., "prompt": ...}``)."""
    return dict(sorted(pool.items(), key=lambda kv: -kv[1]["score"])[:size])


def _one_token(lm: FrozenLM, word: str) -> int:
    """The token for ``word`` as it stands after a space (its first piece if it has several)."""
    spaced = lm.tokenize(" " + word)
    if len(spaced) == 1:
        return spaced[0]
    bare = lm.tokenize(word)
    return bare[0] if len(bare) == 1 else spaced[0]


def _pack(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """``obj`` with every tensor replaced by ``{"__tensor__": key}`` (the tensors go to ``tensors``)."""
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {k: _pack(v, tensors) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_pack(v, tensors) for v in obj]
    return obj


def _unpack(obj: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        return {k: _unpack(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unpack(v, tensors) for v in obj]
    return obj


def _write_checkpoint(run_dir: Path, step: int, state: dict[str, Any], extra: dict[str, Any]) -> None:
    """``checkpoint.json`` (and the state's tensors in ``checkpoint-<step>.safetensors``).

    The tensor file is written first and named by step, so the JSON always names a complete
    file; older tensor files are removed only after the new JSON is in place.
    """
    from safetensors.torch import save_file  # noqa: PLC0415

    tensors: dict[str, torch.Tensor] = {}
    packed = _pack(state, tensors)
    name = None
    if tensors:
        name = f"checkpoint-{step}.safetensors"
        tmp = run_dir / f".{name}.tmp"
        save_file(tensors, str(tmp))
        tmp.replace(run_dir / name)
    atomic_write_json(run_dir / "checkpoint.json", {"step": step, "state": packed, "tensors": name, **extra})
    for old in run_dir.glob("checkpoint-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)


def _read_checkpoint(path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError  # noqa: PLC0415
    from safetensors.torch import load_file  # noqa: PLC0415

    fix = "; the checkpoint is corrupt: start a new run instead of resuming this one"
    try:
        ckpt = validate(CheckpointFile, read_json(path), f"checkpoint {path}", fix).model_dump()
        tensors = load_file(str(path.parent / ckpt["tensors"])) if ckpt.get("tensors") else {}
        ckpt["state"] = _unpack(ckpt["state"], tensors)
        return ckpt
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, OSError, SafetensorError) as err:
        raise AutopromptError(f"checkpoint {path} is corrupt ({type(err).__name__}){fix}") from None


def limit_test(data: TaskData, k: int) -> TaskData:
    """The same splits with a seeded random ``k`` of the test examples (recorded in the protocol).

    For quick benchmark suites on a CPU; such runs form their own leaderboard rows.
    """
    if k < 1:
        raise AutopromptError(f"test_limit {k} leaves nothing to score; give a positive number")

    def test() -> list[Example]:
        full = data.test
        return full if k >= len(full) else random.Random(0).sample(full, k)

    return TaskData(data.task, {**data.protocol, "test_limit": k}, {**data.loaders, "test": test})


def run_search(
    spec: SearchSpec,
    *,
    lm: FrozenLM | None = None,
    data: TaskData | None = None,
    resume: str | Path | None = None,
    progress: bool = False,
    stop_after: int | None = None,
    db: str | Path | None = None,
    on_step: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) a search, write its artifacts and record it in the leaderboard.

    Returns ``result.json``'s content.

    Args:
        spec: what to run.
        lm: an already loaded backend (default: load ``spec.model``).
        data: already loaded splits (default: load ``spec.task``).
        resume: a run folder to continue from its last checkpoint.
        progress: show a progress bar.
        stop_after: stop after this many steps of this call (for tests of interruption).
        db: the leaderboard (a SQLAlchemy URL or a file; default ``$AUTOPROMPT_DB``, else
            ``leaderboard.db`` in ``spec.out``).
        on_step: called after every checkpointed step with (step, ``{"best_dev", "budget"}``); an
            exception it raises stops the run there, checkpoint intact (a tuner prunes this way).
    """
    from autoprompt.api import versions  # noqa: PLC0415 - api imports this module
    from autoprompt.model_store import load_model  # noqa: PLC0415
    from autoprompt.tasks import load_task  # noqa: PLC0415

    started = time.perf_counter()
    if resume is not None:
        run_dir = Path(resume)
        spec = SearchSpec.load(run_dir)
        if (run_dir / "result.json").is_file():  # finished: make sure it is recorded (no-op if it is)
            result = read_json(run_dir / "result.json")
            _record(result, leaderboard_db(db, spec.out))
            return result
    else:
        check_writable_folder(spec.out, "run folder")
    searcher = create(spec.strategy, spec.params)
    spec.params = searcher.params()
    if spec.max_seconds is not None and not spec.max_seconds > 0:
        raise AutopromptError(f"max_seconds must be a positive number of seconds, got {spec.max_seconds}")
    data = data or load_task(spec.task, spec.data_dir, spec.shots, spec.data_seed)
    if spec.test_limit is not None:
        data = limit_test(data, spec.test_limit)
    limit = spec.budget if spec.budget is not None else searcher.default_budget
    minimum = check_budget(searcher, limit, data)
    lm = lm or load_model(spec.model)
    if resume is None:
        base = Path(spec.out) / _safe(data.task.name) / spec.strategy / _run_id(spec)
        run_dir, n = base, 1
        while True:  # the same spec started twice in one second gets a suffix, never a shared folder
            try:
                run_dir.mkdir(parents=True, exist_ok=False)
                break
            except FileExistsError:
                n += 1
                run_dir = base.with_name(f"{base.name}-{n}")
        atomic_write_json(run_dir / "spec.json", spec.to_json())

    budget = Budget(limit)  # the wall-clock limit starts with the first step: the start is what any run costs
    evaluator = Evaluator(lm, data.task, budget=budget)
    train, dev = data.train, data.dev
    # LAMA ranks hundreds of objects: a class prior over them is not what calibration is for
    calibration = "none" if data.task.metric == "lama" else searcher.calibration
    ctx = SearchContext(lm, data.task, train, dev, evaluator, budget, spec.seed,
                        calibration=calibration, objective=searcher.objective)

    warnings: list[str] = []

    def warn(message: str) -> None:
        warnings.append(message)
        ctx.report({"warnings": [*ctx_info.get("warnings", []), message]})
        tqdm.write(f"warning: {message}", file=sys.stderr)

    ctx_info: dict[str, Any] = {}
    ctx.warn = warn
    backbone_before = weights_checksum(lm.model)
    checkpoint_path = run_dir / "checkpoint.json"
    if resume is not None and checkpoint_path.is_file():
        ckpt = _read_checkpoint(checkpoint_path)
        try:
            state, step = ckpt["state"], ckpt["step"]
            budget.forwards, budget.backwards = ckpt["budget"]["forwards"], ckpt["budget"]["backwards"]
            evaluator.paid.update(tuple(k) for k in ckpt["paid"])
            elapsed = ckpt["elapsed_s"]
        except (KeyError, TypeError) as err:
            raise AutopromptError(f"checkpoint {checkpoint_path} is corrupt ({type(err).__name__}); "
                                  "start a new run instead of --resume") from None
    else:
        ctx.report = ctx_info.update
        try:
            state, step, elapsed = searcher.start(ctx), 0, 0.0
        except BudgetExhausted:
            raise AutopromptError(f"budget {limit} does not pay for {spec.strategy}'s start on {data.task.name} "
                                  f"(estimated minimum {minimum}); give a larger budget") from None
    trace = _Trace(run_dir / "trace.jsonl", keep=step if resume is not None else None)
    budget.max_seconds, budget.started = spec.max_seconds, time.monotonic()

    bar = tqdm(total=budget.max_forwards, desc=f"{spec.strategy} on {data.task.name}", unit="fwd",
               disable=not progress, dynamic_ncols=True, initial=budget.used)
    step_started = time.perf_counter() - elapsed
    done_here = 0
    try:
        while not state.get("done") and not budget.exhausted and (stop_after is None or done_here < stop_after):
            info: dict[str, Any] = {}
            ctx_info = info
            ctx.step_index, ctx.report = step, info.update
            try:
                state = searcher.step(ctx, state)
            except BudgetExhausted:
                break
            step += 1
            done_here += 1
            trace.append({"step": step, **info, "best_dev": state.get("best_dev"), "budget": budget.used,
                          "forwards": budget.forwards, "backwards": budget.backwards,
                          "time_s": round(time.perf_counter() - step_started, 3)})
            _write_checkpoint(run_dir, step, state, {
                "budget": budget.to_json(), "paid": sorted(evaluator.paid),
                "elapsed_s": time.perf_counter() - step_started})
            bar.update(budget.used - bar.n)
            bar.set_postfix(step=step, best_dev=f"{state.get('best_dev', float('nan')):.3f}")
            if on_step is not None:
                on_step(step, {"best_dev": state.get("best_dev"), "budget": budget.used})
    except KeyboardInterrupt:
        raise SearchInterrupted(str(run_dir)) from None
    finally:
        bar.close()
    if stop_after is not None and done_here >= stop_after and not state.get("done") and not budget.exhausted:
        return {"interrupted": True, "run_dir": str(run_dir), "step": step}

    # the core's selection protocol: the top candidates and the manual prompt re-scored on every
    # labelled non-test example the strategy did not fit on, then the gate (outside the budget)
    evaluator.budget = None
    manual = data.task.default_prompt
    fitted = {id(ex) for ex in searcher.fitted(ctx, state)}
    holdout = dev + [ex for ex in train if id(ex) not in fitted]
    candidates = searcher.candidates(ctx, state)[: searcher.final_candidates]
    if searcher.gated:
        selection = choose(evaluator, candidates, manual, holdout, searcher.objective, searcher.min_gain,
                           gate=searcher.gate)
        best, selection_json = selection.chosen, selection.to_json()
    else:
        best, selection_json = candidates[0], {"reliable": None, "message": f"{spec.strategy}: no selection"}
    best = best.with_meta({"strategy": spec.strategy, "task": data.task.name, "model": lm.name,
                           "seed": spec.seed, "params": spec.params})
    save_prompt(best, run_dir / "prompt.json")
    details = searcher.details(ctx, state)
    backbone_after = weights_checksum(lm.model)
    if backbone_after != backbone_before:  # a broken strategy must not report anything
        raise AutopromptError(f"strategy {spec.strategy} changed the backbone's weights; this is a bug in it")
    # core scores the found prompt and the manual baseline on dev and test, outside the budget
    final = Evaluator(lm, data.task, majority_label=data.protocol.get("majority_label"))
    test = data.test
    base_dev, base_test = _baseline(final, manual, dev), _baseline(final, manual, test, progress)
    found_dev, found_test = ((base_dev, base_test) if best.fingerprint == manual.fingerprint
                             else (final.score(best, dev), final.score(best, test, progress=progress)))
    deltas = {"dev": bootstrap_delta(found_dev, base_dev, seed=spec.seed),
              "test": bootstrap_delta(found_test, base_test, seed=spec.seed)}
    gap_se = (deltas["dev"]["se"] ** 2 + deltas["test"]["se"] ** 2) ** 0.5
    if deltas["dev"]["delta"] - deltas["test"]["delta"] > 2 * gap_se > 0:
        warnings.append(f"dev and test disagree: the found prompt gains {deltas['dev']['delta']:+.4f} on dev but "
             f"{deltas['test']['delta']:+.4f} on test, more than 2 standard errors apart; it is fitted to dev")
    if step == 0 and not state.get("done"):
        warnings.append(f"0 search steps: the {'time limit' if budget.exhausted and budget.remaining > 0 else 'budget'}"
                        " ended the search before its first step; the result is the starting prompt, gated")
    trigger_ids = list(best.trigger_ids)
    result = {
        "task": data.task.name, "strategy": spec.strategy, "model": lm.name, "seed": spec.seed,
        "shots": spec.shots, "data_seed": spec.data_seed, "params": spec.params, "metric": data.task.metric,
        "prompt": best.to_json(), "prompt_fingerprint": best.fingerprint,
        "prompt_text": best.template.render({f: "{" + f + "}" for f in data.task.fields}),
        "triggers": [lm.tokenizer.decode([i]) for i in trigger_ids],
        "trigger_text": lm.tokenizer.decode(trigger_ids) if trigger_ids else "",
        "calibration": best.calibration.method,
        "scores": {"dev": found_dev.score, "test": found_test.score},
        "baseline": {"dev": base_dev.score, "test": base_test.score, "template": manual.template.source,
                     "fingerprint": manual.fingerprint},
        "deltas": deltas, "selection": selection_json,
        "budget": budget.to_json(), "steps": step, "details": details, "warnings": warnings,
        "backbone": {"sha256_before": backbone_before, "sha256": backbone_after,
                     "unchanged": backbone_after == backbone_before,
                     "requires_grad": any(p.requires_grad for p in lm.model.parameters())},
        "wall_s": round(time.perf_counter() - started + elapsed, 2),
        "split_sizes": {"train": len(train), "dev": len(dev), "test": len(test), "selection": len(holdout)},
        "protocol": data.protocol, "versions": versions(), "run_dir": str(run_dir),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if found_test.extra:
        result["lama"] = {"found": found_test.extra, "baseline": base_test.extra}
    atomic_write_json(run_dir / "result.json", result)
    if not _record(result, leaderboard_db(db, spec.out)):
        atomic_write_json(run_dir / "result.json", result)
    return result


def _record(result: dict[str, Any], db: str | Path) -> bool:
    """Record a finished run; if the leaderboard cannot take it, say so in ``result`` and return False.

    A finished search is never lost to its database: the run folder is complete and can be
    imported later (``result["leaderboard"]`` names the database and the reason).
    """
    try:
        record(result, db)
    except AutopromptError as err:
        message = f"the run was not recorded in the leaderboard: {err}"
        result["leaderboard"] = {"recorded": False, "db": str(db), "error": str(err)}
        result.setdefault("warnings", []).append(message)
        tqdm.write(f"warning: {message}", file=sys.stderr)
        return False
    return True


def check_budget(searcher: Searcher, limit: int, data: TaskData) -> int:
    """``searcher``'s minimum useful budget on ``data``; raise if ``limit`` is below it."""
    minimum = searcher.minimum_budget(len(data.train), len(data.dev))
    if limit < minimum:
        raise AutopromptError(
            f"budget {limit} is below {searcher.name}'s minimum useful budget on {data.task.name}: {minimum} "
            f"example-forwards (its start and one step on {len(data.train)} train and {len(data.dev)} dev "
            f"examples); give a budget of at least {minimum}")
    return minimum


# The manual baseline scores the same in every run on a split: a process that runs many searches
# (a benchmark suite, a tuning worker) scores it once per model, task and examples.
_baselines: weakref.WeakKeyDictionary[FrozenLM, dict[tuple, EvalResult]] = weakref.WeakKeyDictionary()


def _baseline(final: Evaluator, manual: Prompt, examples: Sequence[Example], progress: bool = False) -> EvalResult:
    task = final.task
    key = (task.name, task.metric, tuple(task.labels), final.majority_label, manual.fingerprint,
           examples_fingerprint(examples))
    known = _baselines.setdefault(final.lm, {})
    if key not in known:
        known[key] = final.score(manual, examples, progress=progress)
    return known[key]


def leaderboard_db(db: str | Path | None, out: str | Path) -> str | Path:
    """Where a run under ``out`` records: ``db``, ``$AUTOPROMPT_DB``, else ``<out>/leaderboard.db``."""
    return db or os.environ.get("AUTOPROMPT_DB") or Path(out) / "leaderboard.db"


def estimate(spec: SearchSpec, lm: FrozenLM | None = None, data: TaskData | None = None) -> dict[str, Any]:
    """What a search would cost: budget, split sizes, and seconds from timing a few forwards."""
    from autoprompt.model_store import load_model  # noqa: PLC0415
    from autoprompt.tasks import load_task  # noqa: PLC0415

    searcher = create(spec.strategy, spec.params)
    data = data or load_task(spec.task, spec.data_dir, spec.shots, spec.data_seed)
    budget = spec.budget if spec.budget is not None else searcher.default_budget
    minimum = check_budget(searcher, budget, data)
    lm = lm or load_model(spec.model)
    sample = data.dev[:16]
    ev = Evaluator(lm, data.task, cache=False)
    ev.score(data.task.default_prompt, sample[:2])  # warm-up
    start = time.perf_counter()
    ev.score(data.task.default_prompt, sample)
    per_forward = (time.perf_counter() - start) / len(sample)
    start_cost, per_step = searcher.costs(len(data.train), len(data.dev))
    return {"task": data.task.name, "strategy": spec.strategy, "params": searcher.params(), "budget": budget,
            "minimum_budget": minimum, "steps": (budget - start_cost) // max(1, per_step),
            "train": len(data.train), "dev": len(data.dev), "seconds_per_forward": round(per_forward, 4),
            "estimated_search_s": round(budget * per_forward, 1),
            "note": "steps: at most, at the minimum's cost per step (steps that accept a change may cost more); "
                    "a backward counts as two forwards; test and baseline scoring come on top"}

