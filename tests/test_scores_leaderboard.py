"""The demo's leaderboard: synthetic models fitted from their battles, beside their true skill."""

from __future__ import annotations

import numpy as np
import pytest

from prefkit.data.synthetic import write_synthetic_arena
from prefkit.scores.leaderboard import arena_leaderboard, leaderboard_lines, truth_leaderboard


@pytest.fixture(scope="module")
def arena(tmp_path_factory):
    root = tmp_path_factory.mktemp("arena")
    info = write_synthetic_arena(root, n_train=1200, n_test=10, seed=3, n_models=8)
    return root / "train.csv", info.model_skill


def test_leaderboard_recovers_the_true_order(arena):
    train, skill = arena
    table, rho, fitted = arena_leaderboard(train, skill)
    assert sorted(table["model"]) == sorted(skill)
    assert rho > 0.85
    assert table["score"].is_monotonic_decreasing and list(table["rank"]) == list(range(1, 9))
    assert abs(table["true"].mean()) < 1e-9 and abs(table["score"].mean()) < 1e-6  # both centred
    assert ((table["lower"] <= table["score"]) & (table["score"] <= table["upper"])).all()
    # Intervals measure the mean-zero scores (the overall level is not uncertain by convention).
    assert (table["upper"] - table["lower"]).max() < 1.5
    lines = leaderboard_lines(table, rho, fitted)
    assert len(lines) == 1 + 8 + 1 and f"{rho:.4f}" in lines[-1] and fitted.interval in lines[-1]


def test_leaderboard_refuses_models_without_a_true_strength(arena):
    train, skill = arena
    _, _, fitted = arena_leaderboard(train, skill)
    partial = dict(list(skill.items())[1:])
    with pytest.raises(ValueError, match="no true strength"):
        truth_leaderboard(fitted, partial)
    np.testing.assert_allclose(truth_leaderboard(fitted, skill)[0]["true"].sum(), 0.0, atol=1e-9)
