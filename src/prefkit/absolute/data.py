"""Item tables with absolute targets: essays (or any texts) with one or more score columns,
and their folds.

A data folder holds a training table (``train.csv``, plain or compressed, or the only CSV
there) and optionally a fold map (``fold_map.json``, ``fold_map.csv`` or ``folds.csv``:
id -> fold, see :mod:`prefkit.data.folds`). Columns are named in the config or found:
the id column (``id``, or a column whose name ends in ``id``), the text column (the string
column with the longest texts) and the targets (every other numeric column except
bookkeeping ones such as ``standard_error``). Reading goes through
:func:`prefkit.data.readers.read_scores_csv`, so a bad cell is one line naming the file,
row and column.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from prefkit.data.fileio import COMPRESSION_SUFFIXES
from prefkit.data.folds import import_fold_map, make_folds
from prefkit.data.kaggle import find_file
from prefkit.data.readers import read_scores_csv
from prefkit.errors import InputError

FOLD_MAP_NAMES = ("fold_map.json", "fold_map.csv", "folds.csv", "folds.json")
NOT_TARGETS = ("standard_error", "se", "fold", "kfold", "weight", "count")


@dataclass
class ItemTable:
    """``items``: ``id``, ``text`` and one float column per target (``targets``, in order)."""

    items: pd.DataFrame
    targets: list[str]
    source: str

    @property
    def y(self) -> np.ndarray:
        return self.items[self.targets].to_numpy(dtype=float)

    @property
    def texts(self) -> list[str]:
        return self.items["text"].tolist()


def find_train_file(folder: str | Path) -> Path:
    """``train.csv`` (any compression) in ``folder``, else its only CSV file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("data folder not found", file=folder)
    train = find_file(folder, "train")
    if train is not None:
        return train
    csvs = sorted(p for p in folder.iterdir() if any(p.name.endswith(f".csv{s}") for s in COMPRESSION_SUFFIXES))
    csvs = [p for p in csvs if not p.name.startswith(("fold", "sample_submission"))]
    if len(csvs) != 1:
        raise InputError(f"expected train.csv (or one CSV file) in the folder, found {len(csvs)} CSV files", file=folder)
    return csvs[0]


def find_fold_map(folder: str | Path) -> Path | None:
    for name in FOLD_MAP_NAMES:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


def _guess_columns(path: Path, id_column: str | None, text_column: str | None, targets: list[str] | None):
    """Fill the column names not given from the file's first rows."""
    try:
        head = pd.read_csv(path, nrows=500)
    except Exception as err:  # the full read below reports damage with its row; here name the file
        raise InputError(f"not a readable CSV ({' '.join(str(err).split())[:160]})", file=path) from None
    columns = list(head.columns)
    if id_column is None:
        named = [c for c in columns if c.lower() == "id"] or [c for c in columns if c.lower().endswith("id")]
        if not named:
            raise InputError(f"no id column found (columns: {', '.join(columns)}); name it in data.id_column", file=path)
        id_column = named[0]
    if text_column is None:
        strings = [c for c in columns if c != id_column and not pd.api.types.is_numeric_dtype(head[c])]
        if not strings:
            raise InputError(f"no text column found (columns: {', '.join(columns)}); name it in data.text_column", file=path)
        text_column = max(strings, key=lambda c: head[c].astype(str).str.len().mean())
    if targets is None:
        # mostly numbers: a target (a stray bad cell is then reported with its row by the reader)
        numeric = [c for c in columns if c not in (id_column, text_column) and pd.to_numeric(head[c], errors="coerce").notna().mean() >= 0.5]
        targets = [c for c in numeric if c.lower() not in NOT_TARGETS]
        if not targets:
            raise InputError(f"no numeric target column found (columns: {', '.join(columns)}); name them in data.targets", file=path)
    return id_column, text_column, list(targets)


def load_items(path: str | Path, id_column: str | None = None, text_column: str | None = None, targets: list[str] | None = None) -> ItemTable:
    """The item table of ``path`` (columns named or found, see the module notes)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", file=path)
    id_column, text_column, targets = _guess_columns(path, id_column, text_column, targets)
    items = read_scores_csv(path, id_column, text_column, targets)
    if len(items) < 2:
        raise InputError(f"{len(items)} scored item(s); need at least 2", file=path)
    return ItemTable(items.reset_index(drop=True), targets, str(path))


def load_test_items(path: str | Path, train: ItemTable, id_column: str | None = None, text_column: str | None = None) -> ItemTable:
    """A table scored by a model fitted on ``train``: the same target columns (when present,
    they are scored; else NaN)."""
    path = Path(path)
    id_column, text_column, _ = _guess_columns(path, id_column, text_column, train.targets)
    header = pd.read_csv(path, nrows=0).columns
    present = [t for t in train.targets if t in header]
    if present and len(present) != len(train.targets):
        missing = [t for t in train.targets if t not in header]
        raise InputError(f"has some target columns but not {', '.join(missing)}", file=path)
    if present:
        return load_items(path, id_column, text_column, train.targets)
    # no labels: read id and text only (a dummy all-zero score column satisfies the reader)
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    for column in (id_column, text_column):
        if column not in raw.columns:
            raise InputError(f"missing column (columns: {', '.join(raw.columns)})", file=path, column=column)
    items = pd.DataFrame({"id": raw[id_column].astype(str), "text": raw[text_column].astype(str)})
    for t in train.targets:
        items[t] = np.nan
    return ItemTable(items, list(train.targets), str(path))


def item_folds(table: ItemTable, fold_map: str | Path | None, n_folds: int = 5, seed: int = 42) -> np.ndarray:
    """Fold per item: from the map (every id must be in it) or made (shuffled K-fold)."""
    if fold_map is not None:
        return import_fold_map(fold_map, table.items["id"]).folds
    return make_folds(table.items[["id"]], n_folds=n_folds, seed=seed, group_column="id")


def load_run_data(data, test: str | None = None) -> tuple[ItemTable, np.ndarray, ItemTable | None, str]:
    """From an ``AbsoluteData`` section: the training table, its folds, the test table (``test``
    overrides ``data.test``) and a line saying where the folds came from."""
    folder = Path(data.dir) if data.dir else None
    train_path = Path(data.train) if data.train else find_train_file(folder) if folder else None
    if train_path is None:
        raise InputError("no training table: give a data folder or data.train")
    table = load_items(train_path, data.id_column, data.text_column, data.targets)
    fold_map = data.fold_map or (find_fold_map(folder) if folder else None)
    folds = item_folds(table, fold_map, data.n_folds, data.fold_seed)
    where = f"folds from {fold_map}" if fold_map else f"{data.n_folds} folds made (seed {data.fold_seed})"
    test_path = test or data.test
    test_table = load_test_items(test_path, table, data.id_column, data.text_column) if test_path else None
    return table, folds, test_table, where
