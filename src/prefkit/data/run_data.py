"""The data a run config names: a Kaggle-layout folder and/or explicit files."""

from __future__ import annotations

import pandas as pd

from prefkit.data.kaggle import locate_kaggle_files
from prefkit.data.formats import read_pairs
from prefkit.errors import InputError


def load_run_data(cfg) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(train pairs, test pairs or None) from ``cfg.data``: a Kaggle-layout folder
    (``data.dir``) and/or explicit files (``data.train``, ``data.test``) in ``data.format``."""
    train_path, test_path = cfg.data.train, cfg.data.test
    if cfg.data.dir:
        found = locate_kaggle_files(cfg.data.dir)
        train_path = train_path or str(found.train)
        test_path = test_path or (str(found.test) if found.test else None)
    if not train_path:
        raise InputError("no training data: set data.dir (Kaggle layout) or data.train")
    options = cfg.data.reader_options()
    train = read_pairs(train_path, cfg.data.format, **options)
    if cfg.data.max_train_rows and len(train) > cfg.data.max_train_rows:
        train = train.iloc[: cfg.data.max_train_rows].reset_index(drop=True)
    test = read_pairs(test_path, cfg.data.format, **options) if test_path else None
    return train, test
