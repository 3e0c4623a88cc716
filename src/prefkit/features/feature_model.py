"""LightGBM on pair features: out-of-fold and test predictions per fold.

Per fold ``k`` a 3-class LightGBM model is trained on the other folds' pairs, doubled with
their A/B swaps (``features.swap_augment``), and stopped early on the log loss of fold
``k``'s pairs (also doubled). Soft labels become three weighted hard rows (weights
``p * weight``); one-hot labels stay one row. A pair is predicted as the mean of the
model on the pair and on its swap with the A/B probabilities exchanged back
(``features.tta_swap``); test predictions are averaged over the folds.

The run folder gets ``oof.csv`` and ``test.csv`` (:mod:`prefkit.predictions`),
``folds.csv``, ``config.yaml``, ``metrics.json`` (OOF scores and per-fold results),
``reliability.png`` (OOF), ``importance.csv`` (mean gain per feature), the fold models
(``models/fold_<k>.txt``) and ``train.log``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from prefkit.config import FeaturesConfig, RunConfig, save_config
from prefkit.errors import InputError
from prefkit.features import join_extra_features, pair_features, swap_features
from prefkit.predictions import OOF_FILE, TEST_FILE, make_predictions, write_predictions
from prefkit.rundir import RunFolder
from prefkit.schema import SWAP_ORDER, label_matrix

log = logging.getLogger("prefkit.features")



@dataclass
class FeatureModelResult:
    run_dir: Path
    oof: pd.DataFrame
    test: pd.DataFrame | None
    metrics: dict
    best_iterations: list[int] = field(default_factory=list)

    @property
    def oof_log_loss(self) -> float:
        return float(self.metrics["oof"]["log_loss"])


def feature_table(pairs: pd.DataFrame, feat_cfg: FeaturesConfig) -> pd.DataFrame:
    """Hand-crafted features plus the cached ``features.extra_features`` files, one row per
    pair in ``pairs`` order (index = id)."""
    feats = pair_features(pairs)
    if feat_cfg.extra_features:
        feats = join_extra_features(feats, feat_cfg.extra_features)
    return feats


def hard_rows(labels: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training rows from (possibly soft) labels: ``(row index, class, weight)``.

    A one-hot label gives one row with the pair's weight; any other distribution gives a
    row per class with weight ``p * weight`` (classes with ``p = 0`` left out)."""
    labels = np.asarray(labels, dtype=float)
    weights = np.asarray(weights, dtype=float)
    one_hot = np.isclose(labels.max(axis=1), 1.0)
    rows_h = np.flatnonzero(one_hot)
    soft = np.flatnonzero(~one_hot)
    rows_s = np.repeat(soft, 3)
    cls_s = np.tile(np.arange(3), len(soft))
    w_s = labels[soft].reshape(-1) * np.repeat(weights[soft], 3)
    keep = w_s > 0
    rows = np.concatenate([rows_h, rows_s[keep]])
    cls = np.concatenate([labels[rows_h].argmax(axis=1), cls_s[keep]])
    w = np.concatenate([weights[rows_h], w_s[keep]])
    order = np.argsort(rows, kind="stable")
    return rows[order], cls[order], w[order]


def import_lightgbm():
    """``lightgbm``, with OpenMP threads that sleep rather than spin while waiting (unless
    ``OMP_WAIT_POLICY`` is set): on a shared or oversubscribed machine spinning threads
    make training several times slower. Takes effect when this process first loads OpenMP."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import lightgbm

    return lightgbm


def lgb_params(feat_cfg: FeaturesConfig, seed: int) -> dict:
    return {
        "objective": "multiclass",
        "num_class": 3,
        "metric": "multi_logloss",
        "learning_rate": feat_cfg.learning_rate,
        "num_leaves": feat_cfg.num_leaves,
        "min_data_in_leaf": feat_cfg.min_data_in_leaf,
        "feature_fraction": feat_cfg.feature_fraction,
        "bagging_fraction": feat_cfg.bagging_fraction,
        "bagging_freq": 1 if feat_cfg.bagging_fraction < 1 else 0,
        "lambda_l2": feat_cfg.lambda_l2,
        "num_threads": feat_cfg.num_threads,
        "seed": seed,
        "deterministic": True,
        "force_col_wise": True,
        "verbosity": -1,
    }


def _training_set(x: pd.DataFrame, labels: np.ndarray, weights: np.ndarray, swap: bool):
    """(features, class, weight) rows of a set of pairs, with their swaps appended when asked."""
    rows, cls, w = hard_rows(labels, weights)
    feats = x.iloc[rows]
    if not swap:
        return feats, cls, w
    return pd.concat([feats, swap_features(feats)]), np.concatenate([cls, SWAP_ORDER[cls]]), np.concatenate([w, w])


def predict_pairs(booster, x: pd.DataFrame, tta_swap: bool = True) -> np.ndarray:
    """Class probabilities; with ``tta_swap`` the mean over the pair and its swap."""
    it = booster.best_iteration or None
    probs = booster.predict(x, num_iteration=it)
    if tta_swap:
        swapped = booster.predict(swap_features(x), num_iteration=it)
        probs = (probs + swapped[:, SWAP_ORDER]) / 2.0
    return probs


def fit_fold(x_train, y_train, w_train, x_val, y_val, w_val, feat_cfg: FeaturesConfig, seed: int):
    """One LightGBM model, early-stopped on the validation rows' log loss."""
    lgb = import_lightgbm()

    params = lgb_params(feat_cfg, seed)
    train_set = lgb.Dataset(x_train, y_train, weight=w_train, free_raw_data=True)
    val_set = lgb.Dataset(x_val, y_val, weight=w_val, reference=train_set)
    return lgb.train(
        params,
        train_set,
        num_boost_round=feat_cfg.num_boost_round,
        valid_sets=[val_set],
        valid_names=["val"],
        callbacks=[lgb.early_stopping(feat_cfg.early_stopping_rounds, verbose=False)],
    )


def training_labels(pairs: pd.DataFrame) -> np.ndarray:
    """The label matrix; every training pair must have a label."""
    labels = label_matrix(pairs)
    unlabelled = np.isnan(labels).any(axis=1)
    if unlabelled.any():
        row = int(np.flatnonzero(unlabelled)[0])
        raise InputError(f"training pair {pairs['id'].iloc[row]!r} has no label", row=row + 1, column="p_a")
    return labels


def run_logging(run_dir: Path, filename: str) -> logging.Handler:
    """Send ``prefkit.*`` INFO lines to ``run_dir/filename`` (remove the handler when done)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / filename, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("prefkit")
    root.addHandler(handler)
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    return handler


def train_feature_model(
    cfg: RunConfig,
    pairs: pd.DataFrame | None = None,
    test_pairs: pd.DataFrame | None = None,
    folds: np.ndarray | None = None,
    force: bool = False,
) -> FeatureModelResult:
    """Train the feature model on every fold of ``pairs`` and predict ``test_pairs``.

    Without ``pairs`` the data comes from ``cfg.data``; without ``folds`` from
    ``cfg.folds`` (:func:`prefkit.data.folds.folds_for`). The run folder is written as one
    unit (:class:`prefkit.rundir.RunFolder`): a failed or killed run leaves the previous one;
    ``force`` writes into a folder that is not a feature-model run."""
    from prefkit.data.folds import folds_for
    from prefkit.data.run_data import load_run_data

    if pairs is None:
        pairs, loaded_test = load_run_data(cfg)
        test_pairs = loaded_test if test_pairs is None else test_pairs
    pairs = pairs.reset_index(drop=True)
    labels = training_labels(pairs)
    weights = pairs["weight"].to_numpy(dtype=float)
    folds = folds_for(cfg, pairs) if folds is None else np.asarray(folds, dtype=int)
    if len(folds) != len(pairs):
        raise ValueError(f"{len(folds)} folds for {len(pairs)} pairs")

    with RunFolder(cfg.run_dir, kind="features", force=force).open() as run:
        result = _train_into(run.dir, cfg, pairs, labels, weights, folds, test_pairs)
    result.run_dir = cfg.run_dir
    return result


def _train_into(run_dir: Path, cfg: RunConfig, pairs, labels, weights, folds, test_pairs) -> FeatureModelResult:
    from prefkit.data.folds import save_fold_map, validation_folds
    from prefkit.metrics import summary
    from prefkit.plots import reliability_diagram
    from prefkit.progress import progress_bar

    handler = run_logging(run_dir, "train.log")
    try:
        fc = cfg.features
        t0 = time.time()
        x = feature_table(pairs, fc)
        x_test = feature_table(test_pairs, fc) if test_pairs is not None and len(test_pairs) else None
        log.info("%s: %d pairs, %d features (%.1fs)%s", cfg.name, len(x), x.shape[1], time.time() - t0,
                 f"; {len(x_test)} test pairs" if x_test is not None else "")  # fmt: skip
        save_config(cfg, run_dir)
        save_fold_map(pairs["id"], folds, run_dir / "folds.csv")
        (run_dir / "models").mkdir(exist_ok=True)

        oof = np.full((len(pairs), 3), np.nan)
        test_sum = np.zeros((len(x_test), 3)) if x_test is not None else None
        fold_ids = validation_folds(folds)
        validated = folds >= 0  # -1 rows always train and have no OOF prediction
        per_fold, importance = [], []
        for k in progress_bar(fold_ids, desc=f"{cfg.name} folds", unit="fold"):
            tr, va = folds != k, folds == k  # as prefkit.data.folds.fold_split
            xt, yt, wt = _training_set(x[tr], labels[tr], weights[tr], fc.swap_augment)
            xv, yv, wv = _training_set(x[va], labels[va], weights[va], fc.swap_augment)
            booster = fit_fold(xt, yt, wt, xv, yv, wv, fc, cfg.seed + k)
            booster.save_model(str(run_dir / "models" / f"fold_{k}.txt"), num_iteration=booster.best_iteration or None)
            oof[va] = predict_pairs(booster, x[va], fc.tta_swap)
            if x_test is not None:
                test_sum += predict_pairs(booster, x_test, fc.tta_swap)
            scores = summary(labels[va], oof[va], weights[va])
            per_fold.append({"fold": k, "best_iteration": int(booster.best_iteration), **scores})
            importance.append(booster.feature_importance("gain"))
            log.info("fold %d: val log loss %.4f, accuracy %.4f, %d trees", k, scores["log_loss"], scores["accuracy"], booster.best_iteration)

        oof_preds = make_predictions(pairs["id"][validated], oof[validated], cfg.name, folds[validated])
        write_predictions(oof_preds, run_dir / OOF_FILE)
        test_preds = None
        if x_test is not None:
            test_preds = make_predictions(test_pairs["id"], test_sum / len(fold_ids), cfg.name, -1)
            write_predictions(test_preds, run_dir / TEST_FILE)
        gain = pd.DataFrame({"feature": x.columns, "gain": np.mean(importance, axis=0)}).sort_values("gain", ascending=False)
        gain.to_csv(run_dir / "importance.csv", index=False)

        metrics = {
            "model": cfg.name,
            "kind": "features",
            "oof": summary(labels[validated], oof[validated], weights[validated]),
            "folds": per_fold,
            "n_features": int(x.shape[1]),
            "n_test": len(x_test) if x_test is not None else 0,
            "seconds": round(time.time() - t0, 1),
        }
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        reliability_diagram(labels[validated], oof[validated], run_dir / "reliability.png", title=f"{cfg.name} OOF")
        log.info("%s: OOF log loss %.4f, accuracy %.4f over %d pairs -> %s",
                 cfg.name, metrics["oof"]["log_loss"], metrics["oof"]["accuracy"], int(validated.sum()), run_dir)  # fmt: skip
    finally:
        logging.getLogger("prefkit").removeHandler(handler)
        handler.close()
    return FeatureModelResult(run_dir, oof_preds, test_preds, metrics, [f["best_iteration"] for f in per_fold])
