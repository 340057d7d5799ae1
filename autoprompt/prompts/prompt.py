"""`Prompt`: template, verbalizer, triggers, soft part, calibration, demonstrations and decision rule; its JSON."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel

from autoprompt.errors import AutopromptError
from autoprompt.io import read_user_json
from autoprompt.prompts.calibration import NO_CALIBRATION, Calibration
from autoprompt.prompts.demos import Demonstrations
from autoprompt.prompts.rule import DIRECT, Rule
from autoprompt.prompts.soft import SOFT_FILE, SoftPrompt, resolve_soft
from autoprompt.prompts.template import Template
from autoprompt.prompts.verbalizer import Verbalizer
from autoprompt.schema import PromptFile, validate


@dataclass(frozen=True)
class Prompt:
    """A complete prompt: template, verbalizer, trigger token ids and optional soft prompt.

    Immutable; `to_json`/`from_json` round-trip; `fingerprint` is stable across processes.

    Args:
        template: the template (or its text).
        verbalizer: the label words (or a mapping).
        trigger_ids: one vocabulary id per ``[T]`` slot, in order.
        soft: the continuous-prompt tensors (`SoftPrompt`), or the path of their safetensors
            file (relative paths are resolved against the prompt file's folder); None for a
            discrete prompt.
        meta: free-form provenance (strategy, model, scores); not part of the fingerprint.
        calibration: how the class distribution is calibrated (`Calibration`, or a method name).
        demos: labelled examples shown with every query (`Demonstrations`); None for zero-shot.
        rule: how class scores are read from the model (`Rule`, or its name): ``direct`` label-word
            probabilities, ``channel`` input likelihood given each label, ``centroid`` hidden-state centroids.
    """

    template: Template
    verbalizer: Verbalizer
    trigger_ids: tuple[int, ...] = ()
    soft: str | SoftPrompt | None = None
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False)
    calibration: Calibration = NO_CALIBRATION
    demos: Demonstrations | None = None
    rule: Rule = DIRECT

    def __post_init__(self) -> None:
        if not isinstance(self.rule, Rule):
            object.__setattr__(self, "rule", Rule.from_json(self.rule))
        if not isinstance(self.calibration, Calibration):
            object.__setattr__(self, "calibration", Calibration.from_json(self.calibration))
        if isinstance(self.soft, Path):
            object.__setattr__(self, "soft", str(self.soft))
        if isinstance(self.template, str):
            object.__setattr__(self, "template", Template(self.template))
        if not isinstance(self.verbalizer, Verbalizer):
            object.__setattr__(self, "verbalizer", Verbalizer(self.verbalizer))
        if self.demos is not None:
            if isinstance(self.demos, Mapping):
                object.__setattr__(self, "demos", Demonstrations.from_json(self.demos))
            self.demos.check(self.verbalizer.labels, self.template.fields)
        ids = tuple(int(i) for i in self.trigger_ids)
        object.__setattr__(self, "trigger_ids", ids)
        if self.template.num_triggers and len(ids) != self.template.num_triggers:
            raise AutopromptError(
                f"template {self.template.source!r} has {self.template.num_triggers} [T] slots "
                f"but {len(ids)} trigger ids were given; give one id per [T]"
            )
        if not self.template.num_triggers and ids:
            raise AutopromptError(
                f"{len(ids)} trigger ids given but template {self.template.source!r} has no [T]"
            )

    def with_triggers(self, trigger_ids: Sequence[int]) -> Prompt:
        return dataclasses.replace(self, trigger_ids=tuple(trigger_ids))

    def with_meta(self, meta: Mapping[str, Any]) -> Prompt:
        """The same prompt with ``meta`` merged into its provenance."""
        return dataclasses.replace(self, meta={**self.meta, **meta})

    def with_soft(self, soft: str | SoftPrompt | None) -> Prompt:
        return dataclasses.replace(self, soft=soft)

    def with_demos(self, demos: Demonstrations | None) -> Prompt:
        return dataclasses.replace(self, demos=demos)

    def with_calibration(self, calibration: Calibration | str) -> Prompt:
        # a method name is turned into a `Calibration` by `__post_init__`
        return dataclasses.replace(self, calibration=cast(Calibration, calibration))

    def with_rule(self, rule: Rule | str) -> Prompt:
        # a name is turned into a `Rule` by `__post_init__`
        return dataclasses.replace(self, rule=cast(Rule, rule))

    @property
    def task_names(self) -> tuple[str, ...]:
        """The member tasks of a task set this prompt has a part of its own for (`SoftPrompt.tasks`)."""
        soft = resolve_soft(self.soft)
        return soft.task_names if soft is not None else ()

    def for_task(self, name: str) -> Prompt:
        """The prompt member task ``name`` scores with (itself unless it has per-task parts)."""
        soft = resolve_soft(self.soft)
        return self if soft is None or not soft.tasks else self.with_soft(soft.for_task(name))

    @property
    def uncalibrated(self) -> Prompt:
        """The same prompt scored without calibration (what the model itself says)."""
        return self if not self.calibration.active else dataclasses.replace(self, calibration=NO_CALIBRATION)

    def to_json(self) -> dict[str, Any]:
        """The prompt as JSON; tensors of an in-memory soft prompt are named ``soft.safetensors``
        (`save_prompt` writes them there). ``calibration`` is present only when it is active, so an
        uncalibrated prompt keeps the JSON (and the fingerprint) it always had."""
        out = {
            "template": self.template.source,
            "verbalizer": self.verbalizer.to_json(),
            "trigger_ids": list(self.trigger_ids),
            "soft": SOFT_FILE if isinstance(self.soft, SoftPrompt) else self.soft,
            "meta": dict(self.meta),
        }
        if self.calibration.active:
            out["calibration"] = self.calibration.to_json()
        if self.demos is not None:  # like calibration: absent from a zero-shot prompt's JSON
            out["demos"] = self.demos.to_json()
        if not self.rule.direct:  # like calibration: a direct prompt keeps its JSON and fingerprint
            out["rule"] = self.rule.to_json()
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "prompt JSON") -> Prompt:
        """The prompt ``to_json`` wrote; one-line errors name ``source`` and the bad field."""
        if isinstance(data, Mapping) and isinstance(data.get("rule"), str):
            data = {**data, "rule": {"name": data["rule"]}}
        checked = validate(PromptFile, data, source)
        try:
            return cls._from_checked(checked)
        except AutopromptError as err:  # a value the classes refuse (a malformed template, an infinite prior)
            raise AutopromptError(f"{source}: {err}") from None

    @classmethod
    def _from_checked(cls, checked: PromptFile) -> Prompt:
        calibration = checked.calibration
        return cls(
            Template(checked.template),
            Verbalizer(checked.verbalizer),
            tuple(checked.trigger_ids),
            checked.soft,
            dict(checked.meta),
            Calibration.from_json(calibration.model_dump() if isinstance(calibration, BaseModel) else calibration),
            Demonstrations.from_json(checked.demos.model_dump()) if checked.demos is not None else None,
            Rule.from_json(checked.rule.model_dump() if checked.rule is not None else None),
        )

    @classmethod
    def load(cls, path: str | Path) -> Prompt:
        """Read a ``prompt.json`` artifact."""
        data: dict[str, Any] = read_user_json(Path(path), "prompt file")
        return cls._from_file(data, Path(path))

    @classmethod
    def _from_file(cls, data: Mapping[str, Any], path: Path) -> Prompt:
        prompt = cls.from_json(data, f"prompt file {path}")
        assert not isinstance(prompt.soft, SoftPrompt)  # from_json reads a path (or None), never tensors
        if prompt.soft:
            # the tensors live beside the prompt: a shared prompt.json must not load a file elsewhere
            target = (path.parent / prompt.soft).resolve()
            if Path(prompt.soft).is_absolute() or not target.is_relative_to(path.parent.resolve()):
                raise AutopromptError(f"prompt file {path}: its soft part {prompt.soft!r} is outside the prompt's "
                                      "folder; keep soft.safetensors beside prompt.json and name it relatively")
            prompt = prompt.with_soft(str(path.parent / prompt.soft))
        return prompt

    @property
    def fingerprint(self) -> str:
        """A short stable hash of everything that changes the prompt's scores (for a soft prompt,
        its tensors' values, wherever they are stored)."""
        key = {k: v for k, v in self.to_json().items() if k != "meta"}
        if self.soft is not None:
            tensors = resolve_soft(self.soft)
            assert tensors is not None  # resolve_soft returns None only for soft=None
            key["soft"] = tensors.digest
        # estimated numbers (a calibration prior, a rule's centroids and temperature) at 6 significant digits:
        # the same estimate made at another batch size differs in the last float bits, not in what it is
        blob = json.dumps(_rounded(key), sort_keys=True, ensure_ascii=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _rounded(value: Any) -> Any:
    """``value`` with every float at 6 significant digits (for fingerprints)."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value
