"""``prompt_tuning`` and ``prefix``: the ``ptuning`` trainer with its mode fixed, under the names users
of Lester et al. and PEFT look for (``ptuning --param mode=...`` keeps working)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from autoprompt import AutopromptError

from .building import Mode
from .strategy import PTuning


@dataclass
class _OneMode(PTuning):
    """``ptuning`` with its ``mode`` fixed by the strategy's name (the field's default)."""

    search_space: ClassVar[dict[str, dict[str, Any]]] = {
        k: v for k, v in PTuning.search_space.items() if k in ("lr", "num_tokens", "init")}

    def __post_init__(self) -> None:
        fixed = next(f.default for f in dataclasses.fields(self) if f.name == "mode")
        if self.mode != fixed:
            raise AutopromptError(f"{self.name} trains mode={fixed}; for mode={self.mode} use the ptuning strategy",
                                  params=("mode",))
        super().__post_init__()


@dataclass
class PromptTuning(_OneMode):
    """Prompt tuning (Lester et al., 2021): ``ptuning`` with ``mode=prompt``, under its own name."""

    name = "prompt_tuning"
    summary = "prompt tuning (Lester et al.): trainable vectors in front of the template, frozen backbone"
    mode: Mode = "prompt"


@dataclass
class PrefixTuning(_OneMode):
    """Prefix tuning / P-tuning v2: ``ptuning`` with ``mode=prefix``, under its own name."""

    name = "prefix"
    summary = "prefix tuning / P-tuning v2: a trainable key/value prefix at every layer, frozen backbone"
    mode: Mode = "prefix"
