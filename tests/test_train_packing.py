"""Fold training with packed batches (CPU, tiny random decoders): packed epochs, when
packing applies, packed vs padded training and inference, resume with packing on."""

import json

import numpy as np
import pytest
from conftest import Killed, kill_at
import torch

from prefkit.config import TrainConfig, load_config
from prefkit.errors import ConfigError
from prefkit.infer.predict import inference_plan, predict_encoded, use_packing
from prefkit.tasks import Encoded, get_task
from prefkit.models import packing
from prefkit.testing.tiny import tiny_config, toy_pairs, write_tiny_checkpoint
from prefkit.predictions import read_predictions
from prefkit.train import engine
from prefkit.train.batches import TrainItems, epoch_batches
from prefkit.train.engine import train_folds

torch.set_num_threads(1)
PROBS = ["p_a", "p_b", "p_tie"]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    import transformers

    transformers.logging.set_verbosity_error()
    root = tmp_path_factory.mktemp("tiny_dec")
    return {family: write_tiny_checkpoint(root / family, family) for family in ("llama", "qwen2")}



def _cfg(root, ckpt, *overrides):
    return load_config(
        None,
        [
            "name=tinypack",
            f"output_dir={root / 'runs'}",
            f"model.name_or_path={ckpt}",
            "model.lora.enabled=true",
            "model.lora.r=4",
            "model.lora.dropout=0",  # dropout masks depend on the batch layout
            "render.max_length=64",
            "train.eval_batch_size=16",
            "train.lr=1e-3",
            "train.warmup_ratio=0",
            "train.device=cpu",
            *overrides,
        ],
    )


def _record_losses(monkeypatch) -> list:
    """Losses and batch kinds of every training micro-batch."""
    seen = []
    original = engine.FoldTrainer.compute_loss

    def recording(self, batch):
        loss = original(self, batch)
        seen.append((float(loss.detach()), isinstance(batch, packing.PackedBatch)))
        return loss

    monkeypatch.setattr(engine.FoldTrainer, "compute_loss", recording)
    return seen


# -- batches and switches ----------------------------------------------------------------------
def test_packed_epoch_batches_cover_items_within_budget_and_keep_swaps_together():
    rng = np.random.default_rng(0)
    n = 60
    lengths = rng.integers(5, 120, size=n)
    seqs = [[1] * int(m) for m in lengths] * 2
    items = TrainItems(seqs, np.zeros((2 * n, 3), np.float32), np.ones(2 * n, np.float32), n)
    tc = TrainConfig(max_tokens=400, packing="on")
    all_lengths = items.lengths
    for swap, expected in (("double", 2 * n), ("off", n)):
        packs = epoch_batches(items, tc, swap, seed=1, packed=True)
        assert sorted(i for p in packs for i in p) == list(range(expected))
        assert all(all_lengths[p].sum() <= 400 for p in packs)
        assert packs == epoch_batches(items, tc, swap, seed=1, packed=True)  # a function of the seed
        assert packs != epoch_batches(items, tc, swap, seed=2, packed=True)
    paired = epoch_batches(items, tc, "paired", seed=1, packed=True)
    assert sorted(i for p in paired for i in p) == list(range(2 * n))
    for p in paired:
        originals = [i for i in p if i < n]
        assert [i - n for i in p if i >= n] == originals
        assert all_lengths[originals].sum() <= 200  # half the budget for the originals
    # packs are nearly full, unlike padded batches of the same budget
    padded = epoch_batches(items, TrainConfig(max_tokens=400), "double", seed=1)
    assert len(epoch_batches(items, tc, "double", seed=1, packed=True)) < len(padded)


def test_use_packing_follows_the_switch_and_the_model():
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    llama = AutoModelForSequenceClassification.from_config(tiny_config("llama", 64, num_labels=3))
    bert = AutoModelForSequenceClassification.from_config(tiny_config("bert", 64, num_labels=3))
    assert use_packing(TrainConfig(max_tokens=512), llama)  # auto + a token budget
    assert not use_packing(TrainConfig(), llama)  # auto, no token budget: padded
    assert not use_packing(TrainConfig(max_tokens=512, packing="off"), llama)
    assert not use_packing(TrainConfig(max_tokens=512), bert)  # auto: encoders stay padded
    with pytest.raises(ConfigError, match="cannot take packed batches"):
        use_packing(TrainConfig(max_tokens=512, packing="on"), bert)
    with pytest.raises(ConfigError, match="packing=on needs max_tokens"):
        load_config(None, ["train.packing=on"])


def test_packed_inference_matches_padded(ckpts):
    from prefkit.models.transformer import build_model, load_tokenizer

    cfg = _cfg(ckpts["qwen2"].parent, ckpts["qwen2"])
    tok = load_tokenizer(cfg.model)
    torch.manual_seed(3)
    model = build_model(cfg.model, tokenizer=tok).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
    from prefkit.text.render import PairRenderer

    seqs, _ = PairRenderer(tok, cfg.render).render_pairs(toy_pairs(12, seed=1), swapped=False)
    task = get_task("pair3")

    def predict(packed, batch_size=4, max_tokens=None, static=False):
        plan = inference_plan(TrainConfig(eval_batch_size=batch_size, eval_max_tokens=max_tokens), [len(s) for s in seqs], packed)
        longest = max(len(s) for s in seqs)
        return predict_encoded(model, task, Encoded(seqs), tok.pad_token_id, plan, static_min_seqlen=longest if static else None)

    padded = predict(packed=False)
    packing.enable_packed_attention(model)
    for kw in ({"batch_size": 4}, {"batch_size": 1}, {"batch_size": 4, "max_tokens": 150}, {"batch_size": 4, "static": True}):
        np.testing.assert_allclose(predict(packed=True, **kw), padded, atol=1e-5, err_msg=str(kw))


# -- whole runs --------------------------------------------------------------------------------
def test_packed_fold_run_covers_every_row(tmp_path, ckpts, data, monkeypatch):
    pairs, folds, test = data
    seen = _record_losses(monkeypatch)
    cfg = _cfg(tmp_path, ckpts["llama"], "train.max_tokens=256", "train.max_steps=3", "train.swap=paired")
    res = train_folds(cfg, pairs, folds, test_table=test)
    assert seen and all(is_pack for _, is_pack in seen) and np.isfinite([loss for loss, _ in seen]).all()
    oof = read_predictions(cfg.run_dir / "oof.csv")
    assert sorted(oof["id"]) == sorted(pairs["id"])
    np.testing.assert_allclose(oof[PROBS].sum(axis=1), 1.0, atol=1e-6)
    assert list(res.test["id"]) == list(test["id"])
    for k in range(3):
        done = json.loads((cfg.run_dir / f"fold_{k}" / "done.json").read_text())
        assert done["packed"] and done["steps"] == 3
        assert set(read_predictions(cfg.run_dir / f"fold_{k}" / "oof.csv")["id"]) == set(pairs["id"][folds == k])
    assert "packed batches of <= 256 tokens" in (cfg.run_dir / "train.log").read_text()


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_packed_and_padded_training_agree(tmp_path, ckpts, data, monkeypatch, family):
    """One batch holding every training row (a budget above the fold's tokens): packed and
    padded runs from the same seed take the same steps, up to float rounding."""
    pairs, folds, _ = data
    common = ["train.max_tokens=100000", "train.max_steps=4", "train.folds=[0]", "train.swap=off", "train.tta_swap=false"]
    runs = {}
    for mode in ("on", "off"):
        seen = _record_losses(monkeypatch)
        cfg = _cfg(tmp_path / mode, ckpts[family], *common, f"train.packing={mode}")
        runs[mode] = (train_folds(cfg, pairs, folds), [loss for loss, _ in seen], [p for _, p in seen])
    (packed, packed_losses, kinds_on), (padded, padded_losses, kinds_off) = runs["on"], runs["off"]
    assert all(kinds_on) and not any(kinds_off) and len(packed_losses) == 4
    np.testing.assert_allclose(packed_losses, padded_losses, rtol=1e-5)
    assert packed_losses[-1] < packed_losses[0]  # the same batch each step: the loss goes down
    assert list(packed.oof["id"]) == list(padded.oof["id"])
    np.testing.assert_allclose(packed.oof[PROBS].to_numpy(), padded.oof[PROBS].to_numpy(), atol=1e-4)


def test_resume_with_packing_gives_the_same_oof(tmp_path, ckpts, data):
    pairs, folds, test = data
    common = ["train.max_tokens=300", "train.max_steps=6", "train.state_every_steps=2", "train.evals_per_epoch=2", "train.folds=[1]"]
    full = train_folds(_cfg(tmp_path / "a", ckpts["llama"], *common), pairs, folds, test_table=test)
    cfg = _cfg(tmp_path / "b", ckpts["llama"], *common)

    with pytest.raises(Killed):
        train_folds(cfg, pairs, folds, test_table=test, on_step=kill_at(5))
    state = cfg.run_dir / "fold_1" / "state"
    assert json.loads((state / "progress.json").read_text())["packed"]

    # the saved state holds packed-run weights and batch positions: a padded run must not take it
    padded_cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"packing": "off"})})
    with pytest.raises(ConfigError, match="packed batches, now padded"):
        train_folds(padded_cfg, pairs, folds, test_table=test)
    # nor a run with another accumulation (other steps, another schedule)
    accum_cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"grad_accum": 2})})
    with pytest.raises(ConfigError, match="train.grad_accum=1, now 2"):
        train_folds(accum_cfg, pairs, folds, test_table=test)

    steps = []
    resumed = train_folds(cfg, pairs, folds, test_table=test, on_step=lambda f, s, p: steps.append(s))
    assert steps == [5, 6]
    np.testing.assert_allclose(resumed.oof[PROBS].to_numpy(), full.oof[PROBS].to_numpy(), atol=1e-6)
    np.testing.assert_allclose(resumed.test[PROBS].to_numpy(), full.test[PROBS].to_numpy(), atol=1e-6)
    assert "resuming at step 4" in (cfg.run_dir / "train.log").read_text()
