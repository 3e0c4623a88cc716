"""Kaggle LMSYS / LLM-classification files: train/test CSV, sample submission, solution.

Cells of ``prompt``, ``response_a`` and ``response_b`` are JSON lists of turns. What the
reader does with each kind of cell (counted in the report's ``notes``):

=========================  ==============================================  ======================
cell                       becomes                                         note
=========================  ==============================================  ======================
``["a", "b"]``             two turns                                       --
``["a", null]``            ``null`` turn -> ``""``                         ``null_turns``
``null``                   one empty turn                                  ``null_cells``
``""`` (empty)             one empty turn                                  ``empty_cells``
``[]``                     one empty turn                                  ``empty_lists``
``"text"`` (JSON string)   one turn                                        ``json_string_cells``
``[1, {"x": 2}]``          items written back as JSON text                 ``non_string_turns``
plain text / not JSON      one turn holding the cell text as it is         ``plain_text_cells``
``["a", "b`` (broken)      a bad row: starts like a JSON list, isn't one   ``malformed_json``
``"\\ud83d"`` alone         lone surrogate replaced by U+FFFD               ``lone_surrogates_replaced``
=========================  ==============================================  ======================

Turns are aligned by position (``prompt[i]`` with ``response_a[i]`` and
``response_b[i]``); a shorter list is padded with ``""`` (note ``unaligned_turns_padded``).

Labels: ``winner_model_a``, ``winner_model_b``, ``winner_tie`` must each be 0 or 1 with
exactly one 1 (``1.0`` is fine). All three columns absent -> an unlabelled table (a test
set); one or two of them absent -> error. Bad rows (label not a number, not one-hot,
empty label, empty id, an id repeated with different content, malformed CSV line) follow
``on_bad_row``. A row that repeats an earlier row *exactly* (same id, same cells) is
dropped under either policy and counted in ``skipped["exact_duplicate"]``: the shared
arena data has 329 such rows in train and 87 in test, so ids stay unique; map
predictions to ``sample_submission`` by id (it keeps the repeated lines).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from prefkit.data.fileio import COMPRESSION_SUFFIXES, JSON_ERRORS, as_number, loads, read_csv_text, require_columns
from prefkit.data.report import ReadContext
from prefkit.errors import InputError
from prefkit.schema import make_pairs, validate_pairs

ID = "id"
TEXT_COLUMNS = ("prompt", "response_a", "response_b")
LABEL_COLUMNS = ("winner_model_a", "winner_model_b", "winner_tie")
MODEL_COLUMNS = ("model_a", "model_b")


def parse_turns(cell, ctx: ReadContext, row: int = 0, column: str | None = None) -> list[str] | None:
    """One Kaggle cell -> list of turns (see the module table); None for a (skipped) bad cell."""
    if not isinstance(cell, str):
        cell = "" if cell is None or (isinstance(cell, float) and math.isnan(cell)) else str(cell)
    if not cell.strip():
        ctx.report.note("empty_cells")
        return [""]
    try:
        value = loads(cell)
    except JSON_ERRORS as err:
        if cell.lstrip().startswith("["):  # meant as a JSON list but corrupt: plain text would hide the damage
            reason = str(err).splitlines()[0][:80]
            ctx.bad("malformed_json", f"cell starts like a JSON list of turns but is not valid JSON ({reason})", row=row, column=column)
            return None
        ctx.report.note("plain_text_cells")
        return [ctx.clean(cell)]
    if value is None:
        ctx.report.note("null_cells")
        return [""]
    if isinstance(value, str):
        ctx.report.note("json_string_cells")
        return [ctx.clean(value)]
    if isinstance(value, list):
        turns = []
        for item in value:
            if item is None:
                ctx.report.note("null_turns")
                turns.append("")
            elif isinstance(item, str):
                turns.append(ctx.clean(item))
            else:
                ctx.report.note("non_string_turns")
                turns.append(ctx.clean(_dumps(item)))
        if not turns:
            ctx.report.note("empty_lists")
            return [""]
        return turns
    ctx.report.note("plain_text_cells")  # a bare number, true/false or an object
    return [ctx.clean(cell)]


def _dumps(value) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)
    except (ValueError, TypeError, RecursionError):  # pragma: no cover - loads() output always dumps
        return str(value)


def align_turns(ctx: ReadContext, *sides: list[str]) -> list[list[str]]:
    n = max(len(s) for s in sides)
    if any(len(s) != n for s in sides):
        ctx.report.note("unaligned_turns_padded")
        return [s + [""] * (n - len(s)) for s in sides]
    return list(sides)


_ONE_HOT = {("1", "0", "0"): [1.0, 0.0, 0.0], ("0", "1", "0"): [0.0, 1.0, 0.0], ("0", "0", "1"): [0.0, 0.0, 1.0]}


def parse_one_hot(ctx: ReadContext, values, row: int, columns=LABEL_COLUMNS) -> list[float] | None:
    """Winner cells of one row -> [p_a, p_b, p_tie], or None for a (skipped) bad row."""
    fast = _ONE_HOT.get(tuple(values))
    if fast is not None:
        return fast
    if all(not str(v).strip() for v in values):
        ctx.bad("label_missing", "label missing (all winner columns empty)", row=row, column=columns[0])
        return None
    numbers = []
    for col, raw in zip(columns, values):
        text = str(raw).strip()
        x = as_number(text)
        if not math.isfinite(x):
            ctx.bad("label_not_numeric", f"label {text[:40]!r} is not a number (expected 0 or 1)", row=row, column=col)
            return None
        numbers.append(x)
    for col, x in zip(columns, numbers):
        if x not in (0.0, 1.0):
            ctx.bad("label_not_one_hot", f"label {x:g} is not 0 or 1", row=row, column=col)
            return None
    if sum(numbers) != 1.0:
        shown = ", ".join(f"{x:g}" for x in numbers)
        ctx.bad(
            "label_not_one_hot",
            f"label row ({shown}) is not one-hot: exactly one of {', '.join(columns)} must be 1",
            row=row,
            column=",".join(columns),
        )
        return None
    return numbers


def read_kaggle_csv(path: str | Path, *, on_bad_row: str = "error", require_labels: bool = False) -> pd.DataFrame:
    """A Kaggle train.csv / test.csv (``.csv``, ``.csv.xz``, ``.csv.gz``) as a pair table.

    ``id`` keeps the competition's id as a string; ``model_a``/``model_b`` are kept when
    present. The :class:`~prefkit.data.report.ReadReport` is in ``df.attrs["report"]``.
    """
    ctx = ReadContext(path, "kaggle", on_bad_row)
    raw = read_csv_text(ctx)
    require_columns(ctx, raw, (ID, *TEXT_COLUMNS))
    present = [c for c in LABEL_COLUMNS if c in raw.columns]
    if present and len(present) < len(LABEL_COLUMNS) or (require_labels and not present):
        absent = [c for c in LABEL_COLUMNS if c not in raw.columns]
        raise ctx.error("missing label column (need all of " + ", ".join(LABEL_COLUMNS) + ")", column=absent[0])
    labelled = bool(present)
    models = all(c in raw.columns for c in MODEL_COLUMNS)

    n = len(raw)
    ids_col = raw[ID].tolist()
    texts = [raw[c].tolist() for c in TEXT_COLUMNS]
    label_cols = [raw[c].tolist() for c in LABEL_COLUMNS] if labelled else None
    model_cols = [raw[c].tolist() for c in MODEL_COLUMNS] if models else None

    all_cols = [raw[c].tolist() for c in raw.columns]
    ids, prompts, resp_a, resp_b, labels, model_a, model_b = [], [], [], [], [], [], []
    seen: dict[str, int] = {}  # id -> index of its (kept) row in raw
    for i in range(n):
        row = i + 1
        id_ = ctx.clean(str(ids_col[i]).strip())
        if not id_:
            ctx.bad("missing_id", "empty id", row=row, column=ID)
            continue
        if id_ in seen:
            j = seen[id_]
            if all(c[i] == c[j] for c in all_cols):  # the same row again: drop under any policy
                ctx.report.skip("exact_duplicate", ctx.error(f"repeats row {j + 1} exactly", row=row).one_line())
            else:
                ctx.bad("duplicate_id", f"duplicate id {id_[:60]!r} (first in row {j + 1}, different content)", row=row, column=ID)
            continue
        sides = [parse_turns(c[i], ctx, row, name) for c, name in zip(texts, TEXT_COLUMNS)]
        if any(side is None for side in sides):
            continue
        if labelled:
            label = parse_one_hot(ctx, [c[i] for c in label_cols], row)
            if label is None:
                continue
            labels.append(label)
        seen[id_] = i
        p, a, b = align_turns(ctx, *sides)
        ids.append(id_)
        prompts.append(p)
        resp_a.append(a)
        resp_b.append(b)
        if models:
            model_a.append(ctx.clean(str(model_cols[0][i])))
            model_b.append(ctx.clean(str(model_cols[1][i])))

    optional = {"model_a": model_a, "model_b": model_b} if models else {}
    pairs = make_pairs(ids, prompts, resp_a, resp_b, labels=np.array(labels) if labelled and labels else None, **optional)
    return ctx.finish(pairs, n, validate=validate_pairs)


def read_sample_submission(path: str | Path) -> pd.DataFrame:
    """``sample_submission.csv``: ``id`` (str) and the three winner columns as floats, one
    row per line in file order (a repeated id is kept: it mirrors a repeated test row)."""
    ctx = ReadContext(path, "sample_submission")
    raw = read_csv_text(ctx, allow_skip_lines=False)
    require_columns(ctx, raw, (ID, *LABEL_COLUMNS))
    out = pd.DataFrame({ID: [str(x).strip() for x in raw[ID]]})
    for col in LABEL_COLUMNS:
        values = []
        for i, cell in enumerate(raw[col].tolist()):
            try:
                x = float(str(cell).strip())
            except ValueError:
                x = math.nan
            if not math.isfinite(x):
                raise ctx.error(f"{str(cell)[:40]!r} is not a number", row=i + 1, column=col)
            values.append(x)
        out[col] = np.array(values, dtype=float)
    _check_ids(ctx, out[ID].tolist())
    return ctx.finish(out, len(raw))


def read_solution(path: str | Path) -> pd.DataFrame:
    """Test labels (``solution.csv``): ``id``, one-hot ``p_a``/``p_b``/``p_tie`` from the
    winner columns, and ``usage`` (Kaggle's Public/Private split) when a ``Usage`` column
    exists. One row per line in file order; a repeated id must repeat its label."""
    ctx = ReadContext(path, "solution")
    raw = read_csv_text(ctx, allow_skip_lines=False)
    require_columns(ctx, raw, (ID, *LABEL_COLUMNS))
    label_cols = [raw[c].tolist() for c in LABEL_COLUMNS]
    labels = [parse_one_hot(ctx, [c[i] for c in label_cols], i + 1) for i in range(len(raw))]
    labels_arr = np.array(labels, dtype=float).reshape(len(raw), 3)
    out = pd.DataFrame(
        {ID: [str(x).strip() for x in raw[ID]], "p_a": labels_arr[:, 0], "p_b": labels_arr[:, 1], "p_tie": labels_arr[:, 2]}
    )
    usage = next((c for c in raw.columns if c.lower() == "usage"), None)
    if usage is not None:
        out["usage"] = [str(x).strip() for x in raw[usage]]
    _check_ids(ctx, out[ID].tolist(), labels_arr)
    return ctx.finish(out, len(raw))


def _check_ids(ctx: ReadContext, ids: list[str], values: np.ndarray | None = None) -> None:
    """Ids must be non-empty. A repeated id is allowed (Kaggle files list one line per test
    row, and test sets can repeat a row) and counted in ``notes["repeated_ids"]``; with
    ``values`` (labels), a repeated id must repeat the same values."""
    first: dict[str, int] = {}
    for i, id_ in enumerate(ids):
        if not id_:
            raise ctx.error("empty id", row=i + 1, column=ID)
        if id_ in first:
            j = first[id_]
            if values is not None and not np.array_equal(values[i], values[j]):
                raise ctx.error(f"id {id_[:60]!r} repeats row {j + 1} with a different label", row=i + 1, column=ID)
            ctx.report.note("repeated_ids")
        else:
            first[id_] = i


@dataclass(frozen=True)
class KaggleFiles:
    train: Path
    test: Path | None = None
    sample_submission: Path | None = None
    solution: Path | None = None


def find_file(folder: str | Path, stem: str) -> Path | None:
    """``folder/stem.csv`` with or without a compression suffix (plain first)."""
    folder = Path(folder)
    for suffix in COMPRESSION_SUFFIXES:
        candidate = folder / f"{stem}.csv{suffix}"
        if candidate.is_file():
            return candidate
    return None


def locate_kaggle_files(folder: str | Path) -> KaggleFiles:
    """Find train / test / sample_submission / solution CSVs (each optionally compressed)
    in a Kaggle-layout folder; only train is required."""
    folder = Path(folder)
    if not folder.exists():
        raise InputError("data folder not found", file=folder)
    if not folder.is_dir():
        raise InputError("expected a folder in the Kaggle layout (train.csv, test.csv, ...)", file=folder)
    train = find_file(folder, "train")
    if train is None:
        tried = ", ".join(f"train.csv{s}" for s in COMPRESSION_SUFFIXES)
        raise InputError(f"no training file found (looked for {tried})", file=folder)
    return KaggleFiles(
        train=train,
        test=find_file(folder, "test"),
        sample_submission=find_file(folder, "sample_submission"),
        solution=find_file(folder, "solution"),
    )


def read_kaggle(path: str | Path, *, on_bad_row: str = "error") -> pd.DataFrame:
    """A Kaggle arena CSV, or the train file of a folder in the Kaggle layout."""
    p = Path(path)
    if p.is_dir():
        p = locate_kaggle_files(p).train
    return read_kaggle_csv(p, on_bad_row=on_bad_row)
