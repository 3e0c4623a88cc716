"""The LightGBM feature model on a tiny synthetic arena: better than the prior, honest OOF."""

import json

import numpy as np
import pandas as pd
import pytest

from prefkit.config import load_config
from prefkit.data.folds import import_fold_map, make_folds
from prefkit.data.kaggle import read_kaggle_csv
from prefkit.data.synthetic import write_synthetic_arena
from prefkit.errors import InputError
from prefkit.features import pair_features, swap_features
from prefkit.metrics import prior_log_loss
from prefkit.features.feature_model import hard_rows, predict_pairs, train_feature_model
from prefkit.predictions import read_predictions
from prefkit.schema import SWAP_ORDER, label_matrix

FAST = ["features.num_threads=1", "features.learning_rate=0.1", "features.early_stopping_rounds=20", "folds.n_folds=3"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("fm")
    write_synthetic_arena(root / "data", n_train=900, n_test=200, seed=11)
    cfg = load_config(None, [f"data.dir={root / 'data'}", f"output_dir={root / 'runs'}", "name=feat", *FAST])
    return cfg, train_feature_model(cfg)


def test_beats_the_class_prior(trained):
    cfg, result = trained
    pairs = read_kaggle_csv(cfg.data.dir + "/train.csv")
    prior = prior_log_loss(label_matrix(pairs))
    assert result.oof_log_loss < prior - 0.02
    assert json.loads((result.run_dir / "metrics.json").read_text())["oof"]["log_loss"] == pytest.approx(result.oof_log_loss)


def test_oof_covers_every_row_once_with_the_fold_map(trained):
    cfg, result = trained
    pairs = read_kaggle_csv(cfg.data.dir + "/train.csv")
    oof = read_predictions(result.run_dir / "oof.csv")
    assert sorted(oof["id"]) == sorted(pairs["id"])  # every row, none twice (ids unique)
    fold_map = import_fold_map(result.run_dir / "folds.csv", oof["id"]).folds
    assert (oof["fold"].to_numpy() == fold_map).all()
    expected = make_folds(pairs, n_folds=3, seed=cfg.folds.seed)
    by_id = dict(zip(pairs["id"], expected))
    assert (oof["fold"].to_numpy() == np.array([by_id[i] for i in oof["id"]])).all()
    assert set(oof["model"]) == {"feat"}


def test_test_predictions_and_run_files(trained):
    cfg, result = trained
    test_ids = read_kaggle_csv(cfg.data.dir + "/test.csv")["id"]
    test = read_predictions(result.run_dir / "test.csv")
    assert list(test["id"]) == list(test_ids)
    assert set(test["fold"]) == {-1}
    assert np.allclose(test[["p_a", "p_b", "p_tie"]].sum(axis=1), 1.0)
    for name in ("config.yaml", "folds.csv", "metrics.json", "reliability.png", "train.log", "importance.csv", "models/fold_0.txt"):
        assert (result.run_dir / name).exists(), name
    assert len(result.best_iterations) == 3


def test_swap_tta_predictions_are_exactly_antisymmetric(trained):
    import lightgbm as lgb

    cfg, result = trained
    pairs = read_kaggle_csv(cfg.data.dir + "/test.csv")
    x = pair_features(pairs)
    booster = lgb.Booster(model_file=str(result.run_dir / "models" / "fold_0.txt"))
    p = predict_pairs(booster, x)
    q = predict_pairs(booster, swap_features(x))
    assert np.allclose(p, q[:, SWAP_ORDER], atol=1e-12)


def test_hard_rows_expand_soft_labels():
    labels = np.array([[1.0, 0.0, 0.0], [0.5, 0.25, 0.25], [0.0, 0.6, 0.4], [0.0, 0.0, 1.0]])
    rows, cls, w = hard_rows(labels, np.array([1.0, 2.0, 1.0, 3.0]))
    assert rows.tolist() == [0, 1, 1, 1, 2, 2, 3]
    assert cls.tolist() == [0, 0, 1, 2, 1, 2, 2]
    assert w.tolist() == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.6, 0.4, 3.0])


def test_soft_labels_and_weights_train(tmp_path):
    write_synthetic_arena(tmp_path / "data", n_train=300, n_test=0, seed=2)
    pairs = read_kaggle_csv(tmp_path / "data" / "train.csv")
    rng = np.random.default_rng(0)
    soft = rng.dirichlet([2.0, 2.0, 1.0], size=len(pairs))
    pairs[["p_a", "p_b", "p_tie"]] = soft
    pairs["weight"] = rng.integers(1, 4, size=len(pairs)).astype(float)
    cfg = load_config(None, [f"output_dir={tmp_path / 'runs'}", "name=soft", *FAST])
    result = train_feature_model(cfg, pairs, None, folds=make_folds(pairs, 3))
    assert result.test is None and not (result.run_dir / "test.csv").exists()
    assert len(result.oof) == len(pairs)
    assert np.isfinite(result.oof_log_loss)


def test_unlabelled_training_rows_are_refused(tmp_path):
    write_synthetic_arena(tmp_path / "data", n_train=60, n_test=0, seed=2)
    pairs = read_kaggle_csv(tmp_path / "data" / "train.csv")
    pairs.loc[5, ["p_a", "p_b", "p_tie"]] = np.nan
    cfg = load_config(None, [f"output_dir={tmp_path / 'runs'}", *FAST])
    with pytest.raises(InputError, match="row 6.*no label"):
        train_feature_model(cfg, pairs, None, folds=np.arange(len(pairs)) % 3)


def test_extra_feature_files_are_used(tmp_path):
    write_synthetic_arena(tmp_path / "data", n_train=200, n_test=50, seed=3)
    train = read_kaggle_csv(tmp_path / "data" / "train.csv")
    test = read_kaggle_csv(tmp_path / "data" / "test.csv")
    ids = list(train["id"]) + list(test["id"])
    extra = tmp_path / "extra.parquet"
    pd.DataFrame({"id": ids, "diff_signal": np.linspace(-1, 1, len(ids)), "pair_constant": 1.0}).to_parquet(extra, index=False)
    cfg = load_config(None, [f"data.dir={tmp_path / 'data'}", f"output_dir={tmp_path / 'runs'}", f"features.extra_features=[{extra}]", *FAST])
    result = train_feature_model(cfg)
    assert {"diff_signal", "pair_constant"} <= set(pd.read_csv(result.run_dir / "importance.csv")["feature"])
    assert result.metrics["n_features"] == pair_features(train.head(1)).shape[1] + 2
