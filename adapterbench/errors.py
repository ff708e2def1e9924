"""The one exception for bad user input: it names file, line and field, and the CLI prints it as one line (exit 2)."""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """Input the user can fix. `str()` reads `FILE:LINE: field 'F': what was expected`."""

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None,
                 field: str | None = None):
        self.message, self.path, self.line, self.field = message, path, line, field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = f"{self.path}:{self.line}: " if self.line is not None else f"{self.path}: "
        elif self.line is not None:
            where = f"line {self.line}: "
        field = f"field '{self.field}': " if self.field else ""
        return f"{where}{field}{self.message}"
