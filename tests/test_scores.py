"""Scores from comparisons: Bradley-Terry with ties, weights, priors, covariates, intervals,
graph checks, and the `prefkit scores` commands."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from prefkit.cli import main
from prefkit.errors import InputError
from prefkit.scores.bt import choose_l2, elo, fit, win_rate
from prefkit.scores.data import (
    Comparisons,
    load_comparisons,
    random_pairs,
    simulate_comparisons,
)
from prefkit.scores.evaluate import heldout_log_loss
from prefkit.scores.intervals import bootstrap, sandwich


def _true_scores(n: int, seed: int = 0) -> np.ndarray:
    s = np.random.default_rng(seed).normal(size=n)
    return s - s.mean()


def _two_items(wins: int, losses: int, ties: int) -> Comparisons:
    y = np.eye(3)[[0] * wins + [1] * losses + [2] * ties]
    n = len(y)
    return Comparisons(["a", "b"], np.zeros(n), np.ones(n), y)


def test_recovers_known_scores():
    s = _true_scores(40)
    i, j = random_pairs(40, 6000, rng=1)
    comp = simulate_comparisons(s, i, j, nu=0.5, rng=2)
    result = fit(comp)
    assert spearmanr(result.scores, s)[0] > 0.95
    assert abs(result.scores.mean()) < 1e-9  # the stated convention
    assert result.converged
    assert result.tie_param == pytest.approx(0.5, abs=0.1)


def test_davidson_likelihood_matches_hand_computation():
    # Two items, 6 wins, 3 losses, 2 ties: the model is saturated, so the MLE is
    # pi_a / pi_b = 6/3 and nu = ties / sqrt(wins * losses); P = counts / 11.
    result = fit(_two_items(6, 3, 2), ties="davidson")
    assert result.scores[0] - result.scores[1] == pytest.approx(math.log(2), abs=1e-8)
    assert result.tie_param == pytest.approx(2 / math.sqrt(18), abs=1e-8)
    hand = 6 * math.log(6 / 11) + 3 * math.log(3 / 11) + 2 * math.log(2 / 11)
    assert result.loglik == pytest.approx(hand, abs=1e-9)
    # The textbook form: P(tie) = nu sqrt(pi_a pi_b) / (pi_a + pi_b + nu sqrt(pi_a pi_b)).
    pa, pb, nu = math.exp(result.scores[0]), math.exp(result.scores[1]), result.tie_param
    z = pa + pb + nu * math.sqrt(pa * pb)
    assert result.predict([0], [1])[0] == pytest.approx([pa / z, pb / z, nu * math.sqrt(pa * pb) / z], abs=1e-12)


def test_rao_kupper_two_items_saturated():
    result = fit(_two_items(6, 3, 2), ties="rao_kupper")
    assert result.predict([0], [1])[0] == pytest.approx([6 / 11, 3 / 11, 2 / 11], abs=1e-6)
    assert result.tie_param > 1  # theta >= 1 by construction


def test_ties_change_the_fit_as_theory_says():
    # Davidson's win odds ignore ties (pi_a / pi_b = wins / losses); counting a tie as half a
    # win pulls the two scores together: log(7 / 4) < log 2.
    comp = _two_items(6, 3, 2)
    davidson, half = fit(comp, ties="davidson"), fit(comp, ties="half")
    assert davidson.scores[0] - davidson.scores[1] == pytest.approx(math.log(2), abs=1e-8)
    assert half.scores[0] - half.scores[1] == pytest.approx(math.log(7 / 4), abs=1e-8)
    # More ties in the data -> a larger fitted tie parameter.
    s = _true_scores(20)
    i, j = random_pairs(20, 4000, rng=3)
    few, many = (fit(simulate_comparisons(s, i, j, nu=nu, rng=4)) for nu in (0.2, 1.5))
    assert few.tie_param < many.tie_param
    assert many.tie_param == pytest.approx(1.5, rel=0.15)


def test_no_ties_is_plain_bradley_terry_for_every_tie_model():
    s = _true_scores(15)
    i, j = random_pairs(15, 1500, rng=5)
    comp = simulate_comparisons(s, i, j, nu=0.0, rng=6)
    fits = [fit(comp, ties=t) for t in ("davidson", "rao_kupper", "half")]
    for other in fits[1:]:
        assert np.allclose(other.scores, fits[0].scores, atol=1e-7)
    assert fits[0].tie_param == 0.0 and fits[1].tie_param == 1.0


@pytest.mark.parametrize("options", [{}, {"home": True}, {"use_covariates": True}, {"ties": "rao_kupper", "l2": 0.5}])
def test_weights_equal_duplicated_rows(options):
    rng = np.random.default_rng(7)
    s = _true_scores(12)
    i, j = random_pairs(12, 600, rng=8)
    x = rng.normal(size=(600, 1))
    comp = simulate_comparisons(s, i, j, nu=0.6, home=0.2, covariates=x, beta=[0.5], rng=9)
    times = rng.integers(1, 4, len(comp))
    weighted = comp.reweighted(times.astype(float))
    repeated = comp.subset(np.repeat(np.arange(len(comp)), times))
    a, b = fit(weighted, **options), fit(repeated, **options)
    assert np.allclose(a.scores, b.scores, atol=1e-6)
    assert a.tie_param == pytest.approx(b.tie_param, abs=1e-6)
    assert a.loglik == pytest.approx(b.loglik, rel=1e-9)


def test_disconnected_graph_is_reported_not_merged():
    s = _true_scores(6)
    i = np.array([0, 1, 2, 0, 3, 4, 5, 3] * 5)
    j = np.array([1, 2, 0, 2, 4, 5, 3, 5] * 5)
    comp = simulate_comparisons(s, i, j, nu=1.0, rng=10)
    with pytest.raises(InputError, match="disconnected: 2 components of sizes 3, 3"):
        fit(comp)
    result = fit(comp, per_component=True)
    assert set(result.component) == {0, 1}
    for k in (0, 1):
        assert abs(result.scores[result.component == k].mean()) < 1e-9
    assert "component" in result.table().columns


def test_unbeaten_item_needs_a_prior():
    comp = _two_items(5, 0, 0)
    with pytest.raises(InputError, match="do not exist"):
        fit(comp)
    assert np.isfinite(fit(comp, l2=1.0).scores).all()


def _coverage(method: str, level: float = 0.9) -> float:
    hits = []
    for seed in range(3):
        s = _true_scores(40, seed)
        i, j = random_pairs(40, 2500, rng=seed + 10)
        comp = simulate_comparisons(s, i, j, nu=0.5, rng=seed + 20)
        result = fit(comp, level=level)
        if method == "sandwich":
            sandwich(comp, result, level=level)
        elif method == "bootstrap":
            bootstrap(comp, result, 80, level=level, seed=seed)
        hits.append((result.lower <= s) & (s <= result.upper))
    return float(np.mean(hits))


@pytest.mark.parametrize("method", ["hessian", "sandwich", "bootstrap"])
def test_intervals_cover_at_about_the_nominal_rate(method):
    assert 0.8 <= _coverage(method) <= 0.97


def test_clustered_intervals_are_wider_when_clusters_share_noise():
    # Each worker judges with their own bias for item 0: clustered se must exceed plain se.
    rng = np.random.default_rng(11)
    s = _true_scores(10)
    i, j = random_pairs(10, 3000, rng=12)
    worker = rng.integers(0, 20, 3000)
    bias = rng.normal(scale=1.5, size=20)[worker] * ((i == 0) | (j == 0)) * np.where(i == 0, 1, -1)
    comp = simulate_comparisons(s, i, j, nu=0.3, covariates=bias[:, None], beta=[1.0], rng=13)
    comp.cluster, comp.covariates, comp.covariate_names = worker, None, []
    plain = sandwich(comp, fit(comp))
    clustered = sandwich(comp, fit(comp), cluster=True)
    assert clustered.se[0] > 1.5 * plain.se[0]
    assert clustered.interval == "sandwich clustered"


def test_home_advantage_and_style_covariate_recovered():
    rng = np.random.default_rng(14)
    s = _true_scores(30)
    i, j = random_pairs(30, 8000, rng=15)
    x = rng.normal(size=(8000, 1))
    comp = simulate_comparisons(s, i, j, nu=0.5, home=0.4, covariates=x, beta=[0.7], rng=16)
    result = fit(comp, home=True, use_covariates=True)
    assert result.home == pytest.approx(0.4, abs=0.08)
    assert result.beta[0] == pytest.approx(0.7, abs=0.08)
    assert spearmanr(result.scores, s)[0] > 0.95
    plain = fit(comp)  # without the covariate the fit is worse in likelihood
    assert plain.loglik < result.loglik


def test_l2_cv_picks_a_prior_and_shrinks():
    s = _true_scores(60)
    i, j = random_pairs(60, 500, rng=17)
    comp = simulate_comparisons(s, i, j, rng=18)
    best, losses = choose_l2(comp, folds=3)
    assert best == min(losses, key=losses.get)
    shrunk = fit(comp, l2=best)
    assert np.abs(shrunk.scores).sum() < np.abs(fit(comp, l2=1e-3).scores).sum()


def test_heldout_bt_beats_baselines_on_bt_data():
    s = _true_scores(50) * 1.5
    i, j = random_pairs(50, 3000, rng=19)
    comp = simulate_comparisons(s, i, j, nu=0.4, rng=20)
    out = heldout_log_loss(comp, ties=("davidson", "half"), l2=0.1, folds=3)
    assert out["bt_davidson"] < out["bt_half"] < out["constant"]
    assert out["bt_davidson"] < out["win_rate"]
    assert elo(comp).log_loss(comp) < out["constant"]
    assert win_rate(comp).predict([0], [1]).sum() == pytest.approx(1.0)


def test_large_problem_uses_the_sparse_solver_and_agrees():
    from prefkit.scores import bt

    s = _true_scores(300)
    i, j = random_pairs(300, 20000, rng=21)
    comp = simulate_comparisons(s, i, j, nu=0.5, rng=22)
    sparse = fit(comp, se=False)  # 300 items: conjugate gradients
    limit, bt.DENSE_LIMIT = bt.DENSE_LIMIT, 10_000
    try:
        dense = fit(comp, se=False)
    finally:
        bt.DENSE_LIMIT = limit
    assert np.allclose(sparse.scores, dense.scores, atol=1e-6)
    assert sparse.loglik == pytest.approx(dense.loglik, abs=1e-6)


# --------------------------------------------------------------------------- readers and CLI


def _write_documents(folder, n_items=8, n=400, seed=23):
    s = 2 * _true_scores(n_items, seed)
    i, j = random_pairs(n_items, n, rng=seed)
    comp = simulate_comparisons(s, i, j, nu=0.3, rng=seed + 1)
    winner = np.array(["a", "b", "tie"])[comp.y.argmax(axis=1)]
    pd.DataFrame({"comparison_id": np.arange(n) + 100, "doc_a": i + 10, "doc_b": j + 10, "winner": winner,
                  "worker_id": [f"w{k % 7}" for k in range(n)]}).to_csv(folder / "comparisons.csv", index=False)
    pd.DataFrame({"document_id": np.arange(n_items) + 10, "text": [f"document number {k}" for k in range(n_items)]}).to_csv(
        folder / "docs.csv", index=False
    )
    return s


def test_document_comparisons_read_with_workers(tmp_path):
    _write_documents(tmp_path)
    comp = load_comparisons("comparisons", tmp_path / "comparisons.csv", cluster="worker")
    assert comp.n_items == 8 and len(comp) == 400
    assert len(np.unique(comp.cluster)) == 7
    assert comp.texts["10"] == "document number 0"


def test_cli_fit_and_predict_end_to_end(tmp_path, capsys):
    truth = _write_documents(tmp_path)
    out = tmp_path / "fit"
    code = main(["scores", "fit", "comparisons", str(tmp_path / "comparisons.csv"), "--out", str(out),
                 "--interval", "bootstrap", "--bootstrap", "20", "--cluster", "worker", "--top", "2", "--home"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "top 2:" in printed and "document number" in printed
    table = pd.read_csv(out / "scores.csv")
    for col in ("item", "score", "se", "lower", "upper", "wins", "losses", "ties", "comparisons", "interval"):
        assert col in table.columns
    assert table["interval"].iloc[0].startswith("bootstrap clustered")
    assert spearmanr(table.set_index("item").loc[np.arange(8) + 10, "score"], truth)[0] > 0.8
    info = json.loads((out / "fit.json").read_text())
    assert info["convention"].startswith("mean zero") and info["data_hash"]
    assert (out / "scores.png").stat().st_size > 0 and (out / "config.yaml").is_file()

    pd.DataFrame({"item_a": ["10", "11"], "item_b": ["12", "10"], "winner": ["a", "tie"]}).to_csv(tmp_path / "p.csv", index=False)
    assert main(["scores", "predict", str(out), str(tmp_path / "p.csv"), "--out", str(tmp_path / "preds.csv")]) == 0
    assert "log_loss=" in capsys.readouterr().out
    preds = pd.read_csv(tmp_path / "preds.csv")
    assert np.allclose(preds[["p_a", "p_b", "p_tie"]].sum(axis=1), 1.0)


def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys):
    _write_documents(tmp_path)
    bad = pd.read_csv(tmp_path / "comparisons.csv")
    bad.loc[4, "winner"] = "maybe"
    bad.to_csv(tmp_path / "comparisons.csv", index=False)
    assert main(["scores", "fit", "comparisons", str(tmp_path / "comparisons.csv"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "row 5" in err and "\n" not in err
    assert main(["scores", "fit", "comparisons", str(tmp_path / "comparisons.csv"), "--ties", "thurstone"]) == 2


def test_cli_kaggle_arena_with_style_control(tmp_path, capsys):
    from prefkit.data.synthetic import write_synthetic_arena

    write_synthetic_arena(tmp_path / "arena", n_train=600, n_test=0, seed=3)
    code = main(["scores", "fit", "kaggle", str(tmp_path / "arena" / "train.csv"), "--style", "--home",
                 "--out", str(tmp_path / "lb"), "--top", "0"])
    assert code == 0
    info = json.loads((tmp_path / "lb" / "fit.json").read_text())
    assert set(info["beta"]) == {"logratio_chars", "logratio_headers", "logratio_list_items", "logratio_bold"}
    assert "covariate logratio_chars" in capsys.readouterr().out


def test_jsonl_pairs_and_votes_become_comparisons(tmp_path):
    rows = [{"pair_id": k, "id1": f"d{k % 3}", "id2": f"d{(k + 1) % 3}", "text1": f"text {k % 3}",
             "text2": f"text {(k + 1) % 3}", "label": [1, 2, 0][k % 3]} for k in range(9)]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    comp = load_comparisons("jsonl", tmp_path / "p.jsonl")
    assert comp.items == ["d0", "d1", "d2"] and comp.texts["d1"] == "text 1"
    assert comp.y[:, 2].sum() == 3

    votes = pd.DataFrame({"winner": ["left", "right", "tie", "left"], "prompt_text": ["p"] * 4,
                          "result_x": ["x1", "y1", "x1", "x2"], "result_y": ["y1", "x1", "y1", "y2"],
                          "left": ["m1", "m2", "m1", "m1"], "right": ["m2", "m1", "m2", "m3"], "worker": ["a", "b", "a", "c"]})
    votes.to_csv(tmp_path / "votes.csv", index=False)
    aggregated = load_comparisons("votes", tmp_path / "votes.csv")
    assert aggregated.weight.sum() == 4 and len(aggregated) == 2  # vote shares, weight = votes
    per_vote = load_comparisons("votes", tmp_path / "votes.csv", cluster="worker")
    assert len(per_vote) == 4 and len(np.unique(per_vote.cluster)) == 3
    shares = fit(aggregated, l2=0.1, se=False).scores
    assert np.allclose(shares, fit(per_vote, l2=0.1, se=False).scores, atol=1e-8)


def test_predict_refuses_unknown_items(tmp_path, capsys):
    _write_documents(tmp_path)
    out = tmp_path / "fit"
    assert main(["scores", "fit", "comparisons", str(tmp_path / "comparisons.csv"), "--out", str(out), "--top", "0"]) == 0
    pd.DataFrame({"doc_a": ["10"], "doc_b": ["999"]}).to_csv(tmp_path / "p.csv", index=False)
    assert main(["scores", "predict", str(out), str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert "row 1" in err and "doc_b" in err and "'999'" in err


def test_model_based_intervals_with_a_prior_describe_the_centred_scores():
    from prefkit.scores.bt import fit
    from prefkit.scores.data import random_pairs, simulate_comparisons

    rng = np.random.default_rng(3)
    true = rng.normal(size=16)
    i, j = random_pairs(16, 3000, rng)
    comp = simulate_comparisons(true, i, j, nu=0.3, rng=rng)
    plain, ridge = fit(comp, l2=0.0), fit(comp, l2=0.01)
    # a weak prior barely changes the scores, so it must barely change their standard errors
    np.testing.assert_allclose(ridge.se, plain.se, rtol=0.05)
