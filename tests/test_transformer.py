"""Transformer pair classifiers on tiny random checkpoints (CPU): every family learns,
last-token pooling ignores padding, swap TTA is symmetric, checkpoints round-trip."""

from pathlib import Path

import numpy as np
import pytest
import torch

from prefkit.config import RenderConfig, load_config
from prefkit.errors import ConfigError
from prefkit.infer.predict import predict_encoded
from prefkit.tasks import Encoded, get_task
from prefkit.text.batching import BatchPlan
from prefkit.testing.tiny import DECODER_FAMILIES, FAMILIES, toy_pairs, write_tiny_checkpoint
from prefkit.models.transformer import (
    build_model,
    is_decoder,
    load_checkpoint,
    load_tokenizer,
    save_checkpoint,
)
from prefkit.text.batching import collate
from prefkit.text.render import PairRenderer

torch.set_num_threads(1)  # tiny models: threads only add overhead (and 2-core CI runs 2 workers)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    import transformers

    transformers.logging.set_verbosity_error()
    return {fam: write_tiny_checkpoint(root / fam, fam) for fam in FAMILIES}


def _cfg(path: Path, *overrides):
    return load_config(None, [f"model.name_or_path={path}", "render.max_length=64", *overrides])


def _batch(tokenizer, cfg, n=8, seed=0):
    pairs = toy_pairs(n, seed=seed)
    r = PairRenderer(tokenizer, cfg.render)
    ids, _ = r.render_pairs(pairs, swapped=False)
    items = [
        {"input_ids": s, "targets": t, "weight": 1.0, "index": i}
        for i, (s, t) in enumerate(zip(ids, pairs[["p_a", "p_b", "p_tie"]].to_numpy(np.float32)))
    ]
    return collate(items, tokenizer.pad_token_id)


def _step(model, opt, batch) -> float:
    """One optimizer step of the pair task's loss on a fixed batch; the loss before it."""
    from prefkit.train.losses import soft_cross_entropy

    loss = soft_cross_entropy(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["targets"])
    loss.backward()
    opt.step()
    opt.zero_grad()
    return float(loss)


@pytest.mark.parametrize("family", FAMILIES)
def test_few_steps_reduce_training_loss(ckpts, family):
    lr = "1e-2" if family in ("bert", "deberta-v2") else "3e-3"  # BERT-style init learns slower
    cfg = _cfg(ckpts[family], f"train.lr={lr}", "train.device=cpu")
    tok = load_tokenizer(cfg.model)
    torch.manual_seed(0)
    model = build_model(cfg.model, tokenizer=tok)
    assert is_decoder(model) == (family in DECODER_FAMILIES)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    batch = _batch(tok, cfg, n=16)
    model.eval()  # no dropout: a deterministic loss on a fixed batch
    losses = [_step(model, opt, batch) for _ in range(12)]
    assert min(losses[-3:]) < 0.85 * losses[0], losses


def test_lora_decoder_learns_and_trains_only_adapters_and_head(ckpts):
    cfg = _cfg(ckpts["llama"], "model.lora.enabled=true", "model.lora.r=8", "train.lr=1e-2", "train.device=cpu")
    tok = load_tokenizer(cfg.model)
    torch.manual_seed(0)
    model = build_model(cfg.model, tokenizer=tok)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "score" in n for n in trainable)
    assert any("score" in n for n in trainable)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.train.lr)
    batch = _batch(tok, cfg, n=16)
    model.eval()
    losses = [_step(model, opt, batch) for _ in range(12)]
    assert min(losses[-3:]) < 0.85 * losses[0], losses


def test_decoder_pad_token_and_right_padding_invariance(ckpts):
    cfg = _cfg(ckpts["llama"])
    tok = load_tokenizer(cfg.model)
    assert tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id
    assert tok.padding_side == "right"
    torch.manual_seed(0)
    model = build_model(cfg.model, tokenizer=tok).eval()
    assert model.config.pad_token_id == tok.pad_token_id
    r = PairRenderer(tok, cfg.render)
    short = r.render(["hi"], ["a"], ["b"])
    long = r.render(["a much longer prompt here"], ["with a longer answer"], ["and another one"])
    assert short[-1] == tok.eos_token_id
    with torch.no_grad():
        alone = model(**{k: v for k, v in collate([{"input_ids": short, "index": 0}], tok.pad_token_id).items() if k != "index"}).logits
        batch = collate([{"input_ids": short, "index": 0}, {"input_ids": long, "index": 1}], tok.pad_token_id)
        padded = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(alone[0], padded[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_swap_tta_gives_equal_a_and_b_for_identical_responses(ckpts, family):
    cfg = _cfg(ckpts[family])
    tok = load_tokenizer(cfg.model)
    torch.manual_seed(1)
    model = build_model(cfg.model, tokenizer=tok).eval()
    with torch.no_grad():  # a visible side bias, so that TTA has something to undo
        head = model.score if hasattr(model, "score") else model.classifier
        if getattr(head, "bias", None) is not None:
            head.bias.copy_(torch.tensor([1.0, -1.0, 0.0]))
        else:
            head.weight.mul_(20)
    r = PairRenderer(tok, RenderConfig(max_length=64))
    pairs = toy_pairs(6, seed=3)
    pairs["response_b"] = pairs["response_a"]
    ids, ids_sw = r.render_pairs(pairs)
    task, plan = get_task("pair3"), BatchPlan(batch_size=64)
    plain = predict_encoded(model, task, Encoded(ids, ids_sw), tok.pad_token_id, plan, tta_swap=False)
    tta = predict_encoded(model, task, Encoded(ids, ids_sw), tok.pad_token_id, plan, tta_swap=True)
    assert np.abs(plain[:, 0] - plain[:, 1]).max() > 1e-3
    np.testing.assert_allclose(tta[:, 0], tta[:, 1], atol=1e-6)
    np.testing.assert_allclose(tta.sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize(
    "family,lora",
    [("llama", True), ("bert", True), ("deberta-v2", True), ("qwen2", False), ("modernbert", False), ("mistral", True), ("gemma", False)],
)
def test_checkpoint_round_trip_gives_identical_logits(ckpts, tmp_path, family, lora):
    cfg = _cfg(ckpts[family], f"model.lora.enabled={str(lora).lower()}", "model.lora.r=4", "name=rt")
    tok = load_tokenizer(cfg.model)
    torch.manual_seed(2)
    model = build_model(cfg.model, tokenizer=tok)
    with torch.no_grad():  # move every trainable weight away from its initial value
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    model.eval()
    batch = _batch(tok, cfg)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        before = model(**inputs).logits
    out = save_checkpoint(model, tok, tmp_path / "ckpt", cfg)
    files = {p.name for p in out.iterdir()}
    assert {"config.yaml", "prefkit_checkpoint.json"} <= files
    assert ("adapter_model.safetensors" in files) == lora
    loaded, tok2, cfg2 = load_checkpoint(out, device="cpu")
    assert tok2.pad_token_id == tok.pad_token_id and cfg2.model == cfg.model
    with torch.no_grad():
        after = loaded(**inputs).logits
    torch.testing.assert_close(before, after, atol=1e-5, rtol=1e-5)


def test_quantisation_on_cpu_is_a_config_error(ckpts):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    cfg = _cfg(ckpts["llama"], "model.lora.enabled=true", "model.load_in_4bit=true")
    with pytest.raises(ConfigError, match="CUDA"):
        build_model(cfg.model)


def test_missing_model_is_a_one_line_input_error(tmp_path):
    from prefkit.errors import InputError

    cfg = _cfg(tmp_path / "nope")
    with pytest.raises(InputError) as err:
        load_tokenizer(cfg.model)
    assert "\n" not in err.value.one_line()


def test_gradient_checkpointing_option(ckpts):
    cfg = _cfg(ckpts["llama"], "model.gradient_checkpointing=true", "model.lora.enabled=true")
    model = build_model(cfg.model)
    base = model.get_base_model()
    assert base.is_gradient_checkpointing
    tok = load_tokenizer(cfg.model)
    model.train()
    batch = _batch(tok, cfg, n=4)
    loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.sum()
    loss.backward()
    assert any(p.grad is not None for n, p in model.named_parameters() if "lora_" in n)
