"""The one prediction format every model writes and the stacker reads.

A prediction file is a CSV with columns ``id, p_a, p_b, p_tie, model, fold``:
three probabilities per pair, the model's name, and the fold whose held-out part
the row came from (OOF files) or ``-1`` (test predictions averaged over folds).
A model's run folder holds ``oof.csv`` and, when a test set was given, ``test.csv``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from prefkit.atomic import atomic_path
from prefkit.errors import InputError
from prefkit.schema import LABELS, check_id_table

PRED_COLUMNS = ("id", *LABELS, "model", "fold")
OOF_FILE = "oof.csv"
TEST_FILE = "test.csv"


def make_predictions(ids, probs: np.ndarray, model: str, folds) -> pd.DataFrame:
    probs = np.asarray(probs, dtype=float)
    return pd.DataFrame(
        {
            "id": [str(i) for i in ids],
            "p_a": probs[:, 0],
            "p_b": probs[:, 1],
            "p_tie": probs[:, 2],
            "model": model,
            "fold": np.broadcast_to(np.asarray(folds, dtype=int), (len(probs),)),
        }
    )


def prob_matrix(preds: pd.DataFrame) -> np.ndarray:
    return preds[list(LABELS)].to_numpy(dtype=float)


def atomic_write_csv(df: pd.DataFrame, path: str | Path, **kwargs) -> Path:
    """A CSV replaced whole (:func:`prefkit.atomic.atomic_path`): never a half-written file."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.8g", **kwargs)
    return Path(path)


def write_predictions(preds: pd.DataFrame, path: str | Path) -> Path:
    validate_predictions(preds, str(path))
    return atomic_write_csv(preds[list(PRED_COLUMNS)], path)


def read_predictions(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise InputError("prediction file not found", file=path)
    if path.is_dir():
        raise InputError("expected a prediction file, found a folder", file=path)
    try:
        preds = pd.read_csv(path, dtype={"id": str, "model": str})
    except UnicodeDecodeError:
        raise InputError("not a text CSV (binary or not UTF-8)", file=path) from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError, ValueError, OSError) as err:
        raise InputError(f"not a readable CSV ({' '.join(str(err).split())[:200]})", file=path) from None
    return validate_predictions(preds, str(path))


def validate_predictions(preds: pd.DataFrame, source: str = "predictions") -> pd.DataFrame:
    check_id_table(preds, PRED_COLUMNS, source)
    folds = pd.to_numeric(preds["fold"], errors="coerce").to_numpy(dtype=float)
    not_int = ~np.isfinite(folds) | (folds != np.round(folds))
    if not_int.any():
        row = int(np.flatnonzero(not_int)[0])
        raise InputError(f"fold {str(preds['fold'].iloc[row])!r} is not an integer (a truncated file?)", file=source, row=row + 1, column="fold")
    probs = np.column_stack([pd.to_numeric(preds[c], errors="coerce").to_numpy(dtype=float) for c in LABELS])
    bad = ~np.isfinite(probs).all(axis=1) | (probs < 0).any(axis=1) | ~np.isclose(probs.sum(axis=1), 1.0, atol=1e-4)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(f"probabilities {probs[row].tolist()} are not a distribution", file=source, row=row + 1, column="p_a")
    return preds
