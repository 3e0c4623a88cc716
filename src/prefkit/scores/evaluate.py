"""Held-out comparison log loss: K folds over comparisons, each model fitted on the other
folds and scored (3-way log loss; with no ties in the data it is the binary one) on the
held-out fold."""

from __future__ import annotations

import numpy as np

from prefkit.scores.bt import fit, fold_labels, win_rate
from prefkit.scores.data import Comparisons


def constant_log_loss(train: Comparisons, test: Comparisons) -> float:
    """The log loss of predicting the training outcome shares for every comparison."""
    shares = np.clip(np.average(train.y, axis=0, weights=train.weight), 1e-15, 1)
    return float(np.average(-(test.y * np.log(shares)).sum(axis=1), weights=test.weight))


def heldout_log_loss(
    comp: Comparisons,
    ties=("davidson",),
    *,
    l2: float | str = "cv",
    home: bool = False,
    use_covariates: bool = False,
    folds: int = 5,
    seed: int = 0,
    alpha: float = 1.0,
    progress: bool = False,
) -> dict[str, float]:
    """{``bt_<ties>``: loss for each tie model, ``win_rate``, ``constant``}: weighted mean
    held-out log loss over ``folds`` folds of comparisons. BT's L2 strength is chosen by CV
    inside each training part when ``l2="cv"``; held-out items never seen in training get
    score 0 (the prior mean), which needs ``l2 > 0`` or ``"cv"`` when that happens."""
    from prefkit.progress import progress_bar

    ties = (ties,) if isinstance(ties, str) else tuple(ties)
    fold = fold_labels(len(comp), folds, seed)
    totals = {f"bt_{t}": 0.0 for t in ties} | {"win_rate": 0.0, "constant": 0.0}
    chosen: dict[str, list[float]] = {t: [] for t in ties}
    weight = 0.0
    for k in progress_bar(range(folds), desc="held-out folds", disable=not progress):
        train, test = comp.subset(fold != k), comp.subset(fold == k)
        w = test.weight.sum()
        for t in ties:
            result = fit(train, t, l2, home, use_covariates, se=False, per_component=True, seed=seed + k)
            chosen[t].append(result.l2)
            totals[f"bt_{t}"] += result.log_loss(test) * w
        totals["win_rate"] += win_rate(train, alpha).log_loss(test) * w
        totals["constant"] += constant_log_loss(train, test) * w
        weight += w
    out = {name: value / weight for name, value in totals.items()}
    for t in ties:
        out[f"l2_{t}"] = float(np.median(chosen[t]))
    return out
