"""Records written as JSONL for users and for lm-eval: one JSON object a line, UTF-8, every file of a call written or
none (a failure is one UserError line naming the file)."""

from __future__ import annotations

import json
from pathlib import Path

from adapterbench import atomic
from adapterbench.errors import UserError


def jsonl_text(records) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def write_files(out_dir: Path, files: dict[str, str]) -> None:
    """atomic.write_files, an OSError told as a UserError."""
    try:
        atomic.write_files(out_dir, files)
    except OSError as e:
        raise UserError(f"cannot write: {e.strerror or e}", path=e.filename or out_dir) from None


def write_jsonl(path, records) -> None:
    """One JSON object per line, UTF-8, written atomically."""
    path = Path(path)
    write_files(path.parent, {path.name: jsonl_text(records)})
