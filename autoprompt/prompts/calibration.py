"""`Calibration`: how a prompt's class distribution is corrected for the model's label bias."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from autoprompt.errors import AutopromptError

CalibrationMethod = Literal["none", "contextual", "prior"]
CALIBRATION_METHODS: tuple[str, ...] = ("none", "contextual", "prior")


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
            if not prior or any(not math.isfinite(v) or v > 1e-6 for v in prior.values()):
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
