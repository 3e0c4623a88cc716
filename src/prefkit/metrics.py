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


# ---------------------------------------------------------------------------------------
# Absolute scores (regression on one or more targets)


def _columns(values) -> np.ndarray:
    """``(n,)`` or ``(n, targets)`` as a float ``(n, targets)`` matrix."""
    a = np.asarray(values, dtype=float)
    return a.reshape(len(a), -1)


def rmse(y_true, y_pred) -> float:
    """Root mean squared error over every cell (one target: the usual RMSE)."""
    t, p = _columns(y_true), _columns(y_pred)
    return float(np.sqrt(np.mean((t - p) ** 2)))


def column_rmse(y_true, y_pred) -> np.ndarray:
    """RMSE of each target column."""
    t, p = _columns(y_true), _columns(y_pred)
    return np.sqrt(np.mean((t - p) ** 2, axis=0))


def mcrmse(y_true, y_pred) -> float:
    """Mean column-wise RMSE (the FB3 competition metric): RMSE per target, then their mean."""
    return float(column_rmse(y_true, y_pred).mean())


def round_to_grid(values, step: float = 0.5, low: float | None = None, high: float | None = None) -> np.ndarray:
    """Nearest multiple of ``step`` (FB3 scores: 0.5 steps), clipped to ``[low, high]``."""
    grid = np.round(np.asarray(values, dtype=float) / step) * step
    return np.clip(grid, low, high) if low is not None or high is not None else grid


def qwk(y_true, y_pred, step: float = 0.5) -> float:
    """Quadratic weighted kappa of one target after both sides are rounded to the label grid
    (``step``); predictions are clipped to the range of the true labels first."""
    from sklearn.metrics import cohen_kappa_score

    t = np.asarray(y_true, dtype=float).ravel()
    p = round_to_grid(y_pred, step, t.min(), t.max()).ravel()
    t_codes = np.round(round_to_grid(t, step) / step).astype(int)
    p_codes = np.round(p / step).astype(int)
    if len(np.unique(np.concatenate([t_codes, p_codes]))) < 2:
        return float("nan")
    return float(cohen_kappa_score(t_codes, p_codes, weights="quadratic"))


def spearman(x, y) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()).statistic)


def pearson(x, y) -> float:
    from scipy.stats import pearsonr

    return float(pearsonr(np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()).statistic)


def absolute_summary(y_true, y_pred, names=None, step: float | None = 0.5) -> dict:
    """``mcrmse``, ``rmse`` and per target ``rmse_<t>``, ``qwk_<t>`` (on the ``step`` grid;
    skipped when ``step`` is None), ``spearman_<t>``, ``pearson_<t>``; ``n``."""
    t, p = _columns(y_true), _columns(y_pred)
    if t.shape != p.shape:
        raise ValueError(f"targets {t.shape} and predictions {p.shape} differ in shape")
    names = list(names) if names is not None else [f"t{k}" for k in range(t.shape[1])]
    per_column = column_rmse(t, p)
    out: dict = {"mcrmse": float(per_column.mean()), "rmse": rmse(t, p), "n": int(len(t))}
    for k, name in enumerate(names):
        out[f"rmse_{name}"] = float(per_column[k])
        if step is not None:
            out[f"qwk_{name}"] = qwk(t[:, k], p[:, k], step)
        out[f"spearman_{name}"] = spearman(t[:, k], p[:, k])
        out[f"pearson_{name}"] = pearson(t[:, k], p[:, k])
    return out
