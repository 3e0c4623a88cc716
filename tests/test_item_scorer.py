"""The Siamese item scorer (task item_scorer): antisymmetric pair outputs, the Davidson tie
likelihood, long items kept (head-tail truncated), a scorer that learns a latent ranking from
pairs, and one score per text through the one prediction path."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from prefkit.config import load_config
from prefkit.infer.predict import Predictor, predict_outputs
from prefkit.models.transformer import build_model, load_checkpoint, load_tokenizer
from prefkit.schema import make_pairs
from prefkit.tasks import get_task
from prefkit.testing.tiny import write_tiny_checkpoint
from prefkit.text.batching import BatchPlan
from prefkit.train.engine import train_folds
from prefkit.train.losses import bradley_terry, davidson

torch.set_num_threads(1)


@pytest.fixture
def bert(tiny_bert):
    return tiny_bert


def scorer_config(bert, tmp_path, *overrides):
    return load_config(None, [
        "task=item_scorer", "name=scorer", f"output_dir={tmp_path / 'runs'}", f"model.name_or_path={bert}",
        "render.max_length=48", "train.device=cpu", *overrides,
    ])  # fmt: skip


@pytest.mark.parametrize("ties", ["davidson", "half"])
def test_swapping_the_items_flips_the_score_difference(bert, tmp_path, data, ties):
    pairs, _, _ = data
    cfg = scorer_config(bert, tmp_path, f"scorer.ties={ties}")
    task = get_task(cfg.task, cfg)
    tok = load_tokenizer(cfg.model)
    model = build_model(cfg.model, head=task.head, tokenizer=tok).eval()
    enc = task.encode(task.renderer(tok, cfg.render), pairs, labels=False, swapped=True)

    def outputs(seqs):
        return predict_outputs(model, seqs, tok.pad_token_id, BatchPlan(batch_size=5), per_row=2, combine=task.combine)

    out, out_sw = outputs(enc.seqs), outputs(enc.seqs_swapped)
    np.testing.assert_allclose(out[:, 0], -out_sw[:, 0], atol=1e-5)  # d(B, A) = -d(A, B)
    np.testing.assert_allclose(out[:, 1], out_sw[:, 1], atol=1e-5)  # the tie parameter is symmetric
    p, p_sw = task.predictions(out), task.predictions(out_sw)
    np.testing.assert_allclose(p, task.unswap(p_sw), atol=1e-5)
    np.testing.assert_allclose(p[:, :3].sum(axis=1), 1.0)


def test_davidson_loss_matches_the_hand_computed_likelihood():
    d, nu = 1.0, 0.5
    pa, pb = math.exp(d / 2), math.exp(-d / 2)  # sqrt(pA pB) = 1
    p_tie = nu / (pa + pb + nu)
    p_a = pa / (pa + pb + nu)
    logits = torch.tensor([[d, math.log(nu)], [d, math.log(nu)]])
    targets = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    expected = -(math.log(p_tie) + math.log(p_a)) / 2
    assert float(davidson(logits, targets)) == pytest.approx(expected, rel=1e-6)
    # a soft target is the expected log-likelihood
    soft = torch.tensor([[0.5, 0.25, 0.25]])
    p_b = pb / (pa + pb + nu)
    assert float(davidson(logits[:1], soft)) == pytest.approx(-(0.5 * math.log(p_a) + 0.25 * math.log(p_b) + 0.25 * math.log(p_tie)))


def test_margin_and_reward_centring_follow_trl():
    # TRL: -log sigmoid(r_chosen - r_rejected - margin) + coef * mean((r_chosen + r_rejected)^2)
    s_a, s_b, margin, coef = 2.0, 0.5, 1.0, 0.1
    logits = torch.tensor([[s_a - s_b, 0.0, s_a, s_b]])
    targets = torch.tensor([[1.0, 0.0, 0.0, margin]])
    expected = -math.log(1 / (1 + math.exp(-(s_a - s_b - margin)))) + coef * (s_a + s_b) ** 2
    assert float(bradley_terry(logits, targets, center_coefficient=coef)) == pytest.approx(expected, rel=1e-6)
    # B won by the margin: the margin now favours B
    targets_b = torch.tensor([[0.0, 1.0, 0.0, margin]])
    expected_b = -math.log(1 / (1 + math.exp(s_a - s_b + margin)))
    assert float(bradley_terry(logits, targets_b)) == pytest.approx(expected_b, rel=1e-6)


def test_soft_targets_at_large_gamma_train_as_hard_labels():
    from prefkit.absolute.softbt import soft_bt_pairs

    scores = np.array([0.0, 1.0, 2.5, 2.5, 4.0])
    pairs = soft_bt_pairs(len(scores), scores, k=4, gamma=1e6, seed=3)
    hard = 0.5 * (1 + np.sign(scores[pairs.i] - scores[pairs.j]))
    np.testing.assert_allclose(pairs.targets[:, 0], hard)
    # as pair targets (p_a, p_b, p_tie) the loss equals that of the hard labels
    d = torch.linspace(-2, 2, len(pairs))[:, None]
    t = torch.as_tensor(pairs.targets[:, 0], dtype=torch.float32)[:, None]
    soft = torch.cat([t, 1 - t, torch.zeros_like(t)], dim=1)
    h = torch.as_tensor(hard, dtype=torch.float32)[:, None]
    hard3 = torch.cat([(h == 1).float(), (h == 0).float(), (h == 0.5).float()], dim=1)
    assert float(bradley_terry(d, soft)) == pytest.approx(float(bradley_terry(d, hard3)), rel=1e-6)


def test_a_long_pair_is_truncated_not_dropped(bert, tmp_path):
    cfg = scorer_config(bert, tmp_path)
    task = get_task(cfg.task, cfg)
    tok = load_tokenizer(cfg.model)
    renderer = task.renderer(tok, cfg.render)
    long_a = "alpha " * 3000 + "omega"
    pairs = make_pairs(["long", "short"], [["which?"], ["which?"]], [[long_a], ["fine"]], [["beta " * 2000], ["ok"]],
                       np.array([[1.0, 0, 0], [0, 1.0, 0]]))  # fmt: skip
    enc = task.encode(renderer, pairs)
    assert len(enc) == 2 and len(enc.seqs) == 4
    assert max(len(s) for s in enc.seqs) <= cfg.render.max_length
    kept = tok.decode(enc.seqs[0])
    assert "which" in kept and "alpha" in kept and "omega" in kept  # the prompt, the head and the tail


def latent_pairs(n_items: int = 6, repeats: int = 8, seed: int = 0):
    """Items with latent scores 0..n-1 and every ordered pair ``repeats`` times, the better
    item winning (one very long item among them)."""
    words = "the quick brown fox jumps over lazy dog answer question list item code".split()
    items = [" ".join(words[k:k + 3]) for k in range(n_items)]
    items[2] = items[2] + " and so on" * 400  # longer than any budget: truncated, still scored
    rows = [(i, j) for i in range(n_items) for j in range(n_items) if i != j] * repeats
    rng = np.random.default_rng(seed)
    rng.shuffle(rows)
    labels = np.array([[1.0, 0, 0] if i > j else [0, 1.0, 0] for i, j in rows])
    pairs = make_pairs([f"p{k}" for k in range(len(rows))], [["rate it"]] * len(rows),
                       [[items[i]] for i, _ in rows], [[items[j]] for _, j in rows], labels)  # fmt: skip
    return items, pairs


def test_a_scorer_trained_on_pairs_ranks_items_by_their_latent_score(bert, tmp_path, capsys):
    from scipy.stats import spearmanr

    from prefkit.infer.items import score_items

    items, pairs = latent_pairs()
    folds = np.arange(len(pairs)) % 4
    cfg = scorer_config(bert, tmp_path, "train.batch_size=16", "train.lr=3e-3", "train.max_steps=60", "train.folds=[0]",
                        "train.warmup_ratio=0.0")  # fmt: skip
    res = train_folds(cfg, pairs, folds)
    assert set(res.oof["id"]) == set(pairs["id"][folds == 0])  # the long item's pairs are in the OOF too
    assert {"score_a", "score_b", "p_tie"} <= set(res.oof.columns)
    predictor = Predictor(cfg.run_dir / "fold_0" / "checkpoint", device="cpu")
    scores = score_items(predictor, pd.DataFrame({"text": items, "prompt": ["rate it"] * len(items)}))
    assert spearmanr(scores, np.arange(len(items))).statistic >= 0.9
    assert res.oof_metric < math.log(3)  # better than uniform over (A, B, tie)

    # prefkit score-items: the same scores through the command, written and listed best first
    from prefkit.cli import main

    texts = tmp_path / "texts.csv"
    pd.DataFrame({"id": [f"d{k}" for k in range(len(items))], "text": items, "prompt": "rate it"}).to_csv(texts, index=False)
    out = tmp_path / "scores.csv"
    assert main(["score-items", str(cfg.run_dir / "fold_0" / "checkpoint"), str(texts), "--out", str(out), "--top", "2", "--device", "cpu"]) == 0
    written = pd.read_csv(out)
    np.testing.assert_allclose(written["score"], scores, atol=1e-5)
    assert written.loc[written["rank"] == 1, "id"].item() == f"d{int(np.argmax(scores))}"
    assert "top:" in capsys.readouterr().out


def test_a_decoder_scorer_trains_on_packs_and_packed_scores_match_padded(tmp_path, data):
    from prefkit.infer.predict import inference_plan
    from prefkit.models import packing

    pairs, folds, _ = data
    llama = write_tiny_checkpoint(tmp_path / "llama", "llama")
    cfg = scorer_config(llama, tmp_path, "train.max_tokens=256", "train.packing=on", "train.max_steps=3", "train.folds=[0]")
    res = train_folds(cfg, pairs, folds)
    assert set(res.oof["id"]) == set(pairs["id"][folds == 0])
    assert "packed batches of <= 256 tokens" in (cfg.run_dir / "train.log").read_text()

    task = get_task(cfg.task, cfg)
    model, tok, _ = load_checkpoint(cfg.run_dir / "fold_0" / "checkpoint", device="cpu")
    enc = task.encode(task.renderer(tok, cfg.render), pairs, labels=False)
    padded = predict_outputs(model, enc.seqs, tok.pad_token_id, BatchPlan(batch_size=4), per_row=2, combine=task.combine)
    packing.enable_packed_attention(model)
    plan = inference_plan(cfg.train.model_copy(update={"eval_max_tokens": 200}), enc.lengths, packed=True)
    packed = predict_outputs(model, enc.seqs, tok.pad_token_id, plan, per_row=2, combine=task.combine)
    np.testing.assert_allclose(packed, padded, atol=1e-5)  # both items of a pair in one pack, in order
