"""Prompts as immutable values: `Template`, `Verbalizer` and `Prompt`.

A template is text with slots:

* ``{field}`` — an input field of the task (``{sentence}``, ``{premise}``);
* ``[T]`` — a trigger token, filled by discrete search (AutoPrompt);
* ``[P]`` — the prediction slot, where label words are scored (exactly one);
* ``[S]`` — a soft token, a trainable embedding for continuous prompts.

Whitespace in front of a slot belongs to the slot: in ``"{sentence} It was [P]"`` the label word
is scored as ``" great"``, which is what a BPE model sees in running text. ``{{``, ``}}`` and
``[[`` escape a literal brace or bracket.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import BaseModel

from autoprompt.errors import AutopromptError
from autoprompt.io import atomic_write_json
from autoprompt.schema import EnsembleFile, PromptFile, validate
from autoprompt.soft import SOFT_FILE, SoftPrompt, resolve_soft

SlotKind = Literal["text", "field", "trigger", "predict", "soft"]
CalibrationMethod = Literal["none", "contextual", "prior"]
CALIBRATION_METHODS: tuple[str, ...] = ("none", "contextual", "prior")
_BRACKET_SLOTS: dict[str, SlotKind] = {"[T]": "trigger", "[P]": "predict", "[S]": "soft"}


@dataclass(frozen=True)
class Segment:
    """One piece of a parsed template.

    Attributes:
        kind: ``text``, ``field``, ``trigger``, ``predict`` or ``soft``.
        value: the literal text for ``text``, the field name for ``field``, else ``""``.
        space: whitespace that stood in front of a slot (always ``""`` for ``text``).
    """

    kind: SlotKind
    value: str = ""
    space: str = ""


def _parse(source: str) -> tuple[Segment, ...]:
    """Split template text into segments; errors name the character position."""
    segments: list[Segment] = []
    text: list[str] = []

    def push_slot(kind: SlotKind, value: str = "") -> None:
        literal = "".join(text)
        stripped = literal.rstrip(" \t")
        if stripped:
            segments.append(Segment("text", stripped))
        segments.append(Segment(kind, value, literal[len(stripped):]))
        text.clear()

    i = 0
    while i < len(source):
        ch = source[i]
        if source.startswith(("{{", "}}", "[["), i):
            text.append(ch)
            i += 2
        elif ch == "{":
            end = source.find("}", i)
            if end < 0:
                raise AutopromptError(f"template {source!r}: '{{' at position {i} is never closed")
            name = source[i + 1 : end]
            if not name.isidentifier():
                raise AutopromptError(
                    f"template {source!r}: field name {name!r} at position {i} is not an "
                    "identifier; write fields as {sentence}"
                )
            push_slot("field", name)
            i = end + 1
        elif ch == "[":
            token = source[i : i + 3]
            if token not in _BRACKET_SLOTS:
                raise AutopromptError(
                    f"template {source!r}: unknown slot at position {i} ({source[i:i + 5]!r}); "
                    "slots are {field}, [T], [P], [S] (write [[ for a literal '[')"
                )
            push_slot(_BRACKET_SLOTS[token])
            i += 3
        elif ch == "}":
            raise AutopromptError(
                f"template {source!r}: stray '}}' at position {i}; write }}}} for a literal brace"
            )
        else:
            text.append(ch)
            i += 1
    if text:
        segments.append(Segment("text", "".join(text)))
    n_predict = sum(s.kind == "predict" for s in segments)
    if n_predict != 1:
        raise AutopromptError(
            f"template {source!r} has {n_predict} [P] slots; it needs exactly one prediction slot"
        )
    return tuple(segments)


@dataclass(frozen=True)
class Template:
    """A parsed template such as ``"{sentence} [T] [T] It was [P] ."``.

    Args:
        source: the template text.
    """

    source: str
    segments: tuple[Segment, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "segments", _parse(self.source))

    @property
    def fields(self) -> tuple[str, ...]:
        """Input field names, in order of first appearance."""
        return tuple(dict.fromkeys(s.value for s in self.segments if s.kind == "field"))

    @property
    def num_triggers(self) -> int:
        return sum(s.kind == "trigger" for s in self.segments)

    @property
    def num_soft(self) -> int:
        return sum(s.kind == "soft" for s in self.segments)

    @property
    def predict_is_last(self) -> bool:
        """Whether nothing but whitespace follows ``[P]`` (a causal LM scores it as a suffix)."""
        tail = self.segments[-1]
        if tail.kind == "text" and not tail.value.strip():
            tail = self.segments[-2]
        return tail.kind == "predict"

    def check_fields(self, available: Sequence[str]) -> None:
        """Raise if the template uses a field the task does not have, or none at all."""
        if not self.fields and available:
            raise AutopromptError(
                f"template {self.source!r} has no input field, so every input would get the same prediction; "
                f"add one of {', '.join('{' + f + '}' for f in available)}")
        missing = [f for f in self.fields if f not in available]
        if missing:
            raise AutopromptError(
                f"template {self.source!r} uses unknown field(s) {missing}; this task has "
                f"{list(available)}"
            )

    def render(self, values: Mapping[str, str], trigger: str = "[T]", predict: str = "[P]") -> str:
        """Human-readable text of the template filled with ``values`` (for display only)."""
        out = []
        for seg in self.segments:
            if seg.kind == "text":
                out.append(seg.value)
            elif seg.kind == "field":
                out.append(seg.space + values.get(seg.value, "{" + seg.value + "}"))
            elif seg.kind == "trigger":
                out.append(seg.space + trigger)
            elif seg.kind == "predict":
                out.append(seg.space + predict)
            else:
                out.append(seg.space + "[S]")
        return "".join(out)

    def __str__(self) -> str:
        return self.source

    @classmethod
    def from_segments(cls, segments: Sequence[Segment]) -> Template:
        """The template whose parse is ``segments`` (literal text escaped, slots with their space)."""
        out = []
        for seg in segments:
            if seg.kind == "text":
                out.append(seg.value.replace("{", "{{").replace("}", "}}").replace("[", "[["))
            elif seg.kind == "field":
                out.append(seg.space + "{" + seg.value + "}")
            else:
                out.append(seg.space + {"trigger": "[T]", "predict": "[P]", "soft": "[S]"}[seg.kind])
        return cls("".join(out))


@dataclass(frozen=True)
class Verbalizer:
    """Label → label words. A label may have several words, a word several tokens.

    A class's score is the log of the total probability of its words (log-sum-exp over words).

    Args:
        words: mapping from label name to one word or a list of words.
    """

    words: Mapping[str, tuple[str, ...]]

    def __init__(self, words: Mapping[str, str | Sequence[str]]) -> None:
        normal: dict[str, tuple[str, ...]] = {}
        for label, ws in words.items():
            ws = (ws,) if isinstance(ws, str) else tuple(ws)
            if not ws or any(not isinstance(w, str) or not w.strip() for w in ws):
                raise AutopromptError(
                    f"verbalizer: label {label!r} needs at least one non-empty word, got {list(ws)}"
                )
            normal[str(label)] = ws
        if not normal:
            raise AutopromptError("verbalizer is empty; give label words as {\"label\": [\"word\"]}")
        object.__setattr__(self, "words", normal)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.words)

    def for_labels(self, labels: Sequence[str]) -> list[tuple[str, ...]]:
        """Words per class in the task's label order; raise on a missing or extra label."""
        missing = [lab for lab in labels if lab not in self.words]
        extra = [lab for lab in self.words if lab not in labels]
        if missing or extra:
            raise AutopromptError(
                f"verbalizer labels {list(self.words)} do not match the task's labels "
                f"{list(labels)} (missing {missing}, unknown {extra})"
            )
        return [self.words[lab] for lab in labels]

    def to_json(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self.words.items()}

    @classmethod
    def parse(cls, text: str) -> Verbalizer:
        """Read a verbalizer from JSON text such as ``{"0": ["terrible"], "1": "great"}``."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise AutopromptError(
                f"verbalizer is not valid JSON ({err.msg} at position {err.pos}); "
                'write it as {"label": ["word", ...]}'
            ) from None
        if not isinstance(data, dict):
            raise AutopromptError('verbalizer must be a JSON object {"label": ["word", ...]}')
        return cls(data)

    def __hash__(self) -> int:
        return hash(tuple(self.words.items()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Verbalizer) and dict(self.words) == dict(other.words)


@dataclass(frozen=True)
class Calibration:
    """How a prompt's class distribution is corrected for the model's label bias.

    * ``none`` — the class log-probs as the model gives them;
    * ``contextual`` — Zhao et al. (2021), "Calibrate before use": the class distribution on
      content-free inputs (``""``, ``"N/A"``, and the mask token on a masked LM) filled into the
      template, averaged, is divided out;
    * ``prior`` — the mean class distribution over the task's train inputs (labels unused) is
      divided out.

    Either way the calibrated class distribution is ``softmax(log p(c | x) − log prior(c))``.

    Args:
        method: ``none``, ``contextual`` or ``prior``.
        log_prior: label → log of the class probability divided out, as estimated once and stored
            with the prompt (`Evaluator.calibrate`); None: not estimated yet (``contextual`` is
            then estimated when scored; ``prior`` needs train inputs and cannot be).
    """

    method: CalibrationMethod = "none"
    log_prior: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise AutopromptError(f"unknown calibration {self.method!r}; use one of {', '.join(CALIBRATION_METHODS)}")
        if self.log_prior is not None:
            if self.method == "none":
                raise AutopromptError("calibration 'none' takes no log_prior")
            prior = {str(k): float(v) for k, v in dict(self.log_prior).items()}
            if not prior or any(math.isnan(v) or v > 1e-6 for v in prior.values()):
                raise AutopromptError(f"calibration log_prior must hold one log-probability (<= 0) per label, "
                                      f"got {prior}")
            object.__setattr__(self, "log_prior", prior)

    def __hash__(self) -> int:
        return hash((self.method, None if self.log_prior is None else tuple(sorted(self.log_prior.items()))))

    @property
    def active(self) -> bool:
        return self.method != "none"

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "log_prior": None if self.log_prior is None else dict(self.log_prior)}

    @classmethod
    def from_json(cls, data: str | Mapping[str, Any] | None) -> Calibration:
        """From ``"contextual"`` or ``{"method": ..., "log_prior": {...}}`` (None: no calibration)."""
        if data is None:
            return cls()
        if isinstance(data, str):
            return cls(data)  # type: ignore[arg-type]
        if not isinstance(data, Mapping) or "method" not in data:
            raise AutopromptError(f"calibration must be a method name or {{\"method\": ...}}, got {data!r}")
        return cls(data["method"], data.get("log_prior"))


NO_CALIBRATION = Calibration()


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
    """

    template: Template
    verbalizer: Verbalizer
    trigger_ids: tuple[int, ...] = ()
    soft: str | SoftPrompt | None = None
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False)
    calibration: Calibration = NO_CALIBRATION

    def __post_init__(self) -> None:
        if not isinstance(self.calibration, Calibration):
            object.__setattr__(self, "calibration", Calibration.from_json(self.calibration))
        if isinstance(self.soft, Path):
            object.__setattr__(self, "soft", str(self.soft))
        if isinstance(self.template, str):
            object.__setattr__(self, "template", Template(self.template))
        if not isinstance(self.verbalizer, Verbalizer):
            object.__setattr__(self, "verbalizer", Verbalizer(self.verbalizer))
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

    def with_calibration(self, calibration: Calibration | str) -> Prompt:
        # a method name is turned into a `Calibration` by `__post_init__`
        return dataclasses.replace(self, calibration=cast(Calibration, calibration))

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
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "prompt JSON") -> Prompt:
        """The prompt ``to_json`` wrote; one-line errors name ``source`` and the bad field."""
        checked = validate(PromptFile, data, source)
        calibration = checked.calibration
        return cls(
            Template(checked.template),
            Verbalizer(checked.verbalizer),
            tuple(checked.trigger_ids),
            checked.soft,
            dict(checked.meta),
            Calibration.from_json(calibration.model_dump() if isinstance(calibration, BaseModel) else calibration),
        )

    @classmethod
    def load(cls, path: str | Path) -> Prompt:
        """Read a ``prompt.json`` artifact."""
        return cls._from_file(_read_json(Path(path)), Path(path))

    @classmethod
    def _from_file(cls, data: Mapping[str, Any], path: Path) -> Prompt:
        prompt = cls.from_json(data, f"prompt file {path}")
        assert not isinstance(prompt.soft, SoftPrompt)  # from_json reads a path (or None), never tensors
        if prompt.soft and not Path(prompt.soft).is_absolute():
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
        blob = json.dumps(key, sort_keys=True, ensure_ascii=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


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
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise AutopromptError(f"prompt file {path} does not exist") from None
    except json.JSONDecodeError as err:
        raise AutopromptError(f"prompt file {path} is not valid JSON ({err.msg})") from None
    if not isinstance(data, dict):
        raise AutopromptError(f"prompt file {path} does not hold a JSON object")
    return data


def save_prompt(prompt: AnyPrompt, path: str | Path) -> None:
    """Write ``prompt.json`` (and the soft-prompt tensors beside it), each file atomically.

    The tensors are written first, so a ``prompt.json`` never names a file that is not there.
    """
    path = Path(path)
    members = prompt.members if isinstance(prompt, Ensemble) else (prompt,)
    saved = []
    for i, member in enumerate(members):
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
