"""Metrics agree with scikit-learn; reliability plots are written."""

import math

import numpy as np
import pytest
from sklearn.metrics import log_loss as sk_log_loss

from prefkit import metrics
from prefkit.plots import learning_curves_plot, reliability_diagram

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _random(n=500, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 3, n), rng.dirichlet([1, 1, 1], n), rng.uniform(0.5, 2.0, n)


def test_log_loss_equals_sklearn():
    y, p, w = _random()
    assert metrics.log_loss(y, p) == pytest.approx(sk_log_loss(y, p, labels=[0, 1, 2]), rel=1e-10)
    assert metrics.log_loss(y, p, weights=w) == pytest.approx(sk_log_loss(y, p, labels=[0, 1, 2], sample_weight=w), rel=1e-10)
    onehot = np.eye(3)[y]
    assert metrics.log_loss(onehot, p) == pytest.approx(metrics.log_loss(y, p), rel=1e-10)
    assert metrics.log_loss(onehot, p, weights=w) == pytest.approx(metrics.log_loss(y, p, weights=w), rel=1e-10)


def test_soft_targets_and_rescaling():
    t = np.array([[0.5, 0.5, 0.0], [0.2, 0.2, 0.6]])
    p = np.array([[0.4, 0.4, 0.2], [0.3, 0.3, 0.4]])
    want = -np.mean([0.5 * math.log(0.4) * 2, 0.4 * math.log(0.3) + 0.6 * math.log(0.4)])
    assert metrics.log_loss(t, p) == pytest.approx(want)
    assert metrics.log_loss(t, p * 7.0) == pytest.approx(want)  # rows rescaled like Kaggle's metric


def test_perfect_and_absent_class():
    y = np.array([0, 1, 0, 1])
    p = np.eye(3)[y]
    assert metrics.log_loss(y, p) < 1e-12
    assert metrics.accuracy(y, p) == 1.0
    # no tie in the labels, a confidently wrong row is clipped, not infinite
    assert math.isfinite(metrics.log_loss(np.array([0]), np.array([[0.0, 1.0, 0.0]])))


def test_per_class_accuracy_and_summary():
    y = np.array([0, 0, 1, 1, 2])
    p = np.array(
        [
            [0.6, 0.3, 0.1],  # A right
            [0.2, 0.7, 0.1],  # A wrong
            [0.1, 0.8, 0.1],  # B right
            [0.2, 0.5, 0.3],  # B right
            [0.5, 0.2, 0.3],  # tie wrong
        ]
    )
    assert metrics.per_class_accuracy(y, p) == {"a": 0.5, "b": 1.0, "tie": 0.0}
    s = metrics.summary(y, p)
    assert set(s) == {"log_loss", "accuracy", "acc_a", "acc_b", "acc_tie", "n"}
    assert s["accuracy"] == pytest.approx(0.6) and s["n"] == 5
    assert math.isnan(metrics.per_class_accuracy(np.array([0, 1]), p[:2])["tie"])


def test_prior_log_loss():
    y = np.array([0] * 5 + [1] * 3 + [2] * 2)
    prior = np.array([0.5, 0.3, 0.2])
    assert metrics.prior_log_loss(y) == pytest.approx(-(prior * np.log(prior)).sum())
    test = np.array([2, 2])
    assert metrics.prior_log_loss(y, test) == pytest.approx(-math.log(0.2))
    assert metrics.uniform_log_loss() == pytest.approx(math.log(3))


def test_bad_inputs():
    with pytest.raises(ValueError):
        metrics.log_loss(np.array([0, 3]), np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError):
        metrics.log_loss(np.array([0]), np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError):
        metrics.log_loss(np.full((1, 3), np.nan), np.full((1, 3), 1 / 3))


def test_ece_of_calibrated_predictions_is_small():
    rng = np.random.default_rng(1)
    p = rng.dirichlet([2, 2, 1], 20000)
    y = (rng.random(20000)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    onehot, sharp = np.eye(3)[y], np.eye(3)[p.argmax(axis=1)]
    for k in range(3):  # the class-wise ECE the reliability diagram reports
        assert metrics.class_ece(onehot[:, k], p[:, k]) < 0.02
        assert metrics.class_ece(onehot[:, k], sharp[:, k]) > 0.1


def test_reliability_diagram_png(tmp_path):
    y, p, _ = _random(300)
    path = reliability_diagram(y, p, tmp_path / "plots" / "rel.png", title="random")
    data = path.read_bytes()
    assert len(data) > 10_000 and data.startswith(PNG_MAGIC)
    # soft targets and a class with no predictions in some bins are fine too
    path2 = reliability_diagram(np.eye(3)[y] * 0.9 + 0.1 / 3, p, tmp_path / "rel2.png")
    assert path2.read_bytes().startswith(PNG_MAGIC)


def test_learning_curves_plot_png(tmp_path):
    evals = {
        0: [{"step": 10, "val_log_loss": 0.9, "train_loss": 1.0}, {"step": 20, "val_log_loss": 0.8, "train_loss": 0.85}],
        1: [{"step": 10, "val_log_loss": 0.95}, {"step": 20, "val_log_loss": 0.97}],  # no training loss recorded
    }
    assert learning_curves_plot(evals, tmp_path / "curves.png").read_bytes().startswith(PNG_MAGIC)
    with pytest.raises(ValueError, match="no evaluations"):
        learning_curves_plot({0: []}, tmp_path / "none.png")
