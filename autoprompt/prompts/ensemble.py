"""`Ensemble` (LPAQA's weighted prompts), `AnyPrompt` (a prompt or an ensemble) and ``prompt.json`` files."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoprompt.errors import AutopromptError
from autoprompt.io import atomic_write_json, read_user_json
from autoprompt.prompts.calibration import Calibration
from autoprompt.prompts.prompt import Prompt
from autoprompt.prompts.soft import SOFT_FILE, SoftPrompt
from autoprompt.prompts.template import Template
from autoprompt.prompts.verbalizer import Verbalizer
from autoprompt.schema import EnsembleFile, validate


@dataclass(frozen=True)
class Ensemble:
    """Weighted prompts scored as one: the class log-probs are the weighted mean of the members'.

    This is LPAQA's ensemble (Jiang et al., 2020): ``topk`` gives equal weights, ``optimized``
    learns them. The weights are normalised to sum to one.

    Args:
        members: the prompts (they must share the task's labels).
        weights: one non-negative weight per member.
        meta: provenance, not part of the fingerprint.
    """

    members: tuple[Prompt, ...]
    weights: tuple[float, ...]
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        members, weights = tuple(self.members), tuple(float(w) for w in self.weights)
        if not members or len(members) != len(weights):
            raise AutopromptError(f"an ensemble needs one weight per member; got {len(members)} members "
                                  f"and {len(weights)} weights")
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise AutopromptError(f"ensemble weights must be non-negative with a positive sum, got {list(weights)}")
        total = sum(weights)
        object.__setattr__(self, "members", members)
        object.__setattr__(self, "weights", tuple(w / total for w in weights))

    @property
    def template(self) -> Template:
        """The heaviest member's template (for display)."""
        return self.members[max(range(len(self.weights)), key=self.weights.__getitem__)].template

    @property
    def verbalizer(self) -> Verbalizer:
        return self.members[0].verbalizer

    @property
    def trigger_ids(self) -> tuple[int, ...]:
        return ()

    @property
    def soft(self) -> None:
        return None

    def to_json(self) -> dict[str, Any]:
        return {"ensemble": [m.to_json() for m in self.members], "weights": list(self.weights),
                "meta": dict(self.meta)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "ensemble JSON") -> Ensemble:
        checked = validate(EnsembleFile, data, source)
        members = tuple(Prompt.from_json(m, f"{source}, member {i}") for i, m in enumerate(data["ensemble"]))
        return cls(members, tuple(float(w) for w in checked.weights), dict(checked.meta))

    @property
    def fingerprint(self) -> str:
        key = [[m.fingerprint for m in self.members], [round(w, 12) for w in self.weights]]
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]

    def with_meta(self, meta: Mapping[str, Any]) -> Ensemble:
        return Ensemble(self.members, self.weights, {**self.meta, **meta})

    @property
    def calibration(self) -> Calibration:
        """The members' calibration (the first member's; `Evaluator.calibrate` sets all alike)."""
        return self.members[0].calibration


AnyPrompt = Prompt | Ensemble



def prompt_from_json(data: Mapping[str, Any], source: str = "prompt JSON") -> AnyPrompt:
    """A `Prompt` or an `Ensemble`, whichever the JSON holds."""
    return Ensemble.from_json(data, source) if "ensemble" in data else Prompt.from_json(data, source)


def _read_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = read_user_json(path, "prompt file")
    return data


def save_prompt(prompt: AnyPrompt, path: str | Path) -> None:
    """Write ``prompt.json`` (and the soft-prompt tensors beside it), each file atomically.

    The tensors are written first, so a ``prompt.json`` never names a file that is not there.
    """
    path = Path(path)
    members = prompt.members if isinstance(prompt, Ensemble) else (prompt,)
    saved = []
    for i, member in enumerate(members):
        if isinstance(member.soft, str) and Path(member.soft).resolve().parent != path.parent.resolve():
            # tensors saved elsewhere (a pipeline stage's folder): copied beside this prompt.json, which names
            # them relatively, so the folder is whole on its own and loads wherever it is moved
            member = member.with_soft(SoftPrompt.load(member.soft))
        if isinstance(member.soft, SoftPrompt):
            name = SOFT_FILE if len(members) == 1 else f"soft-{i}.safetensors"
            member.soft.save(path.parent / name)
            member = member.with_soft(name)
        saved.append(member)
    data = (Ensemble(tuple(saved), prompt.weights, prompt.meta) if isinstance(prompt, Ensemble) else saved[0]).to_json()
    atomic_write_json(path, data)


def load_prompt(path: str | Path) -> AnyPrompt:
    """Read a ``prompt.json`` artifact: a single prompt or an ensemble."""
    data = _read_json(Path(path))
    if "ensemble" not in data:
        return Prompt._from_file(data, Path(path))
    ensemble = Ensemble.from_json(data, f"prompt file {path}")
    members = tuple(Prompt._from_file(m.to_json(), Path(path)) for m in ensemble.members)
    return Ensemble(members, ensemble.weights, ensemble.meta)
