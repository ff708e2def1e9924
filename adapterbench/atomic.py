"""Files and folders written whole or not at all: built beside their final place, renamed into it on success,
removed on any error or interruption, so a killed process never leaves half a report, cache, checkpoint or adapter.
What a kill -9 leaves (it skips every cleanup) carries its writer's process id, and the next writer removes it."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path

# .NAME.PID.RANDOM: mkdtemp's 8 characters for a folder, 8 hex digits and .tmp for a file (temp_path)
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.(?:[a-z0-9_]{8}|[0-9a-f]{8}\.tmp)$")


def temp_path(target: Path) -> Path:
    """Where a file bound for `target` is written first (what dead writers left for it is removed now)."""
    remove_stale(target.parent, target.name)
    return target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


@contextmanager
def atomic_file(target: str | Path, newline: str | None = None, binary: bool = False):
    """Yield a UTF-8 text file (a binary one with `binary`) open beside `target`; when the block ends without error
    it replaces `target`, so readers see the old file or the whole new one, never half of it."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(target)
    try:
        with open(tmp, "wb") if binary else open(tmp, "w", encoding="utf-8", newline=newline) as f:
            yield f
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(target: str | Path, text: str, newline: str | None = None) -> Path:
    """`text` written to `target` through atomic_file; returns `target` as a Path."""
    with atomic_file(target, newline=newline) as f:
        f.write(text)
    return Path(target)


def write_files(folder: str | Path, files: dict[str, str]) -> None:
    """Write every {name: text} into `folder` or none of them: each goes to a temporary file beside its target
    first, and only when all are written are they renamed into place. On an error the temporaries go, and so does
    `folder` if this call created it and it is still empty."""
    folder = Path(folder)
    created, temps = not folder.exists(), []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            tmp = temp_path(folder / name)
            temps.append((tmp, folder / name))
            with open(tmp, "w", encoding="utf-8", newline="\n") as f:
                f.write(text)
        for tmp, target in temps:
            os.replace(tmp, target)
    except BaseException:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
        if created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise


@contextmanager
def atomic_dir(target: str | Path):
    """Yield an empty temporary folder beside `target`; when the block ends without error it replaces `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target.parent, target.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", dir=target.parent))
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp makes it private; what it becomes is an ordinary folder
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def scratch_dir(name: str):
    """A private temporary folder, removed afterwards; named like the others, so the next run removes it when this
    process is killed."""
    parent = Path(tempfile.gettempdir())
    remove_stale(parent, name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.{os.getpid()}.", dir=parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale(folder: str | Path, name: str | None = None) -> None:
    """Remove the temporaries in `folder` (of `name`, or of any name) whose writer is no longer running on this
    machine. A live writer's are kept: two processes may write the same target at once (the last rename wins)."""
    try:
        entries = list(Path(folder).iterdir())
    except OSError:  # no folder yet, or not ours to read
        return
    for entry in entries:
        match = _TEMP.match(entry.name)
        if match is None or (name is not None and match["name"] != name) or _running(int(match["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            try:
                entry.unlink(missing_ok=True)
            except OSError:  # not ours to remove: harmless where it is
                pass


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: asks whether the process exists, sends nothing
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process, or not a process id (so not our file)
        return True
    return True
