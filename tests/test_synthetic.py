"""Synthetic arena generator: deterministic, Kaggle-shaped, and with the biases it claims."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from prefkit.data.synthetic import (
    TARGET_COLUMNS,
    TEST_COLUMNS,
    TRAIN_COLUMNS,
    btd_probabilities,
    generate_arena_frames,
    write_synthetic_arena,
)


@pytest.fixture(scope="module")
def arena():
    """A few thousand rows with the default parameters."""
    return generate_arena_frames(n_train=2500, n_test=800, seed=3)


def _labels(df):
    return df[list(TARGET_COLUMNS)].to_numpy().argmax(axis=1)


def _longer_wins_rate(truth):
    decided = truth[truth["label"] < 2]
    decided = decided[decided["words_a"] != decided["words_b"]]
    a_longer = decided["words_a"] > decided["words_b"]
    return float(np.mean((decided["label"] == 0) == a_longer)), len(decided)


def test_deterministic_under_seed():
    one = generate_arena_frames(n_train=150, n_test=50, seed=7)
    two = generate_arena_frames(n_train=150, n_test=50, seed=7)
    other = generate_arena_frames(n_train=150, n_test=50, seed=8)
    for name in ("train", "test", "sample_submission", "solution", "truth"):
        pd.testing.assert_frame_equal(getattr(one, name), getattr(two, name))
    assert one.info.to_dict() == two.info.to_dict()
    assert not one.train["response_a"].equals(other.train["response_a"])


def test_shapes_columns_and_one_hot_labels(arena):
    assert list(arena.train.columns) == list(TRAIN_COLUMNS)
    assert list(arena.test.columns) == list(TEST_COLUMNS)
    assert len(arena.train) == 2500 and len(arena.test) == 800
    for table in (arena.train, arena.solution):
        onehot = table[list(TARGET_COLUMNS)].to_numpy()
        assert set(np.unique(onehot)) <= {0, 1}
        assert (onehot.sum(axis=1) == 1).all()
    assert (arena.sample_submission[list(TARGET_COLUMNS)].to_numpy() == pytest.approx(1 / 3))
    ids = pd.concat([arena.train["id"], arena.test["id"]])
    assert ids.is_unique
    assert (arena.train["model_a"] != arena.train["model_b"]).all()
    assert arena.test["id"].tolist() == arena.solution["id"].tolist() == arena.sample_submission["id"].tolist()


def test_train_and_test_split_by_prompt(arena):
    assert not set(arena.train["prompt"]) & set(arena.test["prompt"])
    turns = [json.loads(c) for c in arena.train["prompt"]]
    assert any(len(t) > 1 for t in turns), "some prompts are multi-turn"


def test_truth_matches_labels_and_btd_formula(arena):
    truth = arena.truth
    p = truth[["p_a", "p_b", "p_tie"]].to_numpy()
    assert np.allclose(p.sum(axis=1), 1.0)
    train_truth = truth[truth["split"] == "train"]
    assert train_truth["label"].tolist() == _labels(arena.train).tolist()
    # direct formula on a few strengths
    sa, sb, nu = np.array([0.3, -1.0, 2.0]), np.array([0.0, 0.5, 2.0]), 0.8
    ea, eb = np.exp(sa), np.exp(sb)
    den = ea + eb + nu * np.sqrt(ea * eb)
    want = np.stack([ea / den, eb / den, nu * np.sqrt(ea * eb) / den], axis=1)
    assert np.allclose(btd_probabilities(sa, sb, nu), want)
    assert np.isfinite(btd_probabilities(np.array([1e4]), np.array([-1e4]), 1.0)).all()


def test_bayes_log_loss_below_prior(arena):
    info = arena.info
    assert info.bayes_log_loss < info.prior_log_loss - 0.05
    assert info.bayes_log_loss_realised < info.prior_log_loss
    assert info.prior_log_loss <= info.uniform_log_loss + 0.01
    assert abs(info.bayes_log_loss - info.bayes_log_loss_realised) < 0.1


def test_tie_rate_near_target(arena):
    info = arena.info
    assert 0.15 <= info.expected_tie_rate <= 0.30
    assert abs(info.tie_rate_train - info.expected_tie_rate) < 0.03
    assert abs(info.tie_rate_test - info.expected_tie_rate) < 0.05
    no_ties = generate_arena_frames(n_train=300, n_test=0, seed=1, nu=0.0)
    assert no_ties.info.tie_rate_train == 0.0


def test_longer_response_wins_more_often(arena):
    rate, n = _longer_wins_rate(arena.truth)
    assert n > 1500
    assert rate > 0.58


def test_length_bias_acts_beyond_quality():
    # Length is pure noise here (no quality, no per-model verbosity that could happen to
    # correlate with skill); only the judge's length bias links it to the outcome.
    kw = dict(n_train=2000, n_test=0, seed=11, length_quality=0.0, verbosity_sd=0.0, nu=0.5)
    biased, n = _longer_wins_rate(generate_arena_frames(length_bias=1.0, **kw).truth)
    neutral, _ = _longer_wins_rate(generate_arena_frames(length_bias=0.0, **kw).truth)
    assert abs(neutral - 0.5) < 0.04
    assert biased > neutral + 0.05


def test_structure_correlates_with_quality(arena):
    truth = arena.truth.set_index("id")
    train = arena.train.set_index("id")
    text = train["response_a"].map(lambda c: "\n".join(json.loads(c)))
    structured = text.str.contains(r"^(?:\d+\. |- |## )", regex=True) | text.str.contains("```", regex=False)
    quality = truth.loc[train.index, "quality_a"]
    assert quality[structured].mean() > quality[~structured].mean() + 0.3


def test_written_files_are_kaggle_csvs(tmp_path):
    info = write_synthetic_arena(tmp_path / "syn", n_train=200, n_test=60, seed=2)
    folder = tmp_path / "syn"
    train = pd.read_csv(folder / "train.csv")
    test = pd.read_csv(folder / "test.csv")
    sample = pd.read_csv(folder / "sample_submission.csv")
    solution = pd.read_csv(folder / "solution.csv")
    assert list(train.columns) == list(TRAIN_COLUMNS) and len(train) == 200
    assert list(test.columns) == list(TEST_COLUMNS) and len(test) == 60
    assert list(sample.columns) == ["id", *TARGET_COLUMNS]
    assert list(solution.columns) == ["id", *TARGET_COLUMNS]
    for col in ("prompt", "response_a", "response_b"):
        for cell in train[col]:
            turns = json.loads(cell)
            assert isinstance(turns, list) and turns and all(isinstance(t, str) for t in turns)
    for p, a, b in zip(train["prompt"], train["response_a"], train["response_b"]):
        assert len(json.loads(p)) == len(json.loads(a)) == len(json.loads(b))
    truth = json.loads((folder / "truth.json").read_text())
    assert truth["bayes_log_loss"] == pytest.approx(info.bayes_log_loss)
    assert truth["prior_log_loss"] == pytest.approx(info.prior_log_loss)
    assert math.isclose(truth["uniform_log_loss"], math.log(3))
    assert len(pd.read_csv(folder / "truth.csv")) == 260


def test_written_train_reads_as_pairs(tmp_path):
    from prefkit.data.kaggle import read_kaggle_csv

    write_synthetic_arena(tmp_path, n_train=120, n_test=30, seed=4)
    pairs = read_kaggle_csv(tmp_path / "train.csv")
    assert len(pairs) == 120
    assert pairs[["p_a", "p_b", "p_tie"]].sum(axis=1).eq(1).all()
    test = read_kaggle_csv(tmp_path / "test.csv")
    assert test[["p_a", "p_b", "p_tie"]].isna().all(axis=None)


def test_bad_parameters_are_refused():
    with pytest.raises(TypeError):
        generate_arena_frames(n_train=10, n_test=5, no_such_parameter=1)
    with pytest.raises(ValueError):
        generate_arena_frames(n_train=10, n_test=5, n_models=1)
