"""`Demonstrations`: labelled examples a prompt shows the model with every query (in-context learning).

Each demonstration is rendered with the prompt's own template, its label's first word filled in
at ``[P]`` (``[T]`` slots keep their trigger tokens; ``[S]`` soft slots belong to the query only).
The demonstrations and the query are joined by ``separator``: on a causal LM the demonstrations come
first (GPT-3), on a masked LM the query with its mask comes first and one filled demonstration
follows per example (LM-BFF).

A fixed list (``examples``) is the same for every query, so a causal LM runs it once per batch and
reuses its key/value cache. A ``pool`` with ``k`` instead chooses, per query, the ``k`` pool
examples nearest to it by the frozen model's sentence embedding (KATE, Liu et al. 2022), at
prediction time: the pool is part of the prompt, so a saved prompt needs no data folder.

Demonstrations are values (the example's fields and its label name), never indices into a split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from autoprompt.errors import AutopromptError

Overflow = Literal["error", "drop"]


@dataclass(frozen=True)
class Demonstration:
    """One labelled example: its input fields and its label's name."""

    fields: Mapping[str, str]
    label: str

    def to_json(self) -> dict[str, Any]:
        return {"fields": dict(self.fields), "label": self.label}


@dataclass(frozen=True)
class Demonstrations:
    """The demonstrations of a prompt.

    Args:
        examples: demonstrations shown with every query, in order (the last one nearest the
            query on a causal LM).
        separator: text between two demonstrations and between them and the query.
        pool: labelled examples to choose from per query (KATE); empty for a fixed list.
        k: how many pool examples each query is shown (nearest last); 0 with a fixed list.
        overflow: an input longer than the model's context: ``error`` (one line naming the
            lengths) or ``drop`` (demonstrations left out, farthest from the query first).
    """

    examples: tuple[Demonstration, ...] = ()
    separator: str = "\n\n"
    pool: tuple[Demonstration, ...] = field(default=(), repr=False)
    k: int = 0
    overflow: Overflow = "error"

    def __post_init__(self) -> None:
        object.__setattr__(self, "examples", tuple(self.examples))
        object.__setattr__(self, "pool", tuple(self.pool))
        if self.overflow not in ("error", "drop"):
            raise AutopromptError(f"demonstrations: overflow must be 'error' or 'drop', got {self.overflow!r}")
        if self.pool and self.examples:
            raise AutopromptError("demonstrations: give a fixed list (`examples`) or a `pool` to choose from, not both")
        if self.pool and not 1 <= self.k <= len(self.pool):
            raise AutopromptError(f"demonstrations: k must be between 1 and the pool size {len(self.pool)}, "
                                  f"got {self.k}")
        if not self.pool and self.k:
            raise AutopromptError("demonstrations: k chooses from a pool; give `pool` or drop `k`")

    @property
    def per_query(self) -> bool:
        """True when each query gets its own demonstrations (chosen from the pool)."""
        return bool(self.pool)

    def check(self, labels: Sequence[str], fields: Sequence[str]) -> None:
        """Raise unless every demonstration has one of ``labels`` and every one of ``fields``."""
        every = self.examples + self.pool
        unknown = sorted({d.label for d in every} - set(labels))
        if unknown:
            raise AutopromptError(f"demonstration label(s) {unknown} are not among the prompt's labels "
                                  f"{list(labels)}; relabel them or use the task's label names")
        lacking = sorted({f for d in every for f in fields if f not in d.fields})
        if lacking:
            raise AutopromptError(f"demonstrations lack the template field(s) {lacking}; give every "
                                  "demonstration the fields the template fills")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"examples": [d.to_json() for d in self.examples], "separator": self.separator}
        if self.pool:
            out.update(pool=[d.to_json() for d in self.pool], k=self.k)
        if self.overflow != "error":
            out["overflow"] = self.overflow
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Demonstrations:
        """What `to_json` wrote (already validated against the prompt file's schema)."""
        def demos(rows: Any) -> tuple[Demonstration, ...]:
            return tuple(Demonstration(dict(r["fields"]), str(r["label"])) for r in rows or ())

        return cls(demos(data.get("examples")), str(data.get("separator", "\n\n")), demos(data.get("pool")),
                   int(data.get("k", 0)), data.get("overflow", "error"))
