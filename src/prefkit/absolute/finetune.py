"""The two-stage runner in fine-tuning mode (``mode: finetune``): the same two stages as the
frozen mode, through the engine's tasks.

* Stage 1, task ``item_scorer``: a pair table built from the absolute labels, pairs only
  between items of the same fold (so a pair's fold is its items' fold: it validates there
  and trains everywhere else, never leaking a validation item into training), K partners
  per item, soft targets sigmoid(gamma (z_i - z_j)) with z the mean of the standardised
  targets (one scalar scorer for every trait).
* Stage 2, task ``regression`` on the labels, one engine run per fold with
  ``model.init_from`` = stage 1's checkpoint of that fold (``model.init_mode`` warm or
  stack as the stage-2 config says); and the absolute-only baseline: the same regression
  config without ``init_from``.

``finetune.stage1_config`` / ``stage2_config`` are ordinary run configs (``prefkit
train-transformer`` YAML); the data, folds, targets and output folders are set here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from prefkit.absolute.config import AbsoluteConfig, save_absolute_config
from prefkit.absolute.data import ItemTable, load_run_data
from prefkit.absolute.softbt import soft_bt_pairs
from prefkit.absolute.two_stage import Standardiser
from prefkit.atomic import atomic_write_text
from prefkit.data.folds import validation_folds
from prefkit.errors import ConfigError
from prefkit.metrics import absolute_summary
from prefkit.schema import make_pairs


def same_fold_pairs(table: ItemTable, folds: np.ndarray, k: int, gamma: float, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Soft-BT pairs within each fold (a pair's fold id is its items' fold)."""
    parts, pair_folds = [], []
    ids, texts, scores = table.items["id"].to_numpy(), table.items["text"].to_numpy(), table.y
    for f in np.unique(folds):
        members = np.flatnonzero(folds == f)
        if len(members) < 2:
            continue
        y = scores[members]
        z = Standardiser.fit(y)(y).mean(axis=1)
        pairs = soft_bt_pairs(len(members), z, k=min(k, len(members) - 1), gamma=gamma, seed=seed + int(f))
        a, b, p = members[pairs.i], members[pairs.j], pairs.targets[:, 0]
        parts.append(
            make_pairs(
                [f"{ids[x]}__{ids[w]}" for x, w in zip(a, b)],
                [[""] for _ in a],
                [[texts[x]] for x in a],
                [[texts[w]] for w in b],
                labels=np.stack([p, 1 - p, np.zeros_like(p)], axis=1),
                groups=[f"fold{f}"] * len(a),
            )
        )
        pair_folds.append(np.full(len(a), f, dtype=int))
    return pd.concat(parts, ignore_index=True), np.concatenate(pair_folds)


def _run_config(path: str | None, what: str, overrides: list[str]):
    from prefkit.config import load_config

    if path is None:
        raise ConfigError(f"mode finetune needs finetune.{what} (a run config for the engine)")
    return load_config(path, overrides)


def run_finetune(cfg: AbsoluteConfig, test: str | None = None) -> dict:
    """Stage 1, stage 2 per fold and the absolute-only baseline on the engine; MCRMSE of both."""
    import typer

    from prefkit.train.engine import train_folds

    if test is not None:
        raise ConfigError("--test is not supported in mode finetune yet (score the test file with prefkit predict)")
    table, folds, _, where = load_run_data(cfg.data)
    out = Path(cfg.out)
    save_absolute_config(cfg, out)
    ft = cfg.finetune
    typer.echo(f"{len(table.items)} items, targets {', '.join(table.targets)}; {where}")
    common = [f"output_dir={out}", f"seed={cfg.seed}"]

    pairs, pair_folds = same_fold_pairs(table, folds, cfg.pairs.k, cfg.pairs.gamma, cfg.seed)
    stage1 = _run_config(ft.stage1_config, "stage1_config", [*ft.overrides, *common, "task=item_scorer", "name=stage1", "scorer.with_prompt=false"])
    train_folds(stage1, pairs, pair_folds)

    regression = ["task=regression", "regression.text_column=text", f"regression.targets=[{', '.join(table.targets)}]"]
    if cfg.data.label_step is not None:
        regression.append(f"regression.label_step={cfg.data.label_step}")
    items = table.items
    absolute = _run_config(ft.stage2_config, "stage2_config", [*ft.overrides, *common, *regression, "name=absolute", "model.init_from=null"])
    oof = {"absolute": train_folds(absolute, items, folds).oof}
    two_stage = []
    for k in validation_folds(folds):
        ckpt = stage1.run_dir / f"fold_{k}" / "checkpoint"
        stage2 = _run_config(ft.stage2_config, "stage2_config", [*ft.overrides, *common, *regression, f"name=two_stage_fold{k}", f"model.init_from={ckpt}", f"train.folds=[{k}]"])
        two_stage.append(train_folds(stage2, items, folds).oof)
    oof["two_stage"] = pd.concat(two_stage, ignore_index=True)

    metrics = {}
    for name, frame in oof.items():
        merged = items[["id", *table.targets]].merge(frame[["id", *table.targets]], on="id", suffixes=("", "__pred"))
        pred = merged[[f"{t}__pred" for t in table.targets]].to_numpy(dtype=float)
        metrics[name] = absolute_summary(merged[table.targets].to_numpy(dtype=float), pred, table.targets, cfg.data.label_step)
    atomic_write_text(out / "metrics.json", json.dumps({"headline": "two_stage", "oof": metrics}, indent=2) + "\n")
    typer.echo(f"mcrmse_absolute={metrics['absolute']['mcrmse']:.4f} mcrmse_two_stage={metrics['two_stage']['mcrmse']:.4f}")
    return metrics
