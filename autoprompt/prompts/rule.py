"""`Rule`: how a prompt's class scores are read from the model (the decision rule).

* ``direct`` — the log-probability of each class's label words at ``[P]`` (every prompt until now);
* ``channel`` — Min et al. (ACL 2022), noisy-channel prompting: the template is rendered with the
  label word first and the input after it (``"It was great. <sentence>"``), and a class scores the
  log-likelihood of the input given its label's prefix; causal LMs only;
* ``centroid`` — Cho et al. (NAACL 2025), "Hidden Calibration": the class whose centroid of the
  model's last hidden state at ``[P]`` (over labelled train examples) is nearest.

Each rule's class scores become a class distribution (a softmax over classes), so calibration, the
margin objective and the gate work on every rule alike. The fitted parts of a rule (the centroids and
their scale) are stored with the prompt, like a calibration prior, so scoring a saved prompt needs no
data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from autoprompt.errors import AutopromptError

RuleName = Literal["direct", "channel", "centroid"]
RULES: tuple[str, ...] = ("direct", "channel", "centroid")
Distance = Literal["cosine", "euclidean"]


@dataclass(frozen=True)
class Rule:
    """A decision rule and its options (see the module docstring).

    Args:
        name: ``direct``, ``channel`` or ``centroid``.
        length_norm: ``channel``: divide the input's log-likelihood by its token count (the same count
            for every class of one input, so it changes the scale of the class scores, not their order).
        distance: ``centroid``: ``cosine`` (1 − cosine similarity) or ``euclidean``.
        normalise: ``centroid``: scale each hidden state to unit length before anything else.
        standardise: ``centroid``: then centre each dimension on the fitted examples' mean and divide it by
            its pooled within-class standard deviation (a diagonal Mahalanobis distance: a few
            dimensions of a language model's hidden state are orders of magnitude larger than the rest
            and would otherwise decide every distance).
        centroids: ``centroid``: label → the class centroid in that space (fitted on train,
            `Evaluator.fit_rule`); None until fitted.
        scale: the temperature of the softmax over classes, fitted on labelled train examples (maximum
            likelihood; Guo et al.'s temperature scaling): ``channel`` divides the inputs' log-likelihoods by
            it (None: 1), ``centroid`` scores ``−distance / scale`` (fitted on leave-one-out distances). It
            puts every rule's class log-probs on a comparable scale for the margin objective and the gate.
        center: ``centroid`` with ``standardise``: the per-dimension mean subtracted (fitted).
        spread: ``centroid`` with ``standardise``: the per-dimension standard deviation divided by (fitted).
    """

    name: RuleName = "direct"
    length_norm: bool = False
    distance: Distance = "euclidean"
    normalise: bool = True
    standardise: bool = True
    centroids: Mapping[str, tuple[float, ...]] | None = None
    scale: float | None = None
    center: tuple[float, ...] | None = None
    spread: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.name not in RULES:
            raise AutopromptError(f"unknown decision rule {self.name!r}; use one of {', '.join(RULES)}")
        if self.distance not in ("cosine", "euclidean"):
            raise AutopromptError(f"unknown centroid distance {self.distance!r}; use cosine or euclidean")
        if self.name != "centroid" and any(f is not None for f in (self.centroids, self.center, self.spread)):
            raise AutopromptError(f"rule {self.name!r} takes no centroids; only rule 'centroid' stores them")
        if self.name == "direct" and self.scale is not None:
            raise AutopromptError("rule 'direct' takes no scale: the label words' log-probs are read as they are")
        if self.name == "channel" and self.scale is not None:
            if not math.isfinite(self.scale) or self.scale <= 0:
                raise AutopromptError(f"rule 'channel' needs a positive finite scale, got {self.scale}; fit it again")
            object.__setattr__(self, "scale", float(self.scale))
        if self.centroids is not None:
            cents = {str(k): tuple(float(x) for x in v) for k, v in dict(self.centroids).items()}
            widths = {len(v) for v in cents.values()}
            if not cents or len(widths) != 1 or 0 in widths or \
                    any(not math.isfinite(x) for v in cents.values() for x in v):
                raise AutopromptError("rule 'centroid' needs one finite centroid of the same width per label; "
                                      "fit it again (Evaluator.fit_rule)")
            if self.scale is None or not math.isfinite(self.scale) or self.scale <= 0:
                raise AutopromptError(f"rule 'centroid' needs a positive finite scale, got {self.scale}; fit it again")
            object.__setattr__(self, "centroids", cents)
            object.__setattr__(self, "scale", float(self.scale))
            width = widths.pop()
            if self.standardise:
                for name in ("center", "spread"):
                    values = getattr(self, name)
                    values = None if values is None else tuple(float(x) for x in values)
                    if values is None or len(values) != width or any(not math.isfinite(x) for x in values) or \
                            (name == "spread" and any(x <= 0 for x in values)):
                        raise AutopromptError(f"rule 'centroid' with standardise needs {width} finite {name} values "
                                              "(spreads positive); fit it again (Evaluator.fit_rule)")
                    object.__setattr__(self, name, values)
            elif self.center is not None or self.spread is not None:
                raise AutopromptError("rule 'centroid' without standardise takes no center or spread")
        elif self.center is not None or self.spread is not None:
            raise AutopromptError("rule 'centroid': center and spread are fitted with the centroids; fit it again")

    def __hash__(self) -> int:
        cents = None if self.centroids is None else tuple(sorted(self.centroids.items()))
        return hash((self.name, self.length_norm, self.distance, self.normalise, self.standardise, cents, self.scale,
                     self.center, self.spread))

    @property
    def direct(self) -> bool:
        return self.name == "direct"

    @property
    def fitted(self) -> bool:
        """Whether the rule holds everything fitted on train: a centroid rule's centroids, a channel rule's
        temperature (a channel rule without one still scores, at temperature 1)."""
        return self.name == "direct" or (self.centroids if self.name == "centroid" else self.scale) is not None

    def unfitted(self) -> Rule:
        """The same rule and options without anything fitted (what a search asks for)."""
        return Rule(self.name, self.length_norm, self.distance, self.normalise, self.standardise)

    def to_json(self) -> dict[str, Any]:
        """The rule's name and the options that apply to it (and a centroid rule's fitted parts)."""
        out: dict[str, Any] = {"name": self.name}
        if self.name == "channel":
            out["length_norm"] = self.length_norm
            if self.scale is not None:
                out["scale"] = self.scale
        elif self.name == "centroid":
            out.update(distance=self.distance, normalise=self.normalise, standardise=self.standardise,
                       scale=self.scale,
                       centroids=None if self.centroids is None else {k: list(v) for k, v in self.centroids.items()})
            if self.standardise:
                out.update(center=None if self.center is None else list(self.center),
                           spread=None if self.spread is None else list(self.spread))
        return out

    @classmethod
    def from_json(cls, data: str | Mapping[str, Any] | None) -> Rule:
        """From ``"channel"`` or ``{"name": ..., options}`` (None: direct)."""
        if data is None:
            return cls()
        if isinstance(data, str):
            return cls(data)  # type: ignore[arg-type]
        if not isinstance(data, Mapping) or "name" not in data:
            raise AutopromptError(f"rule must be a name or {{\"name\": ...}}, got {data!r}")
        unknown = set(data) - {"name", "length_norm", "distance", "normalise", "standardise", "centroids", "scale",
                               "center", "spread"}
        if unknown:
            raise AutopromptError(f"rule: unknown option(s) {sorted(unknown)}")
        return cls(data["name"], bool(data.get("length_norm", False)), data.get("distance", "euclidean"),
                   bool(data.get("normalise", True)), bool(data.get("standardise", True)), data.get("centroids"),
                   data.get("scale"), data.get("center"), data.get("spread"))


DIRECT = Rule()
