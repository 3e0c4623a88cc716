"""Cached feature files joined to the hand-crafted features on ``id``.

A file is Parquet (or CSV) with an ``id`` column and numeric columns, e.g. frozen-encoder
embedding features (``prefkit embed``). Column names follow the swap convention of
:mod:`prefkit.features.pair_features`: ``a_*``/``b_*`` exchange under an A/B swap,
``diff_*``/``logratio_*`` change sign, any other column is taken as unchanged by a swap.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from prefkit.errors import InputError


def read_feature_file(path: str | Path) -> pd.DataFrame:
    """One cached feature file as a float32 frame indexed by ``id`` (str)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("feature file not found", file=path)
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, dtype={"id": str})
    except Exception as err:  # pyarrow / pandas raise many types for a foreign file
        raise InputError(f"cannot read feature file ({' '.join(str(err).split())[:200]})", file=path) from None
    if "id" not in df.columns:
        raise InputError("missing column 'id'", file=path, column="id")
    ids = df["id"].astype(str)
    dup = ids.duplicated().to_numpy()
    if dup.any():
        row = int(np.flatnonzero(dup)[0])
        raise InputError(f"duplicate id {ids.iloc[row]!r}", file=path, row=row + 1, column="id")
    values = df.drop(columns="id")
    for col in values.columns:
        if not pd.api.types.is_numeric_dtype(values[col]) or pd.api.types.is_bool_dtype(values[col]):
            raise InputError(f"expected a numeric column (found {values[col].dtype})", file=path, column=str(col))
    values.index = pd.Index(ids.to_numpy(), name="id")
    values.columns = [str(c) for c in values.columns]
    return values.astype(np.float32)


def join_extra_features(features: pd.DataFrame, paths: list[str]) -> pd.DataFrame:
    """``features`` (indexed by id) with the columns of each file in ``paths`` joined on id.

    Every id of ``features`` must be in every file (extra ids are fine: one file may hold
    the train and the test pairs); column names must not repeat.
    """
    out = features
    for path in paths:
        extra = read_feature_file(path)
        clash = [c for c in extra.columns if c in out.columns]
        if clash:
            raise InputError(f"column {clash[0]!r} is already a feature (from another file or the built-in set)", file=path, column=clash[0])
        missing = out.index.difference(extra.index)
        if len(missing):
            raise InputError(f"{len(missing)} pair id(s) have no row here, first {missing[0]!r}", file=path, column="id")
        out = out.join(extra, how="left")
    return out
