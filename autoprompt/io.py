"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from autoprompt.errors import AutopromptError

_UMASK = os.umask(0)  # the process umask (it can only be read by setting it, so set it back)
os.umask(_UMASK)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; a written artifact gets the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def check_writable_folder(path: str | Path, what: str = "output folder") -> None:
    """Raise a one-line `AutopromptError` unless ``path`` is (or can be made) a folder we can write.

    Checked before any work, creating nothing: the nearest existing ancestor must be a folder in
    which a file can be created (a probe file is made and removed at once).
    """
    path = Path(path)
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise AutopromptError(f"{what} {path}: {probe} is a file, not a folder; choose another path")
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".autoprompt-write-check-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise AutopromptError(f"cannot write {what} {path} ({err.strerror or err}); choose a writable folder") \
            from None


def check_writable_file(path: str | Path, what: str = "output file") -> None:
    """Like `check_writable_folder` for a file to be written at ``path`` (which must not be a folder)."""
    path = Path(path)
    if path.is_dir():
        raise AutopromptError(f"{what} {path} is a folder; give a file name")
    check_writable_folder(path.parent, f"the folder of {what} {path}")
