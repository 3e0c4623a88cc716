"""Comparative scoring of unseen items (Liusie, Raina et al.: product-of-experts BT).

N new items are each compared with a few *anchors* (training items whose scores are known),
the comparisons chosen by the scores issue's anchor design
(:func:`prefkit.scores.design.anchor_design` with the anchors given: about 4 per item, so
about 4N comparisons). A pair model gives P(u beats v) for every chosen pair; the soft
outcomes go to the Bradley-Terry fitter (:func:`prefkit.scores.bt.fit`, ties as half a
win, vote-share outcomes) together with every pair of anchors at its known outcome
sigmoid(gamma (y_a - y_b)) with a large weight: the anchors act as strong priors that pin
the scale. The fitted scores are mapped to the label scale by the line through the
anchors' (fitted, known) scores.

:func:`dense_scores` is the reference: every pair of a set of items compared (N(N-1)/2)
and fitted the same way, without anchors (a ranking only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from prefkit.absolute.softbt import soft_targets
from prefkit.metrics import spearman
from prefkit.scores.bt import fit
from prefkit.scores.data import Comparisons
from prefkit.scores.design import anchor_design

PairModel = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (positions u, positions v) -> P(u beats v)


@dataclass
class ComparativeResult:
    scores: np.ndarray  # one per new item, on the anchors' scale
    n_comparisons: int  # pair-model calls (new items against anchors)
    i: np.ndarray  # the design's rows (positions: new items 0..N-1, anchors N..N+A-1)
    j: np.ndarray


def choose_anchors(known_scores: np.ndarray, n_anchors: int, rng: np.random.Generator) -> np.ndarray:
    """``n_anchors`` of the known items, one drawn at random from each equal-count score band
    (anchors spread over the whole scale)."""
    known_scores = np.asarray(known_scores, dtype=float)
    n_anchors = min(n_anchors, len(known_scores))
    bands = np.array_split(np.argsort(known_scores, kind="stable"), n_anchors)
    return np.array([rng.choice(band) for band in bands], dtype=np.int64)


def spread_order(anchor_pos: np.ndarray, anchor_scores: np.ndarray, per_item: int) -> np.ndarray:
    """Anchors ordered so that every run of ``per_item`` consecutive ones (what the anchor design
    gives one item) spans the score range: sorted by score, then dealt in ``per_item`` strides
    (16 anchors, 4 per item: ranks 0 4 8 12, 1 5 9 13, ...). Anchors of one narrow band would
    only bound an item that beats (or loses to) all of them."""
    by_score = np.asarray(anchor_pos)[np.argsort(anchor_scores, kind="stable")]
    stride = max(1, len(by_score) // max(per_item, 1))
    return by_score[np.argsort(np.arange(len(by_score)) % stride, kind="stable")]


def _soft_comparisons(n_items: int, i: np.ndarray, j: np.ndarray, p: np.ndarray, weight: np.ndarray | None = None) -> Comparisons:
    p = np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    y = np.stack([p, 1.0 - p, np.zeros_like(p)], axis=1)
    return Comparisons([str(k) for k in range(n_items)], i, j, y, weight=weight)


def comparative_scores(
    pair_model: PairModel,
    n_new: int,
    anchor_scores: np.ndarray,
    anchors_per_item: int = 4,
    gamma: float = 1.0,
    anchor_weight: float = 20.0,
    l2: float = 1e-3,
    seed: int = 0,
) -> ComparativeResult:
    """Scores of ``n_new`` items from the pair model against anchors with ``anchor_scores``.

    ``pair_model(u, v)`` gets positions: ``0..n_new-1`` the new items, ``n_new + a`` anchor
    ``a``. ``gamma``: the scale on which the pair model was trained (P = sigmoid(gamma dy)),
    used for the anchors' own outcomes. ``anchor_weight``: how many comparisons each anchor
    pair counts as (large: anchors nearly fixed).
    """
    anchor_scores = np.asarray(anchor_scores, dtype=float)
    n_anchors = len(anchor_scores)
    n_items = n_new + n_anchors
    anchor_pos = np.arange(n_new, n_items)
    i, j = anchor_design(n_items, anchors_per_item, anchors=spread_order(anchor_pos, anchor_scores, anchors_per_item), rng=seed)
    new_rows = (i < n_new) | (j < n_new)  # the design's anchor ring is replaced by all anchor pairs
    i, j = i[new_rows], j[new_rows]
    p = pair_model(i, j)
    ai, aj = np.triu_indices(n_anchors, k=1)
    p_anchor = soft_targets(anchor_scores[ai], anchor_scores[aj], gamma)
    comp = _soft_comparisons(
        n_items,
        np.concatenate([i, anchor_pos[ai]]),
        np.concatenate([j, anchor_pos[aj]]),
        np.concatenate([p, p_anchor]),
        np.concatenate([np.ones(len(i)), np.full(len(ai), anchor_weight)]),
    )
    fitted = fit(comp, ties="half", l2=l2, se=False).scores
    slope, intercept = np.polyfit(fitted[anchor_pos], anchor_scores, 1)  # BT units -> the anchors' scale
    return ComparativeResult(slope * fitted[:n_new] + intercept, int(len(i)), i, j)


def dense_scores(pair_model: PairModel, n_items: int, l2: float = 1e-3) -> np.ndarray:
    """BT scores of ``n_items`` items from all N(N-1)/2 pairs (a ranking: mean zero, BT units)."""
    i, j = np.triu_indices(n_items, k=1)
    return fit(_soft_comparisons(n_items, i, j, pair_model(i, j)), ties="half", l2=l2, se=False).scores


# ---------------------------------------------------------------------------------------------
# The comparison of scoring routes on held-out folds (prefkit absolute compare)


def compare_fold(cfg, x_train: np.ndarray, y_train: np.ndarray, x_new: np.ndarray, y_new: np.ndarray, seed: int) -> dict:
    """Spearman with the true scores of unseen items (one target) for: a regressor on the labels,
    the soft-BT scalar scorer, and 4N comparative scoring with the soft-BT pair model; on a
    subset of the unseen items also all-pairs (dense) comparisons, with 4N and the scalar
    scorer on the same subset."""
    import torch

    from prefkit.absolute.heads import PairHead, ScorerHead, fit_regressor, pair_probabilities, predict
    from prefkit.absolute.two_stage import Standardiser, train_on_pairs

    torch.set_num_threads(cfg.threads)
    c = cfg.comparative
    scale = Standardiser.fit(y_train.reshape(-1, 1))
    z = scale(y_train.reshape(-1, 1))
    torch.manual_seed(seed)
    regressor = ScorerHead(x_train.shape[1], cfg.head.hidden, 1, cfg.head.dropout)
    fit_regressor(regressor, x_train, z, cfg.fit, seed)
    scorer = train_on_pairs(cfg, ScorerHead, x_train, z, seed)
    pair_head = train_on_pairs(cfg, PairHead, x_train, z, seed)

    rng = np.random.default_rng(seed)
    anchors = choose_anchors(z[:, 0], c.n_anchors, rng)
    pool = np.concatenate([x_new, x_train[anchors]])
    pair_model = lambda u, v: pair_probabilities(pair_head, pool[u], pool[v])  # noqa: E731
    four_n = comparative_scores(pair_model, len(x_new), z[anchors, 0], c.anchors_per_item, cfg.pairs.gamma, c.anchor_weight, seed=seed)
    scalar = predict(scorer, x_new)[:, 0]
    out = {
        "spearman_regression": spearman(predict(regressor, x_new)[:, 0], y_new),
        "spearman_soft_bt": spearman(scalar, y_new),
        "spearman_4n": spearman(four_n.scores, y_new),
        "comparisons_4n": four_n.n_comparisons,
        "n_new": int(len(x_new)),
    }
    m = min(c.dense_subset, len(x_new))
    if m >= 3:
        sub = rng.choice(len(x_new), size=m, replace=False)
        dense = dense_scores(lambda u, v: pair_probabilities(pair_head, x_new[sub][u], x_new[sub][v]), m)
        out.update(
            subset_n=int(m),
            subset_comparisons_dense=int(m * (m - 1) // 2),
            subset_spearman_dense=spearman(dense, y_new[sub]),
            subset_spearman_4n=spearman(four_n.scores[sub], y_new[sub]),
            subset_spearman_soft_bt=spearman(scalar[sub], y_new[sub]),
        )
    return out


def run_compare(cfg, table, folds: np.ndarray, progress: bool = True) -> dict:
    """:func:`compare_fold` on every validation fold; the mean of each figure over folds, and per fold."""
    from prefkit.absolute.two_stage import embed_items
    from prefkit.data.folds import fold_split, validation_folds
    from prefkit.errors import InputError
    from prefkit.progress import progress_bar

    target = cfg.comparative.target or table.targets[0]
    if target not in table.targets:
        raise InputError(f"comparative.target {target!r} is not a target column ({', '.join(table.targets)})")
    x = embed_items(cfg, table.texts, progress)
    y = table.items[target].to_numpy(dtype=float)
    per_fold = []
    run_folds = validation_folds(folds)
    bar = progress_bar(total=len(run_folds), desc="folds", unit="fold", disable=not progress)
    for k in run_folds:
        train, valid = fold_split(folds, k)
        per_fold.append({"fold": k, **compare_fold(cfg, x[train], y[train], x[valid], y[valid], cfg.seed + k)})
        bar.update(1)
    bar.close()
    keys = [k for k in per_fold[0] if k != "fold"]
    mean = {k: float(np.mean([f[k] for f in per_fold])) for k in keys}
    return {"target": target, "mean": mean, "folds": per_fold}
