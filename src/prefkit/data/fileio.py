"""File access for the readers: every way a file can fail to read becomes an InputError.

CSV files are read with pandas (compression inferred from the name: ``.xz``, ``.gz``,
``.bz2``, ``.zip``, ``.zst``), every cell as a string (``""`` for an empty cell, no NA
guessing, so ``null`` or ``NA`` stay text for the reader to interpret). Text that is not
valid UTF-8 is decoded with replacement characters and counted (note
``invalid_utf8_file``) rather than refused.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import math
import re
import warnings
import zipfile
import zlib
from pathlib import Path

import pandas as pd

from prefkit.errors import InputError
from prefkit.data.report import ReadContext

COMPRESSION_SUFFIXES = ("", ".xz", ".gz", ".bz2", ".zip", ".zst")

# Everything a decompressor / decoder / parser raises for a damaged or foreign file.
_READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    lzma.LZMAError,
    zlib.error,
    zipfile.BadZipFile,
    UnicodeError,
    ValueError,  # pandas ParserError, EmptyDataError, and their kin
    ImportError,  # a compression codec not installed (zstandard)
    RecursionError,
    IndexError,
    KeyError,
    TypeError,
    OverflowError,
)

_SKIPPING = re.compile(r"Skipping line (\d+)")


def existing_file(ctx: ReadContext) -> Path:
    path = ctx.path
    if not path.exists():
        raise ctx.error("file not found")
    if path.is_dir():
        raise ctx.error("expected a file, found a folder")
    return path


def _short(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    text = text.replace("Error tokenizing data. C error: ", "")
    return " ".join(text.split())[:300]


def read_csv_text(ctx: ReadContext, *, allow_skip_lines: bool = True) -> pd.DataFrame:
    """The CSV as a table of strings (header required); malformed lines obey the policy."""
    path = existing_file(ctx)
    skip_lines = allow_skip_lines and ctx.policy == "skip"
    kwargs = dict(
        dtype=object,  # plain Python str cells (no round trip through Arrow strings)
        keep_default_na=False,
        na_filter=False,
        compression="infer",
        on_bad_lines="warn" if skip_lines else "error",
        encoding="utf-8",
    )
    try:
        try:
            df, skipped = _read_csv(path, kwargs)
        except UnicodeDecodeError:
            df, skipped = _read_csv(path, {**kwargs, "encoding_errors": "replace"})
            ctx.report.note("invalid_utf8_file")
    except pd.errors.EmptyDataError:
        raise ctx.error("empty file (no header, no rows)") from None
    except InputError:
        raise
    except _READ_ERRORS as err:
        raise ctx.error(f"cannot read as CSV: {_short(err)}") from None
    for _ in range(skipped):
        ctx.report.skip("malformed_csv_line", ctx.error("malformed CSV line (wrong number of fields)").one_line())
    df.columns = [str(c).strip() for c in df.columns]
    # Short rows come back as NaN even with na_filter off on some pandas versions.
    for col in df.columns:
        if df[col].isna().any():
            df[col] = df[col].fillna("")
    return df


def _read_csv(path: Path, kwargs: dict) -> tuple[pd.DataFrame, int]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = pd.read_csv(path, **kwargs)
    skipped = 0
    for w in caught:
        skipped += len(_SKIPPING.findall(str(w.message)))
    return df, skipped


def require_columns(ctx: ReadContext, df: pd.DataFrame, columns) -> None:
    for col in columns:
        if col not in df.columns:
            raise ctx.error(f"missing required column (found {list(map(str, df.columns))[:20]})", column=col)


def read_text(ctx: ReadContext) -> str:
    """Whole file as text, decompressed by suffix (.gz, .xz, .bz2); bad UTF-8 replaced."""
    path = existing_file(ctx)
    suffix = path.suffix.lower()
    try:
        if suffix == ".gz":
            data = gzip.decompress(path.read_bytes())
        elif suffix == ".xz":
            data = lzma.decompress(path.read_bytes())
        elif suffix == ".bz2":
            data = bz2.decompress(path.read_bytes())
        else:
            data = path.read_bytes()
    except _READ_ERRORS as err:
        raise ctx.error(f"cannot read file: {_short(err)}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        ctx.report.note("invalid_utf8_file")
        return data.decode("utf-8-sig", errors="replace")


_DECODER = json.JSONDecoder(strict=False)


def loads(text: str):
    """``json.loads`` that tolerates raw control characters inside strings."""
    return _DECODER.decode(text)


JSON_ERRORS = (ValueError, RecursionError)


def read_parquet_records(ctx: ReadContext) -> list[dict]:
    path = existing_file(ctx)
    try:
        df = pd.read_parquet(path)
    except _READ_ERRORS as err:
        raise ctx.error(f"cannot read as Parquet: {_short(err)}") from None
    except Exception as err:  # pyarrow raises its own ArrowInvalid / ArrowException family
        if type(err).__module__.startswith("pyarrow"):
            raise ctx.error(f"cannot read as Parquet: {_short(err)}") from None
        raise
    return [to_python(r) for r in df.to_dict(orient="records")]


def to_python(value):
    """Nested numpy arrays / scalars from a Parquet row turned into plain lists and values."""
    import numpy as np

    if isinstance(value, dict):
        return {k: to_python(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [to_python(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_json_or_jsonl(ctx: ReadContext) -> list[tuple[int, object]]:
    """Records with their 1-based row: a JSON list (row = position) or JSON lines (row =
    line number). A line that is not JSON is a bad row; a damaged JSON list an error."""
    text = read_text(ctx)
    if not text.strip():
        raise ctx.error("empty file")
    name = ctx.path.name.lower()
    jsonl = any(name.endswith(s) for s in (".jsonl", ".jsonl.gz", ".jsonl.xz", ".jsonl.bz2", ".ndjson"))
    if not jsonl:
        stripped = text.lstrip()
        if stripped.startswith("["):
            try:
                data = loads(text)
            except JSON_ERRORS as err:
                raise ctx.error(f"not valid JSON: {_short(err)}") from None
            if not isinstance(data, list):
                raise ctx.error("expected a JSON list of records")
            return list(enumerate(data, start=1))
        if stripped.startswith("{"):
            try:
                data = loads(text)
            except JSON_ERRORS:
                data = None  # probably JSON lines after all
            if isinstance(data, dict):
                return [(1, data)]
    records = []
    for lineno, line in enumerate(io.StringIO(text), start=1):
        if not line.strip():
            continue
        try:
            records.append((lineno, loads(line)))
        except JSON_ERRORS as err:
            ctx.bad("invalid_json", f"not valid JSON: {_short(err)}", row=lineno)
    return records


def as_number(value) -> float:
    """A label or score cell as a float: numbers and numeric strings; NaN for anything else (bools too)."""
    if isinstance(value, bool):
        return math.nan
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return math.nan
    return math.nan
