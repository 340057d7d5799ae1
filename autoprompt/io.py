"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from autoprompt.errors import AutopromptError

#: the least free space an output folder must have before work starts: a search's checkpoints, trace and
#: result, a soft prompt's tensors (a 135M model's deep prefix is about 1 MiB) and a report fit many times over
MIN_FREE_BYTES = 64 * 2**20

_UMASK = os.umask(0)  # the process umask (it can only be read by setting it, so set it back)
os.umask(_UMASK)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise _not_written(path, err) from None
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; a written artifact gets the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):  # a full disk, a folder made read-only: the old file is untouched
            raise _not_written(path, err) from None
        raise


def _not_written(path: Path, err: OSError) -> AutopromptError:
    return AutopromptError(f"cannot write {path} ({err.strerror or err}); nothing was half-written (the file is as "
                           "it was): free space or fix the folder's permissions, then run again (an interrupted "
                           "search continues with `resume`)")


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def read_user_text(path: str | Path, what: str = "file") -> str:
    """The UTF-8 text of a file the user named; every OS and decoding error is one line naming the file."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AutopromptError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise AutopromptError(f"{what} {path} is a folder; give the file itself") from None
    except UnicodeDecodeError as err:
        raise AutopromptError(f"{what} {path} is not UTF-8 text (byte {err.start}); save it as UTF-8") from None
    except OSError as err:
        raise AutopromptError(f"cannot read {what} {path} ({err.strerror or err})") from None


def read_user_json(path: str | Path, what: str = "file", kind: type = dict) -> Any:
    """A JSON value of type ``kind`` (an object by default) from a file the user named: a missing, unreadable,
    non-UTF-8, empty, truncated or mistyped file is one line naming it."""
    text = read_user_text(path, what)
    if not text.strip():
        raise AutopromptError(f"{what} {path} is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise AutopromptError(f"{what} {path} is not valid JSON ({err.msg} at line {err.lineno}); it may be "
                              "truncated") from None
    if not isinstance(data, kind):
        expected = "a JSON object" if kind is dict else f"JSON of type {kind.__name__}"
        raise AutopromptError(f"{what} {path} does not hold {expected} (it holds {type(data).__name__})")
    return data


def excerpt(value: Any, limit: int = 60) -> str:
    """``value`` quoted for an error message: its ``repr`` (control characters and line separators
    escaped, so one line stays one line), cut to ``limit`` characters — never a whole row of a
    data file."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def path_part(name: str, fallback: str = "_") -> str:
    """``name`` (a task, model, strategy or study name from user input) made safe as one path part:
    only letters, digits, ``-``, ``_`` and ``.``, no leading or trailing dots (so never ``..`` nor a
    hidden file), ``fallback`` if nothing is left."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".") or fallback


def check_writable_folder(path: str | Path, what: str = "output folder", need: int = MIN_FREE_BYTES) -> None:
    """Raise a one-line `AutopromptError` unless ``path`` is (or can be made) a folder we can write.

    Checked before any work, creating nothing: the nearest existing ancestor must be a folder in
    which a file can be created (a probe file is made and removed at once) and whose disk has
    ``need`` bytes free (at least `MIN_FREE_BYTES`; a search passes its estimate of what it writes).
    """
    need = max(need, MIN_FREE_BYTES)
    path = Path(path)
    probe = path
    try:
        while not probe.exists() and probe != probe.parent:
            if probe.is_symlink():  # a link to nothing (or into a loop): mkdir would fail on it, or spin
                raise AutopromptError(f"{what} {path}: {probe} is a broken symbolic link; remove it or choose "
                                      "another path")
            probe = probe.parent
    except OSError as err:  # a symlink loop ("too many levels of symbolic links")
        raise AutopromptError(f"{what} {path}: {err.strerror or err}; choose another path") from None
    if not probe.is_dir():
        raise AutopromptError(f"{what} {path}: {probe} is a file, not a folder; choose another path")
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".autoprompt-write-check-")
        os.close(fd)
        os.unlink(tmp)
        free = shutil.disk_usage(probe).free
    except OSError as err:
        raise AutopromptError(f"cannot write {what} {path} ({err.strerror or err}); choose a writable folder") \
            from None
    if free < need:  # an empty probe file fits on a full disk; a checkpoint does not
        raise AutopromptError(f"{what} {path}: only {free // 2**20} MiB free on its disk (a run writes checkpoints, "
                              f"results and reports; at least {-(-need // 2**20)} MiB needed); free space or "
                              "choose another folder")


def check_writable_file(path: str | Path, what: str = "output file") -> None:
    """Like `check_writable_folder` for a file to be written at ``path`` (which must not be a folder)."""
    path = Path(path)
    if path.is_dir():
        raise AutopromptError(f"{what} {path} is a folder; give a file name")
    check_writable_folder(path.parent, f"the folder of {what} {path}")


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str = "run folder") -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` itself (``flock`` on the directory: no file is created) while the
    block runs; a second holder is one line, at once (no waiting, no retry). The lock goes with the process,
    so a killed run leaves none. A folder that is not there is not locked (the caller says what is wrong)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AutopromptError(f"{what} {folder} is in use by another process (a second resume of it?); wait for "
                                  "it to finish") from None
        yield
    finally:
        os.close(fd)
