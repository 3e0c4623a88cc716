"""Absolute scores: soft-BT pairs, the heads and their warm starts, the metrics, 4N comparative
scoring, item tables, and the two-stage runner end to end on a tiny random encoder."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from prefkit.absolute.comparative import choose_anchors, comparative_scores, dense_scores
from prefkit.absolute.config import FitConfig, load_absolute_config
from prefkit.absolute.data import find_fold_map, find_train_file, item_folds, load_items
from prefkit.absolute.heads import PairHead, ScorerHead, StackedHead, fit_on_pairs, fit_regressor, predict, warm_head
from prefkit.absolute.softbt import sample_partners, soft_bt_pairs, soft_targets
from prefkit.errors import InputError
from prefkit.metrics import absolute_summary, mcrmse, qwk, spearman

FAST = FitConfig(epochs=40, batch_size=64, lr=3e-3, patience=5)


def latent_embeddings(n=200, dim=16, seed=0):
    """Embeddings whose first direction carries a latent score (plus noise dimensions)."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=n)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x[:, 0] = latent
    return x, latent


# ------------------------------------------------------------------ soft-BT pairs


def test_soft_targets_at_infinite_gamma_are_hard_labels():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, size=50) * 0.5  # a label grid, with equal scores
    pairs = soft_bt_pairs(50, y, k=6, gamma=np.inf, seed=0)
    gap = y[pairs.i] - y[pairs.j]
    hard = np.where(gap > 0, 1.0, np.where(gap < 0, 0.0, 0.5))
    assert np.array_equal(pairs.targets[:, 0], hard)
    # and a very large finite gamma approaches them
    np.testing.assert_allclose(soft_targets(y[pairs.i], y[pairs.j], 1e6), hard[:, None].ravel(), atol=1e-12)
    assert np.allclose(soft_targets([1.0], [0.0], 1e-9), 0.5)


def test_soft_bt_pairs_k_distinct_partners_per_item():
    i, j = sample_partners(30, 5, np.random.default_rng(0))
    assert (np.bincount(i, minlength=30) == 5).all()
    assert (i != j).all()
    assert all(len(set(j[i == k])) == 5 for k in range(30))
    y = np.arange(30, dtype=float).reshape(-1, 1).repeat(2, axis=1)
    pairs = soft_bt_pairs(30, y, k=5, gamma=0.7, seed=3)
    assert pairs.targets.shape == (150, 2)
    np.testing.assert_allclose(pairs.targets[:, 0], 1 / (1 + np.exp(-0.7 * (pairs.i - pairs.j))))


# ------------------------------------------------------------------ heads


def test_pair_head_is_antisymmetric():
    torch.manual_seed(0)
    head = PairHead(8, 16, 2).eval()
    a, b = torch.randn(5, 8), torch.randn(5, 8)
    with torch.no_grad():
        torch.testing.assert_close(head(a, b), -head(b, a))


def test_scorer_trained_on_soft_pairs_ranks_by_latent_score():
    x, latent = latent_embeddings()
    pairs = soft_bt_pairs(150, latent[:150], k=8, gamma=2.0, seed=0)
    torch.manual_seed(0)
    head = ScorerHead(x.shape[1], 32, 1, 0.0)
    fit_on_pairs(head, x[:150], pairs, FAST)
    assert spearman(predict(head, x[150:])[:, 0], latent[150:]) > 0.9  # unseen items


def test_warm_start_uses_stage1_weights_and_stack_keeps_them_frozen():
    x, latent = latent_embeddings()
    torch.manual_seed(0)
    stage1 = ScorerHead(x.shape[1], 16, 1)
    fit_on_pairs(stage1, x, soft_bt_pairs(len(x), latent, k=4, seed=0), FAST)
    stage1_state = {k: v.clone() for k, v in stage1.state_dict().items()}
    fresh = ScorerHead(x.shape[1], 16, 1)

    warm = warm_head(stage1)
    for name, value in warm.state_dict().items():  # starts exactly at stage 1
        torch.testing.assert_close(value, stage1_state[name])
        assert not torch.equal(value, fresh.state_dict()[name])
    fit_regressor(warm, x, (2 * latent + 3).reshape(-1, 1).astype(np.float32), FAST)
    assert any(not torch.equal(v, stage1_state[k]) for k, v in warm.state_dict().items())  # and trains on
    for name, value in stage1.state_dict().items():  # stage 1 itself untouched
        torch.testing.assert_close(value, stage1_state[name])

    stacked = StackedHead(stage1, 8, 1)
    top_before = {k: v.clone() for k, v in stacked.top.state_dict().items()}
    fit_regressor(stacked, x, latent.reshape(-1, 1).astype(np.float32), FAST)
    for name, value in stacked.base.state_dict().items():  # the stage-1 projection: loaded and frozen
        torch.testing.assert_close(value, stage1_state[f"projection.{name}"])
    assert any(not torch.equal(v, top_before[k]) for k, v in stacked.top.state_dict().items())


# ------------------------------------------------------------------ metrics


def test_mcrmse_matches_a_hand_computation():
    y = np.array([[3.0, 2.5], [4.0, 3.0], [2.0, 1.5]])
    p = np.array([[3.5, 2.5], [3.0, 3.0], [2.0, 2.5]])
    by_hand = (np.sqrt((0.25 + 1.0 + 0.0) / 3) + np.sqrt((0.0 + 0.0 + 1.0) / 3)) / 2
    assert mcrmse(y, p) == pytest.approx(by_hand)
    summary = absolute_summary(y, p, ["cohesion", "syntax"])
    assert summary["mcrmse"] == pytest.approx(by_hand)
    assert summary["rmse_syntax"] == pytest.approx(np.sqrt(1 / 3))


def test_qwk_matches_sklearn_after_rounding_to_the_grid():
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(0)
    y = rng.integers(2, 11, size=200) * 0.5  # 1.0 .. 5.0 in 0.5 steps
    pred = y + rng.normal(scale=0.6, size=200)
    rounded = np.clip(np.round(pred * 2) / 2, y.min(), y.max())
    expected = cohen_kappa_score((y * 2).astype(int), (rounded * 2).astype(int), weights="quadratic")
    assert qwk(y, pred, step=0.5) == pytest.approx(expected)


# ------------------------------------------------------------------ 4N comparative scoring


def test_4n_scoring_recovers_the_latent_order_with_few_comparisons():
    rng = np.random.default_rng(0)
    latent_new = rng.normal(size=120)
    known = rng.normal(size=300)
    anchors = choose_anchors(known, 16, rng)
    pool = np.concatenate([latent_new, known[anchors]])

    def pair_model(u, v):  # a noisy judge of P(u beats v)
        d = pool[u] - pool[v] + rng.normal(scale=0.3, size=len(u))
        return 1 / (1 + np.exp(-2.0 * d))

    result = comparative_scores(pair_model, len(latent_new), known[anchors], anchors_per_item=4, gamma=2.0, seed=0)
    assert result.n_comparisons <= 4 * len(latent_new)
    assert spearman(result.scores, latent_new) > 0.9
    assert np.corrcoef(result.scores, latent_new)[0, 1] > 0.9
    assert abs(np.mean(result.scores) - np.mean(latent_new)) < 0.3  # on the anchors' scale, not BT units
    dense = dense_scores(lambda u, v: pair_model(u, v), 40)
    assert spearman(dense, latent_new[:40]) > 0.9


# ------------------------------------------------------------------ item tables


def test_item_table_columns_found_and_bad_target_named(tmp_path):
    path = tmp_path / "train.csv"
    pd.DataFrame({"essay_id": ["a", "b", "c"], "full_text": ["one long text", "two long texts", "three"], "score": [1.0, 2.5, 3], "standard_error": [0.1, 0.2, 0.3]}).to_csv(path, index=False)
    table = load_items(find_train_file(tmp_path))
    assert table.targets == ["score"]
    assert table.items["id"].tolist() == ["a", "b", "c"]
    assert find_fold_map(tmp_path) is None
    folds = item_folds(table, None, n_folds=3)
    assert sorted(folds) == [0, 1, 2]
    path.write_text("essay_id,full_text,score\na,one text,1\nb,two texts,high\n")
    with pytest.raises(InputError) as err:
        load_items(path)
    message = str(err.value)
    assert "train.csv" in message and "row 2" in message and "'score'" in message


def test_config_refuses_unknown_stage2_mode(tmp_path):
    with pytest.raises(InputError, match="stage2"):
        load_absolute_config(None, ["stage2=[warm,boost]"])
    cfg = load_absolute_config(None, ["pairs.gamma=3", "head.hidden=8"])
    assert cfg.pairs.gamma == 3.0 and cfg.head.hidden == 8


# ------------------------------------------------------------------ end to end


def essay_folder(folder, n=36):
    rng = np.random.default_rng(0)
    rows = []
    for k in range(n):
        good = int(rng.integers(0, 6))
        text = " ".join(["good"] * good + list(rng.choice(["fox", "dog", "list", "rome", "item"], 6)))
        rows.append({"text_id": f"e{k}", "full_text": text, "cohesion": 1 + 0.5 * good, "syntax": 1 + 0.5 * int(rng.integers(0, 5))})
    pd.DataFrame(rows).to_csv(folder / "train.csv", index=False)
    (folder / "fold_map.json").write_text(json.dumps({f"e{k}": "ABC"[k % 3] for k in range(n)}))
    pd.DataFrame(rows[:6]).drop(columns=["cohesion", "syntax"]).to_csv(folder / "unseen.csv", index=False)


def test_two_stage_runner_end_to_end(tmp_path, tiny_bert, capsys):
    from prefkit.cli import main

    essay_folder(tmp_path)
    out = tmp_path / "run"
    args = ["absolute", "run", "--data", str(tmp_path), "--out", str(out), "--no-progress", f"embed.model={tiny_bert}",
            f"embed.cache_dir={tmp_path / 'cache'}", "embed.max_length=32", "fit.epochs=3", "pair_fit.epochs=2"]  # fmt: skip
    assert main(args) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    figures = dict(kv.split("=") for kv in last.split())
    assert set(figures) == {"mcrmse_absolute", "mcrmse_two_stage"} and all(np.isfinite(float(v)) for v in figures.values())
    oof = pd.read_csv(out / "oof.csv")
    assert len(oof) == 36 and sorted(oof["fold"].unique()) == [0, 1, 2]  # folds A, B, C of the map
    for model in ("absolute", "two_stage_warm", "two_stage_stack", "two_stage_fusion"):
        for target in ("cohesion", "syntax"):
            assert oof[f"{model}__{target}"].notna().all()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["oof"]["absolute"]["mcrmse"] == pytest.approx(float(figures["mcrmse_absolute"]), abs=1e-4)
    assert load_absolute_config(out / "config.yaml").embed.max_length == 32  # the saved config reloads

    # --test: fit on all rows, score an unlabelled table (embeddings of the train texts come from the cache)
    assert main(args + ["--test", str(tmp_path / "unseen.csv")]) == 0
    test_pred = pd.read_csv(out / "test_predictions.csv")
    assert test_pred["id"].tolist() == [f"e{k}" for k in range(6)] and test_pred["two_stage_warm__cohesion"].notna().all()


def test_compare_command_reports_the_three_routes(tmp_path, tiny_bert, capsys):
    from prefkit.cli import main

    essay_folder(tmp_path)
    out = tmp_path / "cmp"
    args = ["absolute", "compare", "--data", str(tmp_path), "--out", str(out), "--no-progress", f"embed.model={tiny_bert}",
            f"embed.cache_dir={tmp_path / 'cache'}", "embed.max_length=32", "fit.epochs=3", "pair_fit.epochs=2",
            "comparative.target=cohesion", "comparative.n_anchors=4", "comparative.dense_subset=5"]  # fmt: skip
    assert main(args) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert set(dict(kv.split("=") for kv in last.split())) == {"spearman_regression", "spearman_soft_bt", "spearman_4n"}
    result = json.loads((out / "compare.json").read_text())
    assert len(result["folds"]) == 3 and result["target"] == "cohesion"
    assert all(f["comparisons_4n"] <= 4 * f["n_new"] and f["subset_comparisons_dense"] == 10 for f in result["folds"])
