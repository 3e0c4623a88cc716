"""Stacking with nested CV and temperature scaling, on hand-made base-model runs."""

import json

import numpy as np
import pandas as pd
import pytest

from prefkit import stacking
from prefkit.calibration import apply_temperature, fit_temperature, to_logits
from prefkit.config import load_config
from prefkit.data.folds import make_folds
from prefkit.data.kaggle import read_kaggle_csv
from prefkit.data.synthetic import write_synthetic_arena
from prefkit.errors import InputError
from prefkit.metrics import log_loss
from prefkit.predictions import make_predictions, read_predictions, write_predictions
from prefkit.schema import label_matrix
from prefkit.submission import validate_submission


@pytest.fixture(scope="module")
def arena(tmp_path_factory):
    root = tmp_path_factory.mktemp("stack")
    write_synthetic_arena(root / "data", n_train=600, n_test=150, seed=4)
    pairs = read_kaggle_csv(root / "data" / "train.csv")
    test = read_kaggle_csv(root / "data" / "test.csv")
    folds = make_folds(pairs, n_folds=3, seed=0)
    return root, pairs, test, folds


def _noisy_probs(y, rng, strength, n=None):
    """Probabilities that lean towards the true class ``y`` (random ones when y is None)."""
    n = len(y) if y is not None else n
    logits = rng.normal(0, 1.0, (n, 3))
    if y is not None:
        logits[np.arange(n), y] += strength
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def _write_run(run_dir, name, pairs, test, folds, strength, seed):
    rng = np.random.default_rng(seed)
    write_predictions(make_predictions(pairs["id"], _noisy_probs(label_matrix(pairs).argmax(axis=1), rng, strength), name, folds), run_dir / "oof.csv")
    if test is not None:
        write_predictions(make_predictions(test["id"], _noisy_probs(None, rng, 0, len(test)), name, -1), run_dir / "test.csv")
    return run_dir


def _cfg(root, *extra):
    return load_config(
        None, [f"data.dir={root / 'data'}", f"output_dir={root / 'runs'}", "stack.inner_folds=3", "features.num_threads=1", *extra]
    )


def test_stack_of_two_runs_writes_everything(arena):
    root, pairs, test, folds = arena
    a = _write_run(root / "runs" / "a", "a", pairs, test, folds, 2.0, 1)
    b = _write_run(root / "runs" / "b", "b", pairs, test, folds, 1.0, 2)
    cfg = _cfg(root, "stack.name=st2", f"stack.submission={root / 'sub2.csv'}")
    result = stacking.stack_runs(cfg, [a, b], pairs=pairs)
    oof = read_predictions(result.run_dir / "oof.csv")
    assert list(oof["id"]) == list(pairs["id"]) and (oof["fold"].to_numpy() == folds).all()
    assert set(read_predictions(result.run_dir / "test.csv")["id"]) == set(test["id"])
    for name in ("metrics.json", "reliability.png", "config.yaml", "stack.log"):
        assert (result.run_dir / name).exists()
    m = json.loads((result.run_dir / "metrics.json").read_text())
    assert [i["name"] for i in m["inputs"]] == ["a", "b"]
    # two independent noisy views of the label: the stack beats the better one
    assert m["oof"]["log_loss"] < min(i["log_loss"] for i in m["inputs"])
    validate_submission(result.submission, root / "data" / "sample_submission.csv")


def test_stacker_oof_for_fold_k_never_sees_fold_k(arena, monkeypatch):
    """By construction: record the prompt groups every stacker is fitted on."""
    root, pairs, test, folds = arena
    run = _write_run(root / "runs" / "nested", "nested", pairs, None, folds, 1.5, 3)
    fitted = []
    real_fit = stacking.Stacker.fit

    def spy(self, x, labels, weights, groups):
        fitted.append(set(groups))
        return real_fit(self, x, labels, weights, groups)

    monkeypatch.setattr(stacking.Stacker, "fit", spy)
    stacking.stack_runs(_cfg(root, "stack.name=nested_stack"), [run], pairs=pairs)
    groups = pairs["group"].to_numpy()
    n_folds = len(set(folds))
    assert len(fitted) == n_folds + 1  # one per outer fold, then the final one on all rows
    for k, seen in enumerate(fitted[:n_folds]):
        assert seen.isdisjoint(set(groups[folds == k]))
        assert seen == set(groups[folds != k])
    assert fitted[-1] == set(groups)


def test_nested_oof_is_honest_where_a_leaky_fit_is_not():
    """Inputs that are pure noise: a stacker fitted on every row (leaky) would score below
    the prior on its own rows by memorising; the nested OOF must not."""
    rng = np.random.default_rng(0)
    n = 300
    labels = np.eye(3)[rng.integers(0, 2, n)]
    x = rng.normal(size=(n, 30))
    groups = np.arange(n).astype(str)
    folds = np.arange(n) % 3
    cfg = load_config(None, ["stack.inner_folds=3"]).stack
    cfg = cfg.model_copy(update={"method": "lgbm"})
    oof, _ = stacking.nested_oof(x, labels, np.ones(n), groups, folds, cfg)
    prior = log_loss(labels, np.tile(labels.mean(axis=0), (n, 1)))
    assert log_loss(labels, oof) > prior - 0.01


def test_temperature_scaling_never_worsens_oof(arena):
    root, pairs, test, folds = arena
    run = _write_run(root / "runs" / "temp", "temp", pairs, None, folds, 1.0, 5)
    result = stacking.stack_runs(_cfg(root, "stack.name=temp_stack"), [run], pairs=pairs)
    m = result.metrics
    assert m["oof"]["log_loss"] <= m["oof_uncalibrated"]["log_loss"] + 1e-12
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 2000)
    sharp = _noisy_probs(y, rng, 1.0) ** 3  # over-confident
    sharp /= sharp.sum(axis=1, keepdims=True)
    t = fit_temperature(to_logits(sharp), y)
    assert t > 1.5
    assert log_loss(y, apply_temperature(sharp, t)) < log_loss(y, sharp)
    uniform = np.full((len(y), 3), 1 / 3)
    assert fit_temperature(to_logits(uniform), y) == 1.0  # nothing to gain: T stays 1


def test_lgbm_stacker_runs(arena):
    root, pairs, test, folds = arena
    run = _write_run(root / "runs" / "lg", "lg", pairs, test, folds, 2.0, 6)
    result = stacking.stack_runs(_cfg(root, "stack.name=lg_stack", "stack.method=lgbm", f"stack.submission={root / 'lg.csv'}"), [run], pairs=pairs)
    assert all("rounds" in f for f in result.metrics["folds"])
    assert result.metrics["oof"]["log_loss"] < 1.0


def test_runs_must_share_the_fold_map(arena):
    root, pairs, test, folds = arena
    a = _write_run(root / "runs" / "fa", "fa", pairs, None, folds, 1.0, 7)
    b = _write_run(root / "runs" / "fb", "fb", pairs, None, (folds + 1) % 3, 1.0, 8)
    with pytest.raises(InputError, match="share one fold map"):
        stacking.stack_runs(_cfg(root, "stack.name=bad"), [a, b], pairs=pairs)


def test_bad_runs(arena, tmp_path):
    root, pairs, test, folds = arena
    with pytest.raises(InputError, match="run folder not found"):
        stacking.stack_runs(_cfg(root), [tmp_path / "nope"], pairs=pairs)
    alien = tmp_path / "alien"
    write_predictions(make_predictions(["zz"], np.array([[0.2, 0.3, 0.5]]), "alien", 0), alien / "oof.csv")
    with pytest.raises(InputError, match="not in the training data"):
        stacking.stack_runs(_cfg(root), [alien], pairs=pairs)
    a = _write_run(root / "runs" / "own", "own", pairs, None, folds, 1.0, 9)
    with pytest.raises(InputError, match="overwrite its own input"):
        stacking.stack_runs(_cfg(root, "stack.name=own"), [a], pairs=pairs)
    with_test = _write_run(tmp_path / "t", "t", pairs, test, folds, 1.0, 10)
    with pytest.raises(InputError, match="no test.csv"):
        stacking.stack_runs(_cfg(root, "stack.name=mixed"), [with_test, a], pairs=pairs)


def test_labels_come_from_the_first_runs_config(arena):
    """``prefkit stack RUN_DIR`` with no data settings reads the run's saved config."""
    root, pairs, test, folds = arena
    run = _write_run(root / "runs" / "cfgd", "cfgd", pairs, None, folds, 1.0, 11)
    from prefkit.config import save_config

    save_config(load_config(None, [f"data.dir={root / 'data'}"]), run)
    cfg = load_config(None, [f"output_dir={root / 'runs'}", "stack.name=from_cfg", "stack.inner_folds=3"])
    result = stacking.stack_runs(cfg, [run])
    assert len(result.oof) == len(pairs)
    assert isinstance(result.oof, pd.DataFrame)
