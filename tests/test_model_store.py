"""Offline model packages: GGUF chunks joined and checked, licences kept, aliases listed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from autoprompt.backends.aliases import ALIASES, Package, model_licence
from autoprompt.backends.provision import _assemble_gguf, licence_text
from autoprompt.backends.store import list_models
from autoprompt.errors import AutopromptError

PACKAGE = Package("demo-gguf==1.0", "demo.gguf", with_deps=True, licence_file="TERMS.html")


def chunks(tmp_path: Path, data: bytes, digest: str | None = None) -> list[Path]:
    """The files of a package that ships ``data`` in three chunks (listed out of order) and a checksum."""
    files = []
    for i, start in enumerate((0, 5, 9)):
        part = tmp_path / f"w{i}" / f"demo.gguf.part{i:02d}"
        part.parent.mkdir()
        part.write_bytes(data[start : (5, 9, None)[i]])
        files.append(part)
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{digest or hashlib.sha256(data).hexdigest()}  demo.gguf\n")
    return [files[2], sums, files[0], files[1]]


def test_chunks_are_joined_in_order_and_checked(tmp_path):
    data = b"GGUF-0123456789-end"
    gguf = _assemble_gguf(PACKAGE, chunks(tmp_path, data), tmp_path)
    assert gguf.read_bytes() == data


def test_a_chunk_that_fails_its_checksum_names_the_package(tmp_path):
    with pytest.raises(AutopromptError, match=r"demo.gguf from demo-gguf==1.0 fails its sha256 check.*reinstall"):
        _assemble_gguf(PACKAGE, chunks(tmp_path, b"GGUF-0123456789-end", digest="0" * 64), tmp_path)


def test_a_package_without_the_gguf_says_so(tmp_path):
    with pytest.raises(AutopromptError, match=r"holds no demo\.gguf"):
        _assemble_gguf(PACKAGE, [], tmp_path)


def test_an_html_licence_is_kept_as_its_text_from_its_title():
    page = ("<html><head><style>p {}</style></head><body><nav>Skip to main content</nav>"
            "<h1>Demo Terms of Use</h1><p>By using   it you agree.</p><script>x()</script></body></html>")
    assert licence_text(page, "Demo Terms of Use") == "Demo Terms of Use\nBy using it you agree.\n"


def test_both_offline_models_are_listed_with_their_licences(tmp_path):
    rows = {r["alias"]: r for r in list_models()}
    assert rows["gemma3-270m"]["licence"].startswith("Gemma Terms of Use")
    assert rows["smollm2-135m"]["licence"] == "Apache-2.0"
    assert all(ALIASES[a].package is not None for a in ("gemma3-270m", "smollm2-135m"))
    assert model_licence("my-folder", tmp_path) is None  # a local folder without a record: unknown


def test_default_budgets_are_sized_by_the_models_cost():
    from autoprompt.backends.aliases import default_budget  # noqa: PLC0415
    from autoprompt.search import SearchSpec  # noqa: PLC0415

    assert default_budget(10_000, "smollm2-135m") == 10_000 and default_budget(10_000, "/a/model/folder") == 10_000
    assert default_budget(10_000, "gemma3-270m") == round(10_000 / ALIASES["gemma3-270m"].relative_cost) == 8_000
    assert SearchSpec(task="sst2", strategy="gradient").budget is None  # the default is resolved per model
