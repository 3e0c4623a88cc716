"""The input formats, each named once: what ``prefkit read``, ``data.format`` and training accept.

A format is a name, what its files hold (``pairs``: a pair table, :data:`prefkit.schema.PAIR_COLUMNS`;
``items``: an item table, one text per row) and its reader (:mod:`prefkit.data.readers`,
:mod:`prefkit.data.kaggle`).
Comparison formats return the document table beside the pairs.

    fmt = get_format("votes")                      # InputError naming the known formats
    table = read_pairs("votes.csv", "votes")       # a pair format's table
    result = read_input("c.csv", "comparisons")    # any format: ReadResult(table, documents)

This module imports no readers (nor pandas) until a file is read, so the CLI can list the
names in its help without paying for them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from prefkit.errors import InputError

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class InputFormat:
    name: str
    yields: Literal["pairs", "items"]
    reader: str  # "module.function" in prefkit.data: reader(path, *, on_bad_row, **options)
    description: str
    options: tuple[str, ...] = ()  # keyword options the reader takes beyond ``on_bad_row``

    def read(self, path: str | Path, *, on_bad_row: str = "error", **options) -> ReadResult:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise InputError(f"format {self.name!r} takes no option {unknown[0]!r}", file=str(path))
        module, function = self.reader.rsplit(".", 1)
        reader = getattr(importlib.import_module(f"prefkit.data.{module}"), function)
        out = reader(path, on_bad_row=on_bad_row, **options)
        return ReadResult(*out) if isinstance(out, tuple) else ReadResult(out)


class ReadResult(NamedTuple):
    table: pd.DataFrame
    documents: pd.DataFrame | None = None  # comparisons of documents: the document table


FORMATS: dict[str, InputFormat] = {
    f.name: f
    for f in (
        InputFormat("kaggle", "pairs", "kaggle.read_kaggle", "LMSYS arena CSV (or a folder in the Kaggle layout: its train file)"),
        InputFormat("jsonl", "pairs", "readers.read_pairwise_jsonl", "pairwise JSON lines: prompt, response_a, response_b, label"),
        InputFormat("rm_gallery", "pairs", "readers.read_rm_gallery", "RM-Gallery chat-style preference records (Parquet or JSON lines)"),
        InputFormat("alpaca_eval", "pairs", "readers.read_alpaca_eval", "AlpacaEval annotations (JSON)"),
        InputFormat("votes", "pairs", "readers.read_votes", "one row per vote; aggregated to vote shares per pair", ("aggregate",)),
        InputFormat(
            "comparisons", "pairs", "readers.read_comparisons", "crowd comparisons of documents (+ the document table)", ("docs_path",)
        ),
        InputFormat(
            "preference", "pairs", "preference.read_preference", "prompt/chosen/rejected (TRL, UltraFeedback, HH-RLHF)", ("seed",)
        ),
        InputFormat(
            "pairs", "pairs", "preference.read_column_pairs", "any pair table through --columns and --labels", ("columns", "labels")
        ),
        InputFormat("parquet", "pairs", "readers.read_pairs_parquet", "a pair table as `prefkit read --out x.parquet` writes it"),
        InputFormat("fb3_ell", "items", "readers.read_fb3_ell", "Feedback Prize ELL essays with six analytic scores"),
        InputFormat("commonlit", "items", "readers.read_commonlit", "CommonLit excerpts with a readability target"),
    )
}
PAIR_FORMATS = tuple(name for name, f in FORMATS.items() if f.yields == "pairs")
ITEM_FORMATS = tuple(name for name, f in FORMATS.items() if f.yields == "items")


def get_format(name: str, yields: str | None = None) -> InputFormat:
    """The format called ``name``; with ``yields``, it must give that kind of table."""
    known = PAIR_FORMATS if yields == "pairs" else ITEM_FORMATS if yields == "items" else tuple(FORMATS)
    if name not in known:
        kind = f" {yields[:-1]}" if yields else ""
        raise InputError(f"unknown data format {name!r}; known{kind} formats: {', '.join(known)}")
    return FORMATS[name]


def read_input(path: str | Path, format: str, *, on_bad_row: str = "error", **options) -> ReadResult:
    """Read ``path`` in any format."""
    return get_format(format).read(path, on_bad_row=on_bad_row, **options)


def read_pairs(path: str | Path, format: str = "kaggle", *, on_bad_row: str = "error", **options: Any) -> pd.DataFrame:
    """The pair table of ``path`` in a pair format (e.g. ``aggregate=False`` for votes)."""
    return get_format(format, "pairs").read(path, on_bad_row=on_bad_row, **options).table
