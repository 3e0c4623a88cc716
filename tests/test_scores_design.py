"""Comparison designs: budgets, connectivity, balance, the adaptive rule, the CLI and the simulation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from prefkit.scores.bt import fit
from prefkit.scores.data import simulate_comparisons
from prefkit.scores.design import (
    adaptive_pairs,
    anchor_design,
    davidson_information,
    degrees,
    n_components,
    random_regular_design,
)
from prefkit.scores.simulation import accuracy, design_comparisons


@pytest.mark.parametrize("n_items", [3, 10, 57, 200])
@pytest.mark.parametrize("anchors_per_item", [1, 2, 4])
def test_anchor_design_uses_at_most_4n_and_is_connected(n_items, anchors_per_item):
    i, j = anchor_design(n_items, anchors_per_item=anchors_per_item, rng=0)
    assert len(i) <= 4 * n_items
    assert n_components(n_items, i, j) == 1
    assert (i != j).all()


@pytest.mark.parametrize("budget_per_item", [1, 2, 4, 8])
def test_anchor_design_within_budget(budget_per_item):
    n = 40
    budget = budget_per_item * n - (1 if budget_per_item == 1 else 0)  # N-1 is the least that connects
    i, j = anchor_design(n, budget=budget, rng=1)
    assert len(i) <= min(budget, 4 * n)
    assert n_components(n, i, j) == 1


def test_anchor_design_refuses_more_than_four_anchors_per_item():
    with pytest.raises(ValueError, match="4N"):
        anchor_design(20, anchors_per_item=5)


@pytest.mark.parametrize("n_items", [2, 5, 31, 200])
@pytest.mark.parametrize("per_item", [1, 2.5, 4, 8])
def test_random_regular_design_balanced_and_connected(n_items, per_item):
    budget = max(n_items - 1, int(per_item * n_items))
    i, j = random_regular_design(n_items, budget, rng=3)
    deg = degrees(n_items, i, j)
    assert len(i) == budget
    assert deg.max() - deg.min() <= 2
    assert n_components(n_items, i, j) == 1
    assert (i != j).all()


def test_designs_refuse_a_budget_that_cannot_connect():
    with pytest.raises(ValueError, match="cannot connect"):
        random_regular_design(10, 8)
    with pytest.raises(ValueError, match="cannot connect"):
        anchor_design(10, budget=5)


def test_davidson_information_is_bernoulli_without_ties_and_matches_finite_differences():
    d = np.array([-2.0, 0.0, 0.7, 3.0])
    p = 1 / (1 + np.exp(-d))
    np.testing.assert_allclose(davidson_information(d, 0.0), p * (1 - p))
    nu, h = 0.8, 1e-5

    def probs(x):
        a, b = np.exp(x / 2), np.exp(-x / 2)
        return np.stack([a, b, np.full_like(x, nu)]) / (a + b + nu)

    slope = (probs(d + h) - probs(d - h)) / (2 * h)
    np.testing.assert_allclose(davidson_information(d, nu), (slope**2 / probs(d)).sum(axis=0), rtol=1e-6)


def test_adaptive_pairs_prefer_close_uncertain_pairs_and_spread_the_batch():
    rng = np.random.default_rng(0)
    scores = np.sort(rng.normal(0, 2, 60))
    i, j = random_regular_design(60, 120, rng=1)
    bi, bj = adaptive_pairs(scores, 30, i=i, j=j, per_item=1, rng=2)
    assert len(bi) == 30
    assert degrees(60, bi, bj).max() == 1  # one use per item per batch
    ri, rj = random_regular_design(60, 60, rng=4)
    # Far-apart pairs are nearly certain: the adaptive batch is much closer in score than random pairs.
    assert np.abs(scores[bi] - scores[bj]).mean() < 0.5 * np.abs(scores[ri] - scores[rj]).mean()


def test_adaptive_pairs_skip_a_certain_pair():
    # Items 0 and 1 are far apart (P(0 beats 1) ~ 1); 1..3 are close: the pair (0, 1) is never chosen first.
    scores = np.array([12.0, 0.0, 0.1, -0.1])
    i, j = np.array([0, 1, 2]), np.array([1, 2, 3])
    bi, bj = adaptive_pairs(scores, 1, i=i, j=j, rng=0)
    assert 0 not in (bi[0], bj[0])


def test_adaptive_design_beats_random_at_equal_budget():
    """A wide score spread and a budget of 4 comparisons per item, Davidson ties, 12 seeded
    repetitions: adaptive pairs give better rank correlation and lower RMSE than a random
    regular design with the same budget (the same true scores for both)."""
    n, budget, sd = 40, 160, 2.5
    gains = []
    for rep in range(12):
        truth = np.random.default_rng(rep).normal(0, sd, n)
        result = {}
        for design in ("random", "adaptive"):
            rng = np.random.default_rng([rep, 1])
            comp = design_comparisons(design, n, budget, lambda i, j: simulate_comparisons(truth, i, j, nu=0.5, rng=rng), 1 / sd**2, rng)
            assert len(comp) == budget
            result[design] = accuracy(fit(comp, ties="davidson", l2=1 / sd**2, se=False).scores, truth)
        gains.append(np.subtract(result["adaptive"], result["random"]))
    spearman_gain, rmse_gain = np.mean(gains, axis=0)
    assert spearman_gain > 0
    assert rmse_gain < 0


def test_simulation_has_a_row_per_design_and_budget(tmp_path):
    from prefkit.scores.simulation import simulate_design, simulation_plot

    budgets = [30, 60, 120]
    table = simulate_design(n_items=30, budgets=budgets, n_reps=2, seed=1)
    assert len(table) == 3 * len(budgets)
    assert set(zip(table["design"], table["budget"])) == {(d, b) for d in ("anchor", "random", "adaptive") for b in budgets}
    assert table["spearman"].between(-1, 1).all() and (table["rmse"] > 0).all() and (table["reps"] == 2).all()
    assert (table["comparisons"] <= table["budget"]).all()
    assert (table.loc[table["design"] == "anchor", "comparisons"] <= 4 * 30).all()
    # More comparisons, better scores: the largest budget beats the smallest for every design.
    for _, rows in table.groupby("design"):
        assert rows.sort_values("budget")["spearman"].iloc[-1] > rows.sort_values("budget")["spearman"].iloc[0]
    assert simulation_plot(table, tmp_path / "sim.png", n_items=30).stat().st_size > 1000


def _cli(*args):
    from prefkit.cli import main

    return main([str(a) for a in args])


def test_design_cli_writes_the_pairs_file(tmp_path, capsys):
    docs = tmp_path / "docs.csv"
    pd.DataFrame({"document_id": [f"d{k}" for k in range(30)], "text": [f"text {k}" for k in range(30)]}).to_csv(docs, index=False)
    for method, budget in (("anchor", 120), ("random", 90)):
        out = tmp_path / f"{method}.csv"
        assert _cli("scores", "design", "--items", docs, "--budget", budget, "--method", method, "--out", out) == 0
        pairs = pd.read_csv(out)
        assert list(pairs.columns) == ["item_a", "item_b"] and len(pairs) <= budget
        assert set(pairs["item_a"]) | set(pairs["item_b"]) == {f"d{k}" for k in range(30)}
        names = sorted(set(pairs["item_a"]) | set(pairs["item_b"]))
        i, j = pairs["item_a"].map(names.index).to_numpy(), pairs["item_b"].map(names.index).to_numpy()
        assert n_components(30, i, j) == 1
    # Adaptive: the next batch given comparisons made so far (the random pairs, judged by a known truth).
    truth = np.linspace(-3, 3, 30)
    made = pd.read_csv(tmp_path / "random.csv")
    a, b = made["item_a"].str[1:].astype(int), made["item_b"].str[1:].astype(int)
    comp = simulate_comparisons(truth, a, b, nu=0.3, rng=0)
    made["winner"] = np.array(["a", "b", "tie"])[comp.y.argmax(axis=1)]
    made.rename(columns={"item_a": "doc_a", "item_b": "doc_b"}).to_csv(tmp_path / "comparisons.csv", index=False)
    out = tmp_path / "next.csv"
    args = ("scores", "design", "--items", docs, "--budget", 15, "--method", "adaptive", "--comparisons", tmp_path / "comparisons.csv")
    assert _cli(*args, "--out", out) == 0
    nxt = pd.read_csv(out)
    assert len(nxt) == 15 and not (nxt["item_a"] == nxt["item_b"]).any()
    gap = np.abs(nxt["item_a"].str[1:].astype(int) - nxt["item_b"].str[1:].astype(int))
    assert gap.mean() < np.abs(a - b).mean()  # the next pairs are closer in score than random ones
    capsys.readouterr()


def test_design_cli_bad_input_is_one_line(tmp_path, capsys):
    table = tmp_path / "items.csv"
    pd.DataFrame({"name": ["x", "y"]}).to_csv(table, index=False)
    assert _cli("scores", "design", "--items", table, "--budget", 3) == 2
    assert "no id column" in capsys.readouterr().err
    assert _cli("scores", "design", "--items", 10, "--budget", 5) == 2
    assert "cannot connect" in capsys.readouterr().err


def test_simulate_cli_writes_table_and_plot(tmp_path, capsys):
    out = tmp_path / "sim"
    assert _cli("scores", "simulate", "--items", 20, "--budgets", "20,40", "--reps", 1, "--designs", "random,anchor", "--out", out) == 0
    table = pd.read_csv(out / "simulation.csv")
    assert len(table) == 4 and set(table["design"]) == {"random", "anchor"}
    assert (out / "simulation.png").stat().st_size > 1000
    assert "spearman" in capsys.readouterr().out
