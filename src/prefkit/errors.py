"""One error type for bad user input, printed by the CLI as a single line."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad input: names the file, row and column, and what was expected.

    ``row`` is the 1-based data row (header excluded) as a user would count it
    in a spreadsheet; ``None`` when the problem is not tied to one row.
    """

    def __init__(
        self,
        what: str,
        *,
        file: str | Path | None = None,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        self.what = what
        self.file = str(file) if file is not None else None
        self.row = row
        self.column = column
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = []
        if self.file is not None:
            where.append(self.file)
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column '{self.column}'")
        prefix = ", ".join(where)
        text = f"{prefix}: {self.what}" if prefix else self.what
        return " ".join(text.split())  # always one line


class ConfigError(InputError):
    """A config file or override that does not validate."""
