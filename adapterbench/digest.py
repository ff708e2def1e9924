"""Content hashes: the sha256 of a text, and of a file computed once per version of the file (path, size, mtime) and
remembered across runs, so a 500 MB base is hashed on first use, not on every evaluation."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

CACHE_FILE = "sha256-cache.json"
CACHE_ENTRIES = 1000  # the newest are kept; a forgotten one is only hashed again
PERSIST_FROM = 1 << 20  # smaller files hash faster than the cache file is read and written

_memo: dict[tuple, str] = {}


def text_sha256(text: str, length: int = 64) -> str:
    """Hex sha256 of `text` as UTF-8, cut to its first `length` digits (16 name an item, 64 a file's content)."""
    return bytes_sha256(text.encode("utf-8"))[:length]


def bytes_sha256(data: bytes) -> str:
    """Hex sha256 of `data` as it is (a file's bytes that must not be decoded)."""
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of the file at `path`. A rewrite that kept both size and mtime (to the nanosecond) would be
    missed; every writer we know of moves the mtime."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key in _memo:
        return _memo[key]
    persist = stat.st_size >= PERSIST_FROM
    cached = _read_cache().get(key[0]) if persist else None
    if cached and cached[:2] == [stat.st_size, stat.st_mtime_ns]:
        _memo[key] = cached[2]
        return cached[2]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    _memo[key] = digest.hexdigest()
    if persist:
        _remember(key, _memo[key])
    return _memo[key]


def _cache_path() -> Path:
    from adapterbench.paths import home

    return home() / CACHE_FILE


def _read_cache() -> dict:
    try:
        entries = json.loads(_cache_path().read_text())
    except (OSError, ValueError):  # none yet, or unreadable: hashing again is always correct
        return {}
    return entries if isinstance(entries, dict) else {}


def _remember(key: tuple, sha: str) -> None:
    """Read, add, write back whole. Two processes racing here may drop one entry: it is hashed again next time."""
    from adapterbench.atomic import atomic_file

    entries = _read_cache()
    entries.pop(key[0], None)
    entries[key[0]] = [key[1], key[2], sha]
    try:
        with atomic_file(_cache_path()) as f:
            json.dump(dict(list(entries.items())[-CACHE_ENTRIES:]), f)
    except OSError:  # a read-only home costs time, not correctness
        pass


def clear_memo() -> None:
    """Forget this process's hashes (tests use it to see the persistent cache at work)."""
    _memo.clear()
