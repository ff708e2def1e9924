"""Paths: adapterbench's home folder, and the checks run before any work: an input must be a regular file (a FIFO
would block the read forever), and every destination (a file or a folder to write) must be creatable and writable,
so no run fails after minutes of scoring. The checks create nothing."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from adapterbench.errors import UserError


def home() -> Path:
    """Where adapterbench keeps converted models and other caches: $ADAPTERBENCH_HOME or ~/.cache/adapterbench."""
    return Path(os.environ.get("ADAPTERBENCH_HOME") or Path.home() / ".cache" / "adapterbench")


def stat_or_none(path: Path, field: str | None = None):
    """os.stat of `path`, None where nothing is there (or a parent is a file: the parents' check names it)."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:  # a symlink loop (ELOOP), a name too long, no permission to look
        raise UserError(f"cannot use this path: {err.strerror}", path=path, field=field) from None


def input_file(path: str | Path, what: str = "file", field: str | None = None) -> Path:
    """`path` when it is a regular file we may read; a folder, FIFO, socket or device is refused by name."""
    path = Path(path)
    info = stat_or_none(path, field)
    if info is None:
        raise UserError(f"{what} not found", path=path, field=field)
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file (a FIFO, socket or device)"
        raise UserError(f"is {kind}; expected a {what}", path=path, field=field)
    if not os.access(path, os.R_OK):
        raise UserError(f"{what} is not readable (permission denied)", path=path, field=field)
    return path


def _check_parent(path: Path, field: str | None) -> None:
    """The nearest existing folder above `path` must be a folder we may create entries in."""
    for parent in path.absolute().parents:
        info = stat_or_none(parent, field)
        if info is None:
            continue
        if not stat.S_ISDIR(info.st_mode):
            raise UserError(f"cannot be created: {parent} is a file, not a folder", path=path, field=field)
        if not os.access(parent, os.W_OK | os.X_OK):
            raise UserError(f"cannot be created: {parent} is not writable", path=path, field=field)
        return


def output_file(path: str | Path, field: str | None = None) -> Path:
    """A file we will create or replace: not a folder, not a FIFO, in a folder we may write in."""
    path = Path(path)
    info = stat_or_none(path, field)
    if info is not None:
        if stat.S_ISDIR(info.st_mode):
            raise UserError("is a folder (expected a file name to write)", path=path, field=field)
        if not stat.S_ISREG(info.st_mode):
            raise UserError("is not a regular file (a FIFO, socket or device); expected a file name to write",
                            path=path, field=field)
        if not os.access(path, os.W_OK):
            raise UserError("is not writable (permission denied)", path=path, field=field)
    _check_parent(path, field)
    return path


def output_dir(path: str | Path, field: str | None = None) -> Path:
    """A folder we will create or write files into: an existing one must be a writable folder."""
    path = Path(path)
    info = stat_or_none(path, field)
    if info is not None:
        if not stat.S_ISDIR(info.st_mode):
            raise UserError("exists and is not a folder (expected a folder to write into)", path=path, field=field)
        if not os.access(path, os.W_OK | os.X_OK):
            raise UserError("folder is not writable (permission denied)", path=path, field=field)
        return path
    _check_parent(path, field)
    return path
