"""Scores for 3-way preference predictions (classes 0 = A wins, 1 = B wins, 2 = tie).

``labels`` everywhere may be hard class indices (shape ``(n,)``) or probability targets
(shape ``(n, 3)``: one-hot or soft labels, as in the pair table's ``p_a, p_b, p_tie``).
Predictions are ``(n, 3)`` probabilities; like the Kaggle metric, log loss rescales each
row to sum to one and clips to ``[eps, 1 - eps]`` before scoring. There are always three
classes, so a sample without ties scores without complaint.
"""

from __future__ import annotations

import math

import numpy as np

CLASSES = (0, 1, 2)
CLASS_NAMES = ("a", "b", "tie")


def _probs(probs, eps: float | None = None) -> np.ndarray:
    p = np.asarray(probs, dtype=float)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"predictions must have shape (n, 3), got {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("predictions must be finite and non-negative")
    sums = p.sum(axis=1, keepdims=True)
    p = np.divide(p, sums, out=np.full_like(p, 1.0 / 3.0), where=sums > 0)
    if eps is not None:
        p = np.clip(p, eps, 1.0 - eps)
    return p


def _targets(labels, n: int) -> np.ndarray:
    """Labels as an ``(n, 3)`` probability matrix."""
    y = np.asarray(labels)
    if y.ndim == 1:
        if y.dtype.kind == "f":
            if not np.isfinite(y).all() or not np.equal(np.mod(y, 1), 0).all():
                raise ValueError("hard labels must be the integers 0, 1, 2")
        y = y.astype(int)
        if ((y < 0) | (y > 2)).any():
            raise ValueError("hard labels must be 0 (A), 1 (B) or 2 (tie)")
        t = np.zeros((len(y), 3))
        t[np.arange(len(y)), y] = 1.0
    elif y.ndim == 2 and y.shape[1] == 3:
        t = y.astype(float)
        if not np.isfinite(t).all():
            raise ValueError("probability targets contain NaN (unlabelled rows?)")
    else:
        raise ValueError(f"labels must have shape (n,) or (n, 3), got {y.shape}")
    if len(t) != n:
        raise ValueError(f"{len(t)} labels but {n} predictions")
    return t


def hard(labels) -> np.ndarray:
    """Class indices from hard labels or probability targets (argmax)."""
    y = np.asarray(labels)
    return _targets(y, len(y)).argmax(axis=1)


def _weights(weights, n: int) -> np.ndarray | None:
    if weights is None:
        return None
    w = np.asarray(weights, dtype=float).reshape(-1)
    if len(w) != n:
        raise ValueError(f"{len(w)} weights for {n} rows")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be finite, >= 0 and not all zero")
    return w


def log_loss(labels, probs, weights=None, eps: float = 1e-15) -> float:
    """Mean multiclass log loss (natural log). Hard labels go through scikit-learn."""
    p = _probs(probs, eps)
    w = _weights(weights, len(p))
    y = np.asarray(labels)
    if len(p) == 0:
        raise ValueError("no rows to score")
    if y.ndim == 1:
        from sklearn.metrics import log_loss as sk_log_loss

        hard_y = np.argmax(_targets(y, len(p)), axis=1)  # validates the labels
        return float(sk_log_loss(hard_y, p, labels=list(CLASSES), sample_weight=w))
    t = _targets(y, len(p))
    per_row = -(t * np.log(p)).sum(axis=1)
    return float(np.average(per_row, weights=w))


def accuracy(labels, probs, weights=None) -> float:
    """Share of rows whose most probable class is the (argmax) label."""
    p = _probs(probs)
    y = hard(labels)
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels but {len(p)} predictions")
    return float(np.average(p.argmax(axis=1) == y, weights=_weights(weights, len(p))))


def per_class_accuracy(labels, probs) -> dict[str, float]:
    """Accuracy within each true class (recall): ``{"a": .., "b": .., "tie": ..}``; NaN if absent."""
    p = _probs(probs)
    y = hard(labels)
    pred = p.argmax(axis=1)
    out = {}
    for k, name in zip(CLASSES, CLASS_NAMES):
        mask = y == k
        out[name] = float(np.mean(pred[mask] == k)) if mask.any() else float("nan")
    return out


def summary(labels, probs, weights=None) -> dict:
    """``log_loss, accuracy, acc_a, acc_b, acc_tie, n`` in one dict."""
    per = per_class_accuracy(labels, probs)
    return {
        "log_loss": log_loss(labels, probs, weights),
        "accuracy": accuracy(labels, probs, weights),
        "acc_a": per["a"],
        "acc_b": per["b"],
        "acc_tie": per["tie"],
        "n": int(len(np.asarray(probs))),
    }


def class_prior(labels, weights=None) -> np.ndarray:
    """Mean label distribution (A, B, tie)."""
    y = np.asarray(labels)
    t = _targets(y, len(y))
    return np.average(t, axis=0, weights=_weights(weights, len(t)))


def prior_log_loss(train_labels, test_labels=None, weights=None, eps: float = 1e-15) -> float:
    """Log loss of always predicting the class prior of ``train_labels``, scored on
    ``test_labels`` (on the training labels themselves when not given)."""
    prior = class_prior(train_labels)
    target = train_labels if test_labels is None else test_labels
    n = len(np.asarray(target))
    return log_loss(target, np.tile(prior, (n, 1)), weights=weights, eps=eps)


def uniform_log_loss() -> float:
    return math.log(3.0)


def calibration_bins(target, prob, n_bins: int = 10) -> dict[str, np.ndarray]:
    """One class's reliability data: equal-width bins of predicted probability with the mean
    prediction, observed frequency (mean target) and count per bin (empty bins: NaN, 0)."""
    target = np.asarray(target, dtype=float)
    prob = np.asarray(prob, dtype=float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(prob, edges[1:-1], right=False), 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    sum_p = np.bincount(idx, weights=prob, minlength=n_bins)
    sum_t = np.bincount(idx, weights=target, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.where(counts > 0, sum_p / np.maximum(counts, 1), np.nan)
        freq = np.where(counts > 0, sum_t / np.maximum(counts, 1), np.nan)
    return {"edges": edges, "mean_pred": mean_p, "observed": freq, "count": counts}


def class_ece(target, prob, n_bins: int = 10) -> float:
    """Expected calibration error of one class: count-weighted |observed - predicted|."""
    b = calibration_bins(target, prob, n_bins)
    n = b["count"].sum()
    if n == 0:
        return float("nan")
    gaps = np.abs(np.nan_to_num(b["observed"] - b["mean_pred"]))
    return float((gaps * b["count"]).sum() / n)
