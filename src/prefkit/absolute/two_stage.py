"""The two-stage runner in frozen-backbone mode (Pair2Score on cached embeddings).

Every text is embedded once by a frozen encoder (:func:`prefkit.features.embeddings.embed_texts`,
cached per model and text). Per validation fold, on the training fold only:

* ``absolute``: a :class:`~prefkit.absolute.heads.ScorerHead` trained on the labels (MSE);
* ``stage1``: the same head trained on soft-BT pairs built from the labels (K partners per
  item, targets sigmoid(gamma (y_i - y_j)) on standardised targets); its scores are a
  ranking, not a scale;
* ``two_stage_<mode>``: stage 2 for each mode of ``stage2`` (``warm``, ``stack``, ``fusion``,
  see :mod:`prefkit.absolute.heads`), trained on the labels.

Targets are standardised on the training fold (every target weighs the same in the loss)
and predictions mapped back. Out-of-fold predictions of every model and their metrics
(MCRMSE, RMSE, QWK on the label grid, Spearman, Pearson per target) are written to the
output folder with the resolved config; with a test table the same models are fitted on
all the data and score it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from prefkit.absolute.config import AbsoluteConfig, save_absolute_config
from prefkit.absolute.data import ItemTable
from prefkit.atomic import atomic_path, atomic_write_text
from prefkit.data.folds import fold_split, validation_folds
from prefkit.metrics import absolute_summary

log = logging.getLogger(__name__)
Predictor = Callable[[np.ndarray], np.ndarray]


def embed_items(cfg: AbsoluteConfig, texts: list[str], progress: bool = True) -> np.ndarray:
    from prefkit.features.embeddings import embed_texts

    e = cfg.embed
    stats: dict = {}
    x = embed_texts(
        texts, e.model, max_length=e.max_length, batch_size=e.batch_size, device=e.device, cache_dir=e.cache_dir,
        head_fraction=e.head_fraction, progress=progress, stats=stats,
    )  # fmt: skip
    log.info("embeddings: %d texts (%d computed, %d cached) in %.1fs", stats["texts"], stats["computed"], stats["cached"], stats["seconds"])
    return x


@dataclass
class Standardiser:
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, y: np.ndarray) -> "Standardiser":
        std = y.std(axis=0)
        return cls(y.mean(axis=0), np.where(std > 0, std, 1.0))

    def __call__(self, y):
        return (y - self.mean) / self.std

    def inverse(self, z):
        return z * self.std + self.mean


def train_on_pairs(cfg: AbsoluteConfig, head_class, x: np.ndarray, z: np.ndarray, seed: int):
    """A head (``ScorerHead`` or ``PairHead``) trained on soft-BT pairs of the items ``x`` with
    standardised scores ``z`` (K partners each, targets sigmoid(gamma dz))."""
    import torch

    from prefkit.absolute.heads import fit_on_pairs
    from prefkit.absolute.softbt import soft_bt_pairs

    torch.manual_seed(seed)
    head = head_class(x.shape[1], cfg.head.hidden, z.shape[1], cfg.head.dropout)
    pairs = soft_bt_pairs(len(x), z, k=cfg.pairs.k, gamma=cfg.pairs.gamma, seed=seed)
    fit_on_pairs(head, x, pairs, cfg.pair_fit, seed)
    return head


def fit_models(cfg: AbsoluteConfig, x: np.ndarray, y: np.ndarray, seed: int) -> dict[str, Predictor]:
    """The runner's models fitted on ``(x, y)``: name -> function from embeddings to predictions
    (label scale; ``stage1`` gives standardised-scale scores)."""
    import torch

    from prefkit.absolute.heads import ScorerHead, StackedHead, fit_regressor, fusion_features, predict, warm_head

    torch.set_num_threads(cfg.threads)
    scale = Standardiser.fit(y)
    z = scale(y)
    dim, n_targets, h = x.shape[1], y.shape[1], cfg.head

    def regressor(model, features=lambda a: a) -> Predictor:
        fit_regressor(model, features(x), z, cfg.fit, seed)
        return lambda a: scale.inverse(predict(model, features(a)))

    torch.manual_seed(seed)
    models: dict[str, Predictor] = {"absolute": regressor(ScorerHead(dim, h.hidden, n_targets, h.dropout))}
    stage1 = train_on_pairs(cfg, ScorerHead, x, z, seed)
    models["stage1"] = lambda a: predict(stage1, a)
    for mode in cfg.stage2:
        torch.manual_seed(seed)
        if mode == "warm":
            models["two_stage_warm"] = regressor(warm_head(stage1))
        elif mode == "stack":
            models["two_stage_stack"] = regressor(StackedHead(stage1, h.hidden, n_targets, h.dropout))
        else:
            fused = lambda a: fusion_features(stage1, a)  # noqa: E731
            width = fused(x[:1]).shape[1]
            models["two_stage_fusion"] = regressor(ScorerHead(width, h.hidden, n_targets, h.dropout), fused)
    return models


@dataclass
class RunResult:
    metrics: dict[str, dict]  # model -> absolute_summary of its out-of-fold predictions
    oof: pd.DataFrame
    headline: str  # the two-stage model the config names first
    test_metrics: dict[str, dict] = field(default_factory=dict)
    test_predictions: pd.DataFrame | None = None
    seconds: float = 0.0


def _prediction_columns(table: ItemTable, name: str, pred: np.ndarray) -> dict:
    return {f"{name}__{t}": pred[:, k] for k, t in enumerate(table.targets)}


def _metrics(cfg: AbsoluteConfig, table: ItemTable, y: np.ndarray, preds: dict[str, np.ndarray]) -> dict[str, dict]:
    out = {}
    for name, pred in preds.items():
        step = None if name == "stage1" else cfg.data.label_step  # stage 1 scores rank, no scale
        summary = absolute_summary(y, pred, table.targets, step)
        if name == "stage1":
            summary = {k: v for k, v in summary.items() if k.startswith(("spearman", "pearson", "n"))}
        out[name] = summary
    return out


def run_frozen(
    cfg: AbsoluteConfig, table: ItemTable, folds: np.ndarray, test: ItemTable | None = None, out_dir: str | Path | None = None, progress: bool = True
) -> RunResult:
    """Out-of-fold predictions and metrics of every model; with ``test``, a fit on all rows scores it."""
    from prefkit.progress import progress_bar

    t0 = time.perf_counter()
    texts = table.texts + (test.texts if test is not None else [])
    x_all = embed_items(cfg, texts, progress)
    x, y = x_all[: len(table.items)], table.y
    oof: dict[str, np.ndarray] = {}
    run_folds = validation_folds(folds)
    bar = progress_bar(total=len(run_folds), desc="folds", unit="fold", disable=not progress)
    for k in run_folds:
        train, valid = fold_split(folds, k)
        models = fit_models(cfg, x[train], y[train], cfg.seed + k)
        for name, model in models.items():
            oof.setdefault(name, np.full(y.shape, np.nan))[valid] = model(x[valid])
        bar.update(1)
    bar.close()
    scored = np.asarray(folds) >= 0
    result = RunResult(
        metrics=_metrics(cfg, table, y[scored], {n: p[scored] for n, p in oof.items()}),
        oof=pd.DataFrame({"id": table.items["id"], "fold": folds, **{c: v for n, p in oof.items() for c, v in _prediction_columns(table, n, p).items()}}),
        headline=f"two_stage_{cfg.stage2[0]}",
    )
    if test is not None:
        models = fit_models(cfg, x, y, cfg.seed)
        x_test = x_all[len(table.items) :]
        preds = {name: model(x_test) for name, model in models.items()}
        result.test_predictions = pd.DataFrame(
            {"id": test.items["id"], **{c: v for n, p in preds.items() for c, v in _prediction_columns(table, n, p).items()}}
        )
        y_test = test.y
        if np.isfinite(y_test).all():
            result.test_metrics = _metrics(cfg, table, y_test, preds)
    result.seconds = time.perf_counter() - t0
    if out_dir is not None:
        write_outputs(cfg, result, out_dir)
    return result


def write_outputs(cfg: AbsoluteConfig, result: RunResult, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_absolute_config(cfg, out)
    with atomic_path(out / "oof.csv") as tmp:
        result.oof.to_csv(tmp, index=False)
    if result.test_predictions is not None:
        with atomic_path(out / "test_predictions.csv") as tmp:
            result.test_predictions.to_csv(tmp, index=False)
    summary = {"headline": result.headline, "seconds": round(result.seconds, 1), "oof": result.metrics, "test": result.test_metrics}
    atomic_write_text(out / "metrics.json", json.dumps(summary, indent=2) + "\n")
    return out
