"""`Template`: prompt text with slots, parsed once into `Segment`s.

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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from autoprompt.errors import AutopromptError

SlotKind = Literal["text", "field", "trigger", "predict", "soft"]
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
