"""Cross-validation folds: made (stratified by label, grouped by prompt) or imported.

A fold map is a file that assigns each key (a pair ``id``, or any other string column
such as ``group`` for item tables) a fold:

* ``.csv``: columns ``id,fold`` (another key column name is accepted: the first column
  that is not ``fold``);
* ``.json``: an object ``{"key": fold, ...}``.

Fold values are integers or labels (e.g. the letters ``"A".."E"`` of the FB3 fold map);
either way the distinct values are mapped to ``0..k-1`` in sorted order (so ``0..4``
stays ``0..4`` and ``A..E`` becomes ``0..4``).
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from prefkit.atomic import atomic_path, atomic_write_text
from prefkit.errors import InputError
from prefkit.schema import LABELS

if TYPE_CHECKING:
    from prefkit.config import RunConfig

log = logging.getLogger(__name__)

FOLD_MAP_SUFFIXES = (".csv", ".json")
UNLABELLED_CLASS = 3  # pseudo-class for stratifying rows without a label


def stratify_labels(pairs: pd.DataFrame) -> np.ndarray:
    """Hard class per row (0 A, 1 B, 2 tie; argmax of the label), 3 where unlabelled."""
    labels = pairs[list(LABELS)].to_numpy(dtype=float)
    unlabelled = np.isnan(labels).all(axis=1)
    y = np.nan_to_num(labels, nan=-1.0).argmax(axis=1)
    y[unlabelled] = UNLABELLED_CLASS
    return y


def make_folds(pairs: pd.DataFrame, n_folds: int = 5, seed: int = 42, group_column: str = "group") -> np.ndarray:
    """Fold index (0..n_folds-1) per row, stratified by hard label and grouped by ``group``.

    Uses scikit-learn's ``StratifiedGroupKFold(shuffle=True, random_state=seed)``: no group
    is in two folds, class shares per fold stay close to the overall ones, and the result
    depends only on the rows, their order and ``seed``. Without a ``group`` column every
    row is its own group.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    n = len(pairs)
    if n_folds < 2:
        raise InputError(f"n_folds must be at least 2 (got {n_folds})")
    if group_column in pairs.columns:
        groups = pairs[group_column].astype(str).to_numpy()
    else:
        groups = np.arange(n).astype(str)
    n_groups = len(pd.unique(groups))
    if n_groups < n_folds:
        raise InputError(f"{n_groups} distinct {group_column!r} value(s) cannot fill {n_folds} folds")
    y = stratify_labels(pairs) if all(c in pairs.columns for c in LABELS) else np.zeros(n, dtype=int)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = np.full(n, -1, dtype=int)
    with warnings.catch_warnings():
        # "The least populated class in y has only k members" for rare classes: harmless here.
        warnings.filterwarnings("ignore", message=".*least populated class.*", category=UserWarning)
        try:
            for k, (_, held_out) in enumerate(splitter.split(np.zeros(n), y, groups)):
                folds[held_out] = k
        except ValueError as err:  # e.g. every label class has fewer rows than folds
            raise InputError(f"{n} rows ({n_groups} prompt groups) cannot fill {n_folds} stratified folds: {err}") from None
    assert (folds >= 0).all()
    return folds


# ---------------------------------------------------------------------------------------
# Fold map files
# ---------------------------------------------------------------------------------------


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in FOLD_MAP_SUFFIXES:
        raise InputError(f"fold map must end in .csv or .json (got {path.suffix or 'no extension'!r})", file=path)
    return suffix


def save_fold_map(ids, folds, path: str | Path) -> Path:
    """Write ``ids -> folds`` as CSV (``id,fold``) or JSON (``{id: fold}``), by extension.

    Repeated ids (e.g. a ``group`` column) are written once; they must agree on the fold.
    """
    path = Path(path)
    suffix = _suffix(path)
    keys = pd.Series([str(i) for i in ids], name="id")
    values = np.asarray(folds, dtype=int)
    if len(keys) != len(values):
        raise ValueError(f"{len(keys)} ids but {len(values)} folds")
    table = pd.DataFrame({"id": keys, "fold": values})
    per_key = table.groupby("id", sort=False)["fold"].nunique()
    if (per_key > 1).any():
        raise InputError(f"id {per_key.index[per_key > 1][0]!r} is in more than one fold; cannot write a map keyed on it")
    table = table.drop_duplicates("id")
    if suffix == ".csv":
        with atomic_path(path) as tmp:
            table.to_csv(tmp, index=False)
    else:
        atomic_write_text(path, json.dumps({k: int(v) for k, v in zip(table["id"], table["fold"])}, indent=1) + "\n")
    return path


def _shape(value) -> str:
    """What kind of label a fold value is: runs of letters, digits and other characters
    collapsed (``"A"`` and ``"E"`` are ``"A"``, ``"fold_3"`` and ``"fold_12"`` are ``"a_9"``)."""
    classes = []
    for ch in str(value).strip():
        c = "9" if ch.isdigit() else "A" if ch.isupper() else "a" if ch.isalpha() else ch
        if not classes or classes[-1] != c:
            classes.append(c)
    return "".join(classes)


MIN_FOLD_SHARE = 0.1  # of the median fold: a smaller fold among large ones is a typo, not a fold


def check_fold_labels(raw: list, path: Path, where) -> None:
    """Refuse a fold value unlike the map's other folds: ``x`` amid ``A..E``, ``"5b"`` amid
    ``0..4``, or a fold of a row or two among folds of hundreds. ``where(i)`` names entry
    ``i`` (``(row, key)`` for the error)."""
    from collections import Counter

    shapes = Counter(_shape(v) for v in raw)
    if len(shapes) > 1:
        usual = shapes.most_common(1)[0][0]
        i = next(i for i, v in enumerate(raw) if _shape(v) != usual)
        row, key = where(i)
        examples = sorted({str(v).strip() for v in raw if _shape(v) == usual})[:5]
        raise InputError(
            f"fold {str(raw[i]).strip()!r}{key} is unlike the map's other folds ({', '.join(examples)}): a typo?",
            file=path, row=row, column="fold",
        )  # fmt: skip
    counts = Counter(str(v).strip() for v in raw)
    median = float(np.median(list(counts.values())))
    small = [v for v, n in counts.items() if median >= 20 and n < MIN_FOLD_SHARE * median]
    if small:
        i = next(i for i, v in enumerate(raw) if str(v).strip() == small[0])
        row, key = where(i)
        raise InputError(
            f"fold {small[0]!r}{key} has {counts[small[0]]} row(s) against a median of {median:g} per fold: a typo?",
            file=path, row=row, column="fold",
        )  # fmt: skip


def _normalise_values(raw: list, path: Path) -> tuple[list[int], list]:
    """Map fold values (ints, numeric strings or labels) to 0..k-1 in sorted order."""
    def as_int(v):
        if isinstance(v, bool):
            return None
        if isinstance(v, (int, np.integer)):
            return int(v)
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            return int(v)
        if isinstance(v, str) and v.strip().lstrip("-").isdigit():
            return int(v.strip())
        return None

    ints = [as_int(v) for v in raw]
    if all(i is not None for i in ints):
        values: list = ints
    else:
        bad = next((v for v in raw if not isinstance(v, str) or not v.strip()), None)
        if bad is not None:
            what = "integers and labels mixed" if any(i is not None for i in ints) else "neither an integer nor a label"
            raise InputError(f"fold value {bad!r}: {what}", file=path, column="fold")
        values = [v.strip() for v in raw]
    distinct = sorted(set(values))
    if len(distinct) < 2:
        raise InputError(f"fold map has {len(distinct)} distinct fold(s); need at least 2", file=path, column="fold")
    code = {v: k for k, v in enumerate(distinct)}
    return [code[v] for v in values], distinct


def read_fold_map(path: str | Path) -> tuple[dict[str, int], list]:
    """Read a fold map file: ``({key: fold 0..k-1}, original fold values in order)``."""
    path = Path(path)
    if not path.exists():
        raise InputError("fold map not found", file=path)
    suffix = _suffix(path)
    if suffix == ".json":
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise InputError(f"not valid JSON ({err})", file=path) from None
        if not isinstance(raw, dict) or not raw:
            raise InputError('expected a non-empty JSON object {"id": fold, ...}', file=path)
        keys = [str(k) for k in raw]
        values = list(raw.values())
    else:
        try:
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
            raise InputError(f"not a readable CSV ({str(err).splitlines()[0]})", file=path) from None
        if "fold" not in table.columns or len(table.columns) < 2:
            raise InputError(f"expected columns id,fold (got {list(table.columns)})", file=path)
        if len(table) == 0:
            raise InputError("no rows", file=path)
        key_col = "id" if "id" in table.columns else next(c for c in table.columns if c != "fold")
        keys = table[key_col].astype(str).tolist()
        values = table["fold"].tolist()
        empty = [i for i, v in enumerate(values) if not str(v).strip()]
        if empty:
            raise InputError("empty fold", file=path, row=empty[0] + 1, column="fold")
    seen: set[str] = set()
    for row, key in enumerate(keys):
        if key in seen:
            raise InputError(f"id {key!r} appears twice", file=path, row=row + 1 if suffix == ".csv" else None)
        seen.add(key)
    check_fold_labels(values, path, lambda i: (i + 1, "") if suffix == ".csv" else (None, f" (key {keys[i]!r})"))
    codes, distinct = _normalise_values(values, path)
    return dict(zip(keys, codes)), distinct


@dataclass
class FoldMapImport:
    """What importing a fold map found (for reports)."""

    path: str
    folds: np.ndarray
    fold_values: list  # the map's own fold names, index = fold number
    n_map_keys: int
    n_unused_keys: int  # keys in the map that are not in the data (fine, reported)
    unused_examples: list[str] = field(default_factory=list)

    def describe(self) -> str:
        text = f"fold map {self.path}: {len(self.fold_values)} folds"
        if self.fold_values != list(range(len(self.fold_values))):
            text += " (" + ", ".join(f"{k}={v}" for k, v in enumerate(self.fold_values)) + ")"
        text += f", {self.n_map_keys} keys"
        if self.n_unused_keys:
            text += f", {self.n_unused_keys} not in the data (e.g. {self.unused_examples[0]!r})"
        return text


def import_fold_map(path: str | Path, ids) -> FoldMapImport:
    """Fold per entry of ``ids`` from a map file; every id must be in the map."""
    mapping, distinct = read_fold_map(path)
    keys = [str(i) for i in ids]
    folds = np.empty(len(keys), dtype=int)
    for row, key in enumerate(keys):
        fold = mapping.get(key)
        if fold is None:
            n_missing = sum(1 for k in keys if k not in mapping)
            raise InputError(
                f"id {key!r} (data row {row + 1}) is not in the fold map ({n_missing} of {len(keys)} ids missing)", file=path
            )
        folds[row] = fold
    used = set(keys)
    unused = [k for k in mapping if k not in used]
    result = FoldMapImport(
        path=str(path),
        folds=folds,
        fold_values=distinct,
        n_map_keys=len(mapping),
        n_unused_keys=len(unused),
        unused_examples=unused[:5],
    )
    if unused:
        log.info("%s", result.describe())
    return result


def split_groups(pairs: pd.DataFrame, folds) -> pd.Series:
    """Prompt groups whose rows lie in more than one fold: group -> its folds."""
    if "group" not in pairs.columns:
        return pd.Series(dtype=object)
    table = pd.DataFrame({"group": pairs["group"].astype(str).to_numpy(), "fold": np.asarray(folds, dtype=int)})
    per_group = table.groupby("group", sort=False)["fold"].unique()
    return per_group[per_group.map(len) > 1]


def check_groups_kept(pairs: pd.DataFrame, folds, source, allow: bool = False, flag: str = "--allow-split-groups") -> int:
    """Refuse folds that put one prompt group in two folds (the model would validate on
    prompts it trained on), unless ``allow``; returns the number of split groups."""
    split = split_groups(pairs, folds)
    if len(split) and not allow:
        group, in_folds = split.index[0], sorted(int(f) for f in split.iloc[0])
        raise InputError(
            f"the fold map splits {len(split)} prompt group(s) across folds, e.g. group {group!r} is in folds "
            f"{', '.join(map(str, in_folds))}: validation would see prompts from training; fix the map or pass {flag}",
            file=source,
        )
    return len(split)


def folds_for(cfg: RunConfig, pairs: pd.DataFrame) -> np.ndarray:
    """Folds for a run: ``cfg.folds.fold_map`` imported when set, else :func:`make_folds`.

    An imported map is looked up by ``id``; if some ids are missing but every ``group``
    value is in the map, it is read as keyed on ``group`` instead.
    """
    fold_map = cfg.folds.fold_map
    if not fold_map:
        return make_folds(pairs, n_folds=cfg.folds.n_folds, seed=cfg.folds.seed)
    try:
        result = import_fold_map(fold_map, pairs["id"])
    except InputError as by_id:
        if "group" not in pairs.columns or "is not in the fold map" not in by_id.what:
            raise
        try:
            result = import_fold_map(fold_map, pairs["group"])
        except InputError:
            raise by_id from None
    if len(result.fold_values) != cfg.folds.n_folds:
        log.warning("fold map %s has %d folds; folds.n_folds=%d is ignored", fold_map, len(result.fold_values), cfg.folds.n_folds)
    allow = getattr(cfg.folds, "allow_split_groups", False)
    n_split = check_groups_kept(pairs, result.folds, fold_map, allow=allow, flag="folds.allow_split_groups=true")
    if n_split:
        log.warning("fold map %s splits %d prompt group(s) across folds (folds.allow_split_groups=true)", fold_map, n_split)
    return result.folds


def fold_table(pairs: pd.DataFrame, folds: np.ndarray) -> pd.DataFrame:
    """Per fold: rows, groups and label shares (A, B, tie, unlabelled), plus an ``all`` row."""
    folds = np.asarray(folds, dtype=int)
    y = stratify_labels(pairs) if all(c in pairs.columns for c in LABELS) else np.full(len(pairs), UNLABELLED_CLASS)
    groups = pairs["group"].astype(str).to_numpy() if "group" in pairs.columns else np.arange(len(pairs)).astype(str)
    rows = []
    for name, mask in [*((str(k), folds == k) for k in sorted(set(folds.tolist()))), ("all", np.ones(len(folds), bool))]:
        n = int(mask.sum())
        counts = np.bincount(y[mask], minlength=4)
        rows.append(
            {
                "fold": name,
                "rows": n,
                "groups": len(pd.unique(groups[mask])),
                "share_a": counts[0] / n if n else np.nan,
                "share_b": counts[1] / n if n else np.nan,
                "share_tie": counts[2] / n if n else np.nan,
                "unlabelled": int(counts[3]),
            }
        )
    return pd.DataFrame(rows)


# One meaning of a fold id for every model: k >= 0 is validated in fold k and trains the
# others; -1 always trains and is never validated (no OOF row).
def validation_folds(folds) -> list[int]:
    """The folds that have validation rows (ids >= 0), sorted."""
    return sorted(int(f) for f in np.unique(np.asarray(folds, dtype=int)) if f >= 0)


def fold_split(folds, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, validation rows) of fold ``k`` as row indices; -1 rows always train."""
    folds = np.asarray(folds, dtype=int)
    return np.flatnonzero(folds != k), np.flatnonzero(folds == k)
