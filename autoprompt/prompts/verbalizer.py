"""`Verbalizer`: label → label words."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from autoprompt.errors import AutopromptError


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
        owner: dict[str, str] = {}
        for label, ws in normal.items():
            for w in ws:
                if owner.setdefault(w.strip(), label) != label:  # the two classes could never be told apart
                    raise AutopromptError(f"verbalizer: the word {w.strip()!r} stands for both label "
                                          f"{owner[w.strip()]!r} and label {label!r}; give each class its own words")
        object.__setattr__(self, "words", normal)  # empty: a generation prompt ([P] is generated text)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.words)

    def for_labels(self, labels: Sequence[str]) -> list[tuple[str, ...]]:
        """Words per class in the task's label order; raise on a missing or extra label."""
        missing = [lab for lab in labels if lab not in self.words]
        extra = [lab for lab in self.words if lab not in labels]
        if not self.words and labels:
            raise AutopromptError("verbalizer is empty; give label words as {\"label\": [\"word\"]}")
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
