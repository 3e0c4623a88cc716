"""Kaggle submission files: built from test predictions, validated, written atomically.

A submission has the columns of ``sample_submission.csv`` (``id, winner_model_a,
winner_model_b, winner_tie``) and its ids in its order; a test row the sample lists twice
(a repeated test row) is listed twice with the same prediction. Probabilities are clipped
to ``[clip, 1 - clip]`` and rows renormalised to sum to one, so no row can cost an
unbounded log loss.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from prefkit.data.kaggle import LABEL_COLUMNS, read_sample_submission, read_solution
from prefkit.errors import InputError
from prefkit.predictions import atomic_write_csv
from prefkit.schema import LABELS

SUBMISSION_COLUMNS = ("id", *LABEL_COLUMNS)
SUM_TOLERANCE = 1e-5


def default_submission_path(run_name: str) -> Path:
    return Path("submissions") / run_name / "submission.csv"


def sample_submission_for(cfg) -> Path | None:
    """``data.sample_submission``, else the one in the Kaggle folder ``data.dir`` (or None)."""
    if cfg.data.sample_submission:
        return Path(cfg.data.sample_submission)
    if cfg.data.dir:
        from prefkit.data.kaggle import locate_kaggle_files

        return locate_kaggle_files(cfg.data.dir).sample_submission
    return None


def clip_probs(probs: np.ndarray, clip: float) -> np.ndarray:
    """Clipped to ``[clip, 1 - clip]``, then each row rescaled to sum to one."""
    p = np.clip(np.asarray(probs, dtype=float), clip, 1.0 - clip)
    return p / p.sum(axis=1, keepdims=True)


def _prediction_lookup(preds: pd.DataFrame, source: str) -> pd.DataFrame:
    """Predictions indexed by id (one row per id; finite probabilities checked)."""
    missing = [c for c in ("id", *LABELS) if c not in preds.columns]
    if missing:
        raise InputError(f"missing column(s) {missing}", file=source)
    ids = preds["id"].astype(str)
    dup = ids.duplicated().to_numpy()
    if dup.any():
        row = int(np.flatnonzero(dup)[0])
        raise InputError(f"duplicate id {ids.iloc[row]!r}", file=source, row=row + 1, column="id")
    probs = np.column_stack([pd.to_numeric(preds[c], errors="coerce").to_numpy(dtype=float) for c in LABELS])
    bad = ~np.isfinite(probs)
    if bad.any():
        row, col = (int(v[0]) for v in np.nonzero(bad))
        cell = preds[LABELS[col]].iloc[row]
        raise InputError(f"probability {cell!r} is not a finite number", file=source, row=row + 1, column=LABELS[col])
    if (probs < 0).any():
        row, col = (int(v[0]) for v in np.nonzero(probs < 0))
        raise InputError(f"probability {probs[row, col]} is negative", file=source, row=row + 1, column=LABELS[col])
    return pd.DataFrame(probs, index=pd.Index(ids.to_numpy(), name="id"), columns=list(LABELS))


def build_submission(test_preds: pd.DataFrame, sample: pd.DataFrame, clip: float = 1e-6, source: str = "test predictions") -> pd.DataFrame:
    """The submission table: ``sample``'s ids in its order, probabilities from ``test_preds``
    (matched by id), clipped and renormalised. Every sample id needs a prediction and every
    prediction a sample id."""
    lookup = _prediction_lookup(test_preds, source)
    sample_ids = sample["id"].astype(str)
    missing = pd.Index(sample_ids.unique()).difference(lookup.index)
    if len(missing):
        raise InputError(f"{len(missing)} id(s) of the sample submission have no prediction, first {missing[0]!r}", file=source, column="id")
    extra = lookup.index.difference(pd.Index(sample_ids.unique()))
    if len(extra):
        raise InputError(f"{len(extra)} predicted id(s) are not in the sample submission, first {extra[0]!r}", file=source, column="id")
    probs = clip_probs(lookup.loc[sample_ids].to_numpy(), clip)
    out = pd.DataFrame({"id": sample_ids.to_numpy()})
    for j, col in enumerate(LABEL_COLUMNS):
        out[col] = probs[:, j]
    return out


def write_submission(
    test_preds: pd.DataFrame,
    sample_submission_path: str | Path,
    out_path: str | Path | None = None,
    clip: float = 1e-6,
    run: str = "run",
) -> Path:
    """Build (:func:`build_submission`), check (:func:`check_submission`) and atomically
    write a submission; ``out_path`` defaults to ``submissions/<run>/submission.csv``."""
    sample = read_sample_submission(sample_submission_path)
    table = build_submission(test_preds, sample, clip)
    out = Path(out_path) if out_path is not None else default_submission_path(run)
    check_submission(table, sample, source=str(out))
    return atomic_write_csv(table, out)


def check_submission(table: pd.DataFrame, sample: pd.DataFrame, source: str = "submission") -> pd.DataFrame:
    """Raise :class:`InputError` (naming row and column) unless ``table`` is a valid
    submission for ``sample``: same columns, same ids in the same order, probabilities
    finite, in [0, 1], each row summing to one."""
    missing = [c for c in SUBMISSION_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"missing column {missing[0]!r}; expected {list(SUBMISSION_COLUMNS)}", file=source, column=missing[0])
    extra = [c for c in table.columns if c not in SUBMISSION_COLUMNS]
    if extra:
        raise InputError(f"unexpected column {extra[0]!r}; expected {list(SUBMISSION_COLUMNS)}", file=source, column=str(extra[0]))
    _check_ids(table["id"].astype(str).tolist(), sample["id"].astype(str).tolist(), source)
    for col in LABEL_COLUMNS:
        values = pd.to_numeric(table[col], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise InputError(f"{table[col].iloc[row]!r} is not a finite number", file=source, row=row + 1, column=col)
        out = (values < 0) | (values > 1)
        if out.any():
            row = int(np.flatnonzero(out)[0])
            raise InputError(f"probability {values[row]:g} is outside [0, 1]", file=source, row=row + 1, column=col)
    sums = table[list(LABEL_COLUMNS)].to_numpy(dtype=float).sum(axis=1)
    off = np.abs(sums - 1.0) > SUM_TOLERANCE
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise InputError(f"probabilities sum to {sums[row]:.6g}, not 1", file=source, row=row + 1, column=",".join(LABEL_COLUMNS))
    return table


def _check_ids(ids: list[str], expected: list[str], source: str) -> None:
    allowed = Counter(expected)
    seen: Counter = Counter()
    for i, id_ in enumerate(ids):
        if id_ not in allowed:
            raise InputError(f"id {id_!r} is not in the sample submission", file=source, row=i + 1, column="id")
        seen[id_] += 1
        if seen[id_] > allowed[id_]:
            raise InputError(f"duplicate id {id_!r}", file=source, row=i + 1, column="id")
    absent = [e for e in allowed if e not in seen]
    if absent:
        raise InputError(f"{len(absent)} id(s) of the sample submission are missing, first {absent[0]!r}", file=source, column="id")
    for i, (id_, want) in enumerate(zip(ids, expected)):
        if id_ != want:
            raise InputError(f"id {id_!r} is out of order: the sample submission has {want!r} here", file=source, row=i + 1, column="id")
    if len(ids) != len(expected):  # pragma: no cover - implied by the counts above
        raise InputError(f"{len(ids)} rows, the sample submission has {len(expected)}", file=source)


def read_submission_csv(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", file=path)
    try:
        return pd.read_csv(path, dtype={"id": str}, keep_default_na=False, na_values=[""])
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise InputError(f"not a readable CSV ({str(err).splitlines()[0]})", file=path) from None


def validate_submission(path: str | Path, sample_submission_path: str | Path) -> pd.DataFrame:
    """Check an existing submission file against ``sample_submission.csv``
    (:func:`check_submission`); returns the table."""
    table = read_submission_csv(path)
    return check_submission(table, read_sample_submission(sample_submission_path), source=str(path))


def read_probabilities(path: str | Path) -> pd.DataFrame:
    """``id, p_a, p_b, p_tie`` from a prediction file (:mod:`prefkit.predictions`) or a
    submission (``winner_model_a, ...``); one row per id (a repeated id must repeat its
    probabilities)."""
    table = read_submission_csv(path)
    names = LABELS
    if all(c in table.columns for c in LABEL_COLUMNS):
        table = table.rename(columns=dict(zip(LABEL_COLUMNS, LABELS)))
        names = LABEL_COLUMNS
    elif not all(c in table.columns for c in LABELS):
        raise InputError(f"expected columns id and {list(LABELS)} or {list(LABEL_COLUMNS)}", file=path)
    if "id" not in table.columns:
        raise InputError("missing column 'id'", file=path, column="id")
    table = table[["id", *LABELS]].copy()
    table["id"] = table["id"].astype(str)
    repeated = table.duplicated("id", keep="first")
    conflict = repeated & ~table.duplicated(keep="first")
    if conflict.any():
        row = int(np.flatnonzero(conflict.to_numpy())[0])
        raise InputError(f"id {table['id'].iloc[row]!r} repeats with different probabilities", file=path, row=row + 1, column="id")
    _prediction_lookup(table.drop_duplicates("id"), str(path))  # finite, non-negative
    check_distributions(table[list(LABELS)], str(path), columns=names)
    return table[~repeated.to_numpy()].reset_index(drop=True)


def check_distributions(probs: pd.DataFrame, source: str, columns=LABELS) -> None:
    """Each row a probability distribution, as :func:`check_submission` demands: values
    in [0, 1] summing to one (within ``SUM_TOLERANCE``); the first bad row is named."""
    values = probs.to_numpy(dtype=float)
    outside = (values < 0) | (values > 1)
    if outside.any():
        row, col = (int(v[0]) for v in np.nonzero(outside))
        raise InputError(f"probability {values[row, col]:g} is outside [0, 1]", file=source, row=row + 1, column=columns[col])
    sums = values.sum(axis=1)
    off = np.abs(sums - 1.0) > SUM_TOLERANCE
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise InputError(f"probabilities sum to {sums[row]:.6g}, not 1", file=source, row=row + 1, column=",".join(columns))


def score_file(pred_path: str | Path, solution_path: str | Path) -> tuple[dict, np.ndarray, np.ndarray]:
    """Scores of a prediction or submission file against a solution file (every solution
    row, repeated ids included, as Kaggle scores): ``(summary, labels, probs)``."""
    from prefkit.metrics import summary

    preds = read_probabilities(pred_path).set_index("id")
    solution = read_solution(solution_path)
    ids = solution["id"].astype(str)
    missing = pd.Index(ids.unique()).difference(preds.index)
    if len(missing):
        raise InputError(f"{len(missing)} solution id(s) have no prediction, first {missing[0]!r}", file=pred_path, column="id")
    probs = preds.loc[ids, list(LABELS)].to_numpy(dtype=float)
    labels = solution[list(LABELS)].to_numpy(dtype=float)
    return summary(labels, probs), labels, probs


__all__ = [
    "build_submission",
    "check_submission",
    "clip_probs",
    "default_submission_path",
    "read_probabilities",
    "sample_submission_for",
    "score_file",
    "validate_submission",
    "write_submission",
]
