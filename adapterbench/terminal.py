"""Plain-text tables for the terminal: columns padded to their widest cell, a rule under the header."""

from __future__ import annotations

from typing import Collection, Sequence


def align(rows: Sequence[Sequence[object]], right: Collection[int] = ()) -> list[str]:
    """Each row as one line, cells two spaces apart, columns in `right` right-aligned, trailing space cut."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
            .rstrip() for row in rows]


def table(rows: Sequence[Sequence[object]], right: Collection[int] = ()) -> list[str]:
    """align(rows), with a rule of dashes under the first row (the header)."""
    lines = align(rows, right)
    return [lines[0], "-" * max(len(line) for line in lines), *lines[1:]]
