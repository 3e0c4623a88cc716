"""What a reader did: rows read and kept, bad rows skipped (by reason), oddities noted.

Every reader attaches its report to the table it returns as a plain, JSON-safe dict in
``df.attrs["report"]`` (a dict rather than the dataclass so that ``DataFrame.to_parquet``
can store it); :func:`get_report` turns it back into a :class:`ReadReport`.

The bad-row policy (``on_bad_row``) is the same for every reader:

* ``"error"`` (default): the first bad row raises :class:`~prefkit.errors.InputError`
  naming file, row and column;
* ``"skip"``: bad rows are dropped and counted by reason in ``report.skipped`` (the
  first message per reason is kept in ``report.examples``) and a warning is logged.

Problems with the file as a whole (missing, unreadable, empty, a required column absent)
are errors under either policy. Oddities that are repaired rather than dropped (a plain
text cell where JSON was expected, a ``null`` turn, a lone surrogate) are counted in
``report.notes``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from prefkit.errors import InputError

log = logging.getLogger("prefkit.data")

ON_BAD_ROW = ("error", "skip")

# Drops that happen under either policy and are not bad input (logged at INFO, not WARNING).
EXPECTED_DROPS = frozenset({"exact_duplicate", "preference_null"})

_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass
class ReadReport:
    source: str
    format: str
    rows_read: int = 0  # data rows / records in the file (header excluded)
    rows_kept: int = 0  # rows of the returned table (aggregated votes: pairs)
    skipped: dict[str, int] = field(default_factory=dict)  # dropped rows by reason
    notes: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)  # first message per skip reason

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def note(self, key: str, n: int = 1) -> None:
        self.notes[key] = self.notes.get(key, 0) + n

    def skip(self, reason: str, message: str = "") -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if message and reason not in self.examples:
            self.examples[reason] = message

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "format": self.format,
            "rows_read": int(self.rows_read),
            "rows_kept": int(self.rows_kept),
            "skipped": dict(self.skipped),
            "notes": dict(self.notes),
            "examples": dict(self.examples),
        }

    @classmethod
    def from_dict(cls, d: dict) -> ReadReport:
        return cls(
            source=str(d.get("source", "")),
            format=str(d.get("format", "")),
            rows_read=int(d.get("rows_read", 0)),
            rows_kept=int(d.get("rows_kept", 0)),
            skipped={str(k): int(v) for k, v in dict(d.get("skipped", {})).items()},
            notes={str(k): int(v) for k, v in dict(d.get("notes", {})).items()},
            examples={str(k): str(v) for k, v in dict(d.get("examples", {})).items()},
        )

    def summary(self) -> str:
        text = f"{self.source}: {self.rows_read} rows read -> {self.rows_kept} output rows"
        if self.skipped:
            text += "; dropped " + ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items()))
        if self.notes:
            text += "; notes " + ", ".join(f"{k}={v}" for k, v in sorted(self.notes.items()))
        return text


def get_report(df: pd.DataFrame) -> ReadReport | None:
    """The :class:`ReadReport` a reader attached to ``df`` (None if there is none)."""
    d = df.attrs.get("report")
    return ReadReport.from_dict(d) if isinstance(d, dict) else None


class ReadContext:
    """Per-read state: the file, the policy, the report, and row-level error handling."""

    def __init__(self, path: str | Path, fmt: str, on_bad_row: str = "error") -> None:
        if on_bad_row not in ON_BAD_ROW:
            raise InputError(f"on_bad_row must be one of {list(ON_BAD_ROW)}, got {on_bad_row!r}")
        self.path = Path(path)
        self.file = str(path)
        self.policy = on_bad_row
        self.report = ReadReport(source=self.file, format=fmt)

    def error(self, what: str, row: int | None = None, column: str | None = None) -> InputError:
        return InputError(what, file=self.file, row=row, column=column)

    def bad(self, reason: str, what: str, row: int | None = None, column: str | None = None) -> None:
        """A bad row: raise under ``"error"``, count and carry on under ``"skip"``."""
        err = self.error(what, row=row, column=column)
        if self.policy == "error":
            raise err
        self.report.skip(reason, err.one_line())

    def clean(self, text: str) -> str:
        """Valid Unicode for any string: lone surrogates become U+FFFD (counted); pairs merge."""
        if text.isascii():
            return text
        try:
            text.encode("utf-8")  # fails exactly when a surrogate is present; fast in C
            return text
        except UnicodeEncodeError:
            pass
        fixed = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
        if _SURROGATE.search(fixed) is not None:  # pragma: no cover - defensive
            fixed = _SURROGATE.sub("\ufffd", fixed)
        self.report.note("lone_surrogates_replaced")
        return fixed

    def finish(self, df: pd.DataFrame, rows_read: int, validate=None) -> pd.DataFrame:
        """Refuse an empty result, validate, attach the report, log what was skipped."""
        rep = self.report
        rep.rows_read = int(rows_read)
        rep.rows_kept = int(len(df))
        if len(df) == 0:
            if rep.n_skipped:
                raise self.error(f"no rows left after skipping {rep.n_skipped} bad row(s) ({_fmt(rep.skipped)})")
            raise self.error("no data rows")
        if validate is not None:
            validate(df, source=self.file)
        df.attrs["report"] = rep.to_dict()
        bad = {k: v for k, v in rep.skipped.items() if k not in EXPECTED_DROPS}
        if bad:
            log.warning("%s: skipped %d bad row(s): %s", self.file, sum(bad.values()), _fmt(bad))
        if len(bad) < len(rep.skipped):
            expected = {k: v for k, v in rep.skipped.items() if k in EXPECTED_DROPS}
            log.info("%s: dropped %s", self.file, _fmt(expected))
        return df


def _fmt(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
