"""Inference options a T4 kernel needs (``infer.*``): fp16 and the bf16 refusal, 8/4-bit loading,
model copies on several devices (split or swapped order), a max length override, fold
averaging of weights and of predictions, fixed outputs for empty and identical responses."""

import importlib.util

import numpy as np
import pytest
import torch

from prefkit.config import load_config
from prefkit.errors import ConfigError, InputError
from prefkit.infer.fixed import FIXED_OUTPUTS_FILE, FixedOutputs, pair_kinds
from prefkit.models.transformer import build_model, load_tokenizer, save_checkpoint
from prefkit.testing.tiny import toy_pairs, write_tiny_checkpoint

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    import transformers

    transformers.logging.set_verbosity_error()
    root = tmp_path_factory.mktemp("t4")
    write_tiny_checkpoint(root / "llama", "llama")
    return root


def lora_checkpoint(root, name: str, seed: int, r: int = 4, extra_files=None):
    """A tiny Llama LoRA checkpoint whose adapters and head are perturbed by ``seed``."""
    cfg = load_config(None, [f"model.name_or_path={root / 'llama'}", "model.lora.enabled=true", f"model.lora.r={r}", "render.max_length=64", f"name={name}"])
    tok = load_tokenizer(cfg.model)
    torch.manual_seed(seed)
    model = build_model(cfg.model, tokenizer=tok)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.2 * torch.randn_like(p))
    return save_checkpoint(model, tok, root / name, cfg, extra_files=extra_files)


@pytest.fixture(scope="module")
def ckpt(root):
    return lora_checkpoint(root, "fold_a", seed=1)


@pytest.fixture(scope="module")
def pairs():
    return toy_pairs(12, seed=3)


@pytest.fixture(scope="module")
def reference(ckpt, pairs):
    from prefkit.infer.predict import Predictor

    return Predictor(ckpt, device="cpu").predict(pairs)


# -- precision ---------------------------------------------------------------------------
def test_bf16_is_refused_on_a_gpu_without_bf16(monkeypatch, ckpt):
    from prefkit.infer.predict import Predictor, inference_precision

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    t4 = [torch.device("cuda", 0), torch.device("cuda", 1)]
    with pytest.raises(ConfigError, match=r"cuda:0 \(Tesla T4\) has no bf16 support; set infer.precision=fp16"):
        inference_precision(load_config(None, ["infer.precision=bf16"]), t4)
    # a run trained under bf16 predicts in bf16 by default: refused too, with the same advice
    with pytest.raises(ConfigError, match="as trained.*infer.precision=fp16"):
        inference_precision(load_config(None, ["train.mixed_precision=bf16"]), t4)
    assert inference_precision(load_config(None, ["train.mixed_precision=bf16", "infer.precision=fp16"]), t4) == ("float16", "fp16")
    # through the predictor: refused before any weights load
    with pytest.raises(ConfigError, match="no bf16 support"):
        Predictor(ckpt, overrides=["infer.precision=bf16", "infer.devices=cuda:0"])


def test_fp16_weights_predict_like_fp32(ckpt, pairs, reference):
    from prefkit.infer.predict import Predictor

    pred = Predictor(ckpt, device="cpu", overrides=["infer.precision=fp16"])
    assert {p.dtype for p in pred.model.parameters()} == {torch.float16}
    np.testing.assert_allclose(pred.predict(pairs), reference, atol=2e-2)


# -- 8-bit / 4-bit ----------------------------------------------------------------------
def test_quantised_loading_needs_cuda_and_bitsandbytes(monkeypatch, ckpt):
    from prefkit.infer.predict import Predictor

    with pytest.raises(ConfigError, match="model.load_in_8bit needs a CUDA GPU"):
        Predictor(ckpt, device="cpu", overrides=["infer.quantize=8bit"])
    real = importlib.util.find_spec
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(ConfigError, match=r"model.load_in_4bit needs the bitsandbytes package \(pip install bitsandbytes\)"):
        Predictor(ckpt, device="cpu", overrides=["infer.quantize=4bit"])


def test_quantisation_config_asks_for_fp16_compute(monkeypatch):
    from prefkit.models import transformer

    real = importlib.util.find_spec
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "bitsandbytes" else real(name, *a))
    model_cfg = load_config(None).model
    eight = transformer._quantization_config(model_cfg.model_copy(update={"load_in_8bit": True, "dtype": "float16"}))
    assert eight.load_in_8bit and not eight.load_in_4bit
    four = transformer._quantization_config(model_cfg.model_copy(update={"load_in_4bit": True, "dtype": "float16"}))
    assert four.load_in_4bit and four.bnb_4bit_compute_dtype == torch.float16 and four.bnb_4bit_quant_type == "nf4"
    # a QLoRA checkpoint loads its base 4-bit on a GPU as trained, unquantised on a CPU, as asked otherwise
    trained = model_cfg.model_copy(update={"load_in_4bit": True})
    assert transformer._inference_quantization(None, trained, torch.device("cuda")) == (True, False)
    assert transformer._inference_quantization(None, trained, torch.device("cpu")) == (False, False)
    assert transformer._inference_quantization("8bit", model_cfg, torch.device("cuda")) == (False, True)
    assert transformer._inference_quantization("none", trained, torch.device("cuda")) == (False, False)


# -- several devices, max length ----------------------------------------------------------
@pytest.mark.parametrize("mode", ["split", "swap"])
def test_two_model_copies_predict_like_one(ckpt, pairs, reference, mode):
    from prefkit.infer.predict import Predictor

    pred = Predictor(ckpt, overrides=["infer.devices=cpu,cpu", f"infer.multi_device={mode}", "train.eval_batch_size=3"])
    assert len(pred.copies) == 2 and pred.copies[0] is not pred.copies[1]
    np.testing.assert_allclose(pred.predict(pairs), reference, atol=1e-5)


def test_device_settings_are_checked_before_loading(ckpt, monkeypatch):
    from prefkit.infer.predict import Predictor

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="device 'cuda:1' asked for, but no CUDA device is available"):
        Predictor(ckpt, overrides=["infer.devices=cpu,cuda:1"])

    with pytest.raises(ConfigError, match="needs swap TTA"):
        Predictor(ckpt, tta_swap=False, overrides=["infer.devices=cpu,cpu", "infer.multi_device=swap"])
    with pytest.raises(ConfigError, match="at least two devices"):
        load_config(None, ["infer.multi_device=swap"])


def test_max_length_override(ckpt, pairs):
    from prefkit.infer.predict import Predictor

    full = Predictor(ckpt, device="cpu")
    short = Predictor(ckpt, device="cpu", overrides=["infer.max_length=40"])
    full_len = full.task.encode(full.renderer, pairs, labels=False).lengths
    short_len = short.task.encode(short.renderer, pairs, labels=False).lengths
    assert full_len.max() > 40 >= short_len.max()
    assert np.isfinite(short.predict(pairs)).all()


# -- fold averaging --------------------------------------------------------------------------
def test_averaged_adapter_is_the_mean_of_the_folds(root, ckpt):
    from safetensors.torch import load_file

    from prefkit.infer.folds import average_checkpoints

    other = lora_checkpoint(root, "fold_b", seed=2)
    avg = average_checkpoints([ckpt, other], root / "avg")
    a, b, m = (load_file(str(d / "adapter_model.safetensors")) for d in (ckpt, other, avg))
    assert set(m) == set(a) and any("lora_A" in k for k in m) and any("score" in k for k in m)
    for name in m:
        torch.testing.assert_close(m[name], (a[name] + b[name]) / 2)
    with pytest.raises(InputError, match="adapter configuration differs"):
        average_checkpoints([ckpt, lora_checkpoint(root, "fold_r8", seed=3, r=8)], root / "avg_bad")


def test_fold_averages_of_identical_folds_change_nothing(root, ckpt, pairs, reference):
    import shutil

    from prefkit.infer.predict import predict_checkpoints

    twin = root / "twin"
    if not twin.exists():
        shutil.copytree(ckpt, twin)
    for how in ("weights", "predictions"):
        preds, _ = predict_checkpoints([ckpt, twin], pairs, overrides=[f"infer.fold_average={how}"], device="cpu")
        np.testing.assert_allclose(preds, reference, atol=1e-5)


def test_prediction_average_is_the_mean_of_the_folds(root, ckpt, pairs, reference):
    from prefkit.infer.predict import Predictor, predict_checkpoints

    other = lora_checkpoint(root, "fold_c", seed=4)
    preds, _ = predict_checkpoints([ckpt, other], pairs, device="cpu")
    np.testing.assert_allclose(preds, (reference + Predictor(other, device="cpu").predict(pairs)) / 2, atol=1e-6)


# -- fixed outputs ----------------------------------------------------------------------------
def special_pairs(n_identical=12, n_empty=12, n_plain=10):
    """Pairs with identical responses (mostly ties), one empty response (the empty side loses),
    and ordinary ones."""
    table = toy_pairs(n_identical + n_empty + n_plain, seed=5, multi_turn_every=0)
    lab = np.zeros((len(table), 3))
    lab[:, 0] = 1.0
    for i in range(n_identical):
        table.at[i, "response_b"] = list(table.at[i, "response_a"])
        lab[i] = [0, 0, 1] if i % 4 else [1, 0, 0]  # 3/4 ties
    for j in range(n_empty):
        i = n_identical + j
        side = "response_a" if j % 2 else "response_b"
        table.at[i, side] = [" "]
        lab[i] = ([0, 1, 0] if side == "response_a" else [1, 0, 0]) if j % 3 else [0, 0, 1]  # the other side wins 2/3
    table[["p_a", "p_b", "p_tie"]] = lab
    return table


def test_fixed_outputs_are_the_training_label_rates():
    table = special_pairs()
    kinds = pair_kinds(table)
    assert (kinds[:12] == "identical").all() and set(kinds[12:24]) == {"empty_a", "empty_b"} and (kinds[24:] == "").all()
    fixed = FixedOutputs.from_table(table)
    np.testing.assert_allclose(fixed.rates["identical"], [0.125, 0.125, 0.75])
    np.testing.assert_allclose(fixed.rates["empty_a"], [0, 2 / 3, 1 / 3])  # A is empty: B wins
    np.testing.assert_allclose(fixed.rates["empty_b"], [2 / 3, 0, 1 / 3])
    assert fixed.counts == {"identical": 12, "empty_a": 6, "empty_b": 6}
    assert FixedOutputs.from_table(special_pairs(n_identical=4)).rates.keys() == {"empty_a", "empty_b"}  # too few identical pairs


def test_fixed_outputs_replace_predictions_after_the_model(root, pairs):
    from prefkit.infer.predict import Predictor
    from prefkit.infer.fixed import fixed_outputs_files

    train = special_pairs()
    files = fixed_outputs_files(train)  # what training stores with each fold's checkpoint
    ckpt = lora_checkpoint(root, "fold_fixed", seed=1, extra_files=files)
    test = special_pairs(n_identical=2, n_empty=2, n_plain=4).drop(columns=["p_a", "p_b", "p_tie"])
    with_fixed = Predictor(ckpt, device="cpu")
    preds = with_fixed.predict(test)
    plain = Predictor(ckpt, device="cpu", overrides=["infer.fixed_outputs=false"]).predict(test)
    fixed = FixedOutputs.read(ckpt / FIXED_OUTPUTS_FILE)
    assert with_fixed.fixed_rows == 4
    np.testing.assert_allclose(preds[:2], [fixed.rates["identical"]] * 2)
    kinds = pair_kinds(test)
    np.testing.assert_allclose(preds[2:4], [fixed.rates[k] for k in kinds[2:4]])
    np.testing.assert_allclose(preds[4:], plain[4:])  # ordinary pairs keep the model's prediction
    assert not np.allclose(plain[:4], preds[:4])


def test_predict_cli_on_a_run_folder_averages_its_folds(root, ckpt, pairs, capsys):
    import json
    import shutil

    import pandas as pd

    from prefkit.cli import main
    from prefkit.infer.predict import predict_checkpoints
    from prefkit.predictions import read_predictions

    run = root / "run"
    for k, source in enumerate([ckpt, lora_checkpoint(root, "fold_d", seed=6)]):
        if not (run / f"fold_{k}" / "checkpoint").exists():
            shutil.copytree(source, run / f"fold_{k}" / "checkpoint")
    data = root / "test.csv"
    pd.DataFrame({"id": pairs["id"], **{c: [json.dumps(v) for v in pairs[c]] for c in ("prompt", "response_a", "response_b")}}).to_csv(data, index=False)
    for how in ("predictions", "weights"):
        out = root / f"preds_{how}.csv"
        assert main(["predict", str(run), str(data), f"infer.fold_average={how}", "--out", str(out), "--device", "cpu"]) == 0
        expected, _ = predict_checkpoints(sorted(run.glob("fold_*/checkpoint")), pairs, overrides=[f"infer.fold_average={how}"], device="cpu")
        np.testing.assert_allclose(read_predictions(out)[["p_a", "p_b", "p_tie"]].to_numpy(), expected, atol=1e-6)
    assert main(["predict", str(run), str(data), "infer.precision=fp8", "--out", str(root / "x.csv")]) == 2
    assert "infer.precision" in capsys.readouterr().err
