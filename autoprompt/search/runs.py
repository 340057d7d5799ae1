"""A run's folder and what it holds: the spec that reruns it, the trace, checkpoints, the result.

    runs/<task>/<strategy>/<stamp>-s<seed>-<digest>/
        spec.json         SearchSpec: everything needed to rerun (and to resume) the search
        trace.jsonl       one line per step
        checkpoint.json   the last step's state (tensors in checkpoint-<step>.safetensors)
        prompt.json       the reported prompt
        result.json       scores, deltas, selection, budget, versions (`run_search`'s return value)

Every file is written atomically: an interrupted run leaves its last complete checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, cast

import torch
from pydantic import ConfigDict, StrictFloat, StrictInt, StrictStr

from autoprompt.errors import AutopromptError
from autoprompt.io import atomic_write_bytes, atomic_write_json, folder_lock, path_part, read_json, read_user_json
from autoprompt.prompts import AnyPrompt, save_prompt
from autoprompt.schema import CheckpointFile, validate
from autoprompt.search.registry import create


@dataclass
class SearchSpec:
    """Everything needed to rerun a search (written to ``spec.json``).

    The field types are also ``spec.json``'s schema: `from_json` validates a file against them
    (strict: ``"13"`` is not a seed), so the file and the class cannot drift apart.
    """

    __pydantic_config__ = ConfigDict(extra="forbid")

    task: StrictStr
    strategy: StrictStr
    params: dict[str, Any] = field(default_factory=dict)
    model: StrictStr = "smollm2-135m"
    shots: StrictInt | None = None
    data_seed: StrictInt = 13
    seed: StrictInt = 0
    budget: StrictInt | None = None
    max_seconds: StrictInt | StrictFloat | None = None
    out: StrictStr = "runs"
    data_dir: StrictStr | None = None
    test_limit: StrictInt | None = None
    start: StrictStr | None = None  # a warm start: the prompt.json the search builds on (None: the manual prompt)
    dtype: StrictStr = "fp32"  # what the search's steps compute in: fp32, bf16, auto (the gate and scores: fp32)
    device_map: StrictStr | None = None  # "auto": the model spread over the devices, then CPU and disk (accelerate)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "run spec") -> SearchSpec:
        return validate(cls, data, source)

    @classmethod
    def load(cls, run_dir: Path) -> SearchSpec:
        """The ``spec.json`` of the run folder ``run_dir``."""
        path = run_dir / "spec.json"
        if not path.is_file():
            raise AutopromptError(f"{run_dir} is not a run folder (no spec.json); give the folder of one run")
        try:
            data = read_user_json(path, "run spec")
        except AutopromptError as err:
            raise AutopromptError(f"{err}; the run cannot be resumed, start a new one") from None
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
    return RunDir(folder).result() if folder else None


class RunDir:
    """The folder of one run; it owns the names and formats of the files in it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, spec: SearchSpec, task_name: str, base: Path | None = None) -> RunDir:
        """A new folder ``<out>/<task>/<strategy>/<id>`` (or ``base``, a pipeline's stage) holding ``spec.json``."""
        base = base or Path(spec.out) / path_part(task_name) / path_part(spec.strategy) / _run_id(spec)
        path = base
        for n in range(2, 1002):  # the same spec started twice in one second gets a suffix, never a shared folder
            try:
                path.mkdir(parents=True, exist_ok=False)
                break
            except FileExistsError:
                if not (path.exists() or path.is_symlink()):  # a parent is a file or a broken link: no suffix helps
                    raise AutopromptError(f"cannot create the run folder {path}: a folder above it is a file or a "
                                          "broken link; choose another output folder") from None
                path = base.with_name(f"{base.name}-{n}")
            except OSError as err:
                raise AutopromptError(f"cannot create the run folder {path} ({err.strerror or err}); choose a "
                                      "writable output folder") from None
        else:
            raise AutopromptError(f"{base} and 1,000 suffixed names are taken; choose another output folder")
        atomic_write_json(path / "spec.json", spec.to_json())
        return cls(path)

    def spec(self) -> SearchSpec:
        return SearchSpec.load(self.path)

    def resumed_spec(self) -> SearchSpec:
        """The spec a resume runs: as started, but recorded where the folder is now (``<out>/<task>/<strategy>/
        <id>``), never where an ``out`` inside the folder's own files says."""
        return dataclasses.replace(self.spec(), out=str(self.path.parent.parent.parent))

    def result(self) -> dict[str, Any] | None:
        """``result.json`` if the run finished."""
        path = self.path / "result.json"
        if not path.exists():
            return None
        try:
            data: dict[str, Any] = read_user_json(path, "result file")
        except AutopromptError as err:
            raise AutopromptError(f"{err}; the run's result is damaged: move the run folder aside and search "
                                  "again") from None
        return data

    def write_result(self, result: dict[str, Any]) -> None:
        atomic_write_json(self.path / "result.json", result)

    def stage_result(self) -> dict[str, Any] | None:
        """``stage.json`` if this folder is a pipeline stage that finished (`autoprompt.search.pipeline`)."""
        path = self.path / "stage.json"
        if not path.exists():
            return None
        data: dict[str, Any] = read_user_json(path, "pipeline stage result")
        return data

    def write_stage_result(self, result: dict[str, Any]) -> None:
        atomic_write_json(self.path / "stage.json", result)

    def write_prompt(self, prompt: AnyPrompt) -> None:
        save_prompt(prompt, self.path / "prompt.json")

    def trace(self, keep: int | None) -> Trace:
        """The step trace, continued after ``keep`` lines on resume (``None``: a new run)."""
        return Trace(self.path / "trace.jsonl", keep)

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.json"

    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.is_file()

    def write_checkpoint(self, step: int, state: Mapping[str, Any], extra: dict[str, Any]) -> None:
        """``checkpoint.json`` (and the tensors of the state and of ``extra`` in ``checkpoint-<step>.safetensors``).

        The tensor file is written first and named by step, so the JSON always names a complete
        file; older tensor files are removed only after the new JSON is in place.
        """
        from safetensors.torch import save_file  # noqa: PLC0415

        tensors: dict[str, torch.Tensor] = {}
        packed = _pack({"state": state, **extra}, tensors)
        name = None
        if tensors:
            name = f"checkpoint-{step}.safetensors"
            tmp = self.path / f".{name}.tmp"
            save_file(tensors, str(tmp))
            tmp.replace(self.path / name)
        atomic_write_json(self.path / "checkpoint.json", {"step": step, **packed, "tensors": name})
        for old in self.path.glob("checkpoint-*.safetensors"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def read_checkpoint(self) -> dict[str, Any]:
        """The last checkpoint, tensors restored; a one-line error if it is corrupt."""
        from safetensors import SafetensorError  # noqa: PLC0415
        from safetensors.torch import load_file  # noqa: PLC0415

        path = self.checkpoint_path
        fix = "; the checkpoint is corrupt: start a new run instead of resuming this one"
        try:
            ckpt = validate(CheckpointFile, read_json(path), f"checkpoint {path}", fix).model_dump()
            tensors = load_file(str(path.parent / ckpt["tensors"])) if ckpt.get("tensors") else {}
            return {k: v if k in ("step", "tensors") else _unpack(v, tensors) for k, v in ckpt.items()}
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, OSError, SafetensorError) as err:
            raise AutopromptError(f"checkpoint {path} is corrupt ({type(err).__name__}){fix}") from None


class Trace:
    """``trace.jsonl``: one line per step; on resume, lines past the checkpoint are dropped."""

    def __init__(self, path: Path, keep: int | None) -> None:
        self.path = path
        if keep is not None and path.exists():
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()[:keep]
            atomic_write_bytes(path, "".join(line + "\n" for line in lines).encode())
        elif keep is None:
            atomic_write_bytes(path, b"")

    def append(self, row: dict[str, Any]) -> None:
        """One line more; a full disk or a read-only folder is one line (the run resumes from its last
        checkpoint, where a half-written line is dropped)."""
        try:
            with self.path.open("a") as f:
                f.write(json.dumps(row, default=str) + "\n")
        except OSError as err:
            raise AutopromptError(f"cannot write {self.path} ({err.strerror or err}); the run can be resumed from "
                                  "its last checkpoint once there is room (`autoprompt search --resume`)") from None


def _run_id(spec: SearchSpec) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    digest = hashlib.sha256(json.dumps(spec.to_json(), sort_keys=True).encode()).hexdigest()[:6]
    return f"{stamp}-s{spec.seed}-{digest}"


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


P = ParamSpec("P")
R = TypeVar("R")


def locked_on_resume(run: Callable[P, R]) -> Callable[P, R]:
    """Run a search or pipeline holding its run folder's lock when it resumes one (not a pipeline's
    stage, which its pipeline holds), so two resumes of one folder never both run."""

    @functools.wraps(run)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        resume = kwargs.get("resume")
        if resume is None or kwargs.get("stage_dir") is not None:
            return run(*args, **kwargs)
        with folder_lock(cast(str | Path, resume)):
            return run(*args, **kwargs)

    return wrapper
