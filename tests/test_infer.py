"""Inference from a checkpoint folder: import isolation, Predictor, swap TTA, CLI."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from prefkit.config import load_config
from prefkit.testing.tiny import toy_pairs, write_tiny_checkpoint
from prefkit.models.transformer import build_model, load_tokenizer, save_checkpoint
from prefkit.predictions import read_predictions

torch.set_num_threads(1)


def test_inference_import_does_not_import_training():
    code = (
        "import sys, prefkit.infer.predict, prefkit.models.transformer, prefkit.text.render;"
        "bad = [m for m in sys.modules if m.startswith('prefkit.train')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import transformers

    transformers.logging.set_verbosity_error()
    root = tmp_path_factory.mktemp("infer")
    base = write_tiny_checkpoint(root / "llama", "llama")
    cfg = load_config(
        None,
        [f"model.name_or_path={base}", "model.lora.enabled=true", "model.lora.r=4", "render.max_length=64", "name=tinyllama"],
    )
    tok = load_tokenizer(cfg.model)
    torch.manual_seed(0)
    model = build_model(cfg.model, tokenizer=tok)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
    return save_checkpoint(model, tok, root / "ckpt", cfg)


def _kaggle_csv(pairs: pd.DataFrame, path):
    import json

    df = pd.DataFrame(
        {
            "id": pairs["id"],
            "prompt": [json.dumps(p) for p in pairs["prompt"]],
            "response_a": [json.dumps(p) for p in pairs["response_a"]],
            "response_b": [json.dumps(p) for p in pairs["response_b"]],
        }
    )
    df.to_csv(path, index=False)
    return path


def test_predictor_tta_and_batching_agree(checkpoint):
    from prefkit.infer.predict import Predictor

    pairs = toy_pairs(10, seed=2)
    pairs.loc[:2, "response_b"] = pairs.loc[:2, "response_a"]  # three pairs with identical sides
    pred = Predictor(checkpoint, device="cpu")
    assert pred.tta_swap  # as configured (train.tta_swap defaults to true)
    probs = pred.predict(pairs)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(probs[:3, 0], probs[:3, 1], atol=1e-6)
    # batch size (and so padding) does not change predictions
    small = Predictor(checkpoint, device="cpu", batch_size=1).predict(pairs)
    np.testing.assert_allclose(probs, small, atol=1e-5)
    no_tta = Predictor(checkpoint, device="cpu", tta_swap=False).predict(pairs)
    np.testing.assert_allclose(no_tta.sum(1), 1.0, atol=1e-6)


def test_predictor_packed_gives_the_same_probabilities(checkpoint):
    from prefkit.infer.predict import Predictor

    pairs = toy_pairs(9, seed=6)
    padded = Predictor(checkpoint, device="cpu", packed=False)
    assert not padded.packed and not Predictor(checkpoint, device="cpu").packed  # auto without train.max_tokens: padded
    packed = Predictor(checkpoint, device="cpu", packed=True)
    assert packed.packed
    np.testing.assert_allclose(packed.predict(pairs), padded.predict(pairs), atol=1e-5)
    small_packs = Predictor(checkpoint, device="cpu", packed=True, batch_size=1).predict(pairs)
    np.testing.assert_allclose(small_packs, padded.predict(pairs), atol=1e-5)


def test_predict_cli_writes_prediction_file(checkpoint, tmp_path):
    from prefkit.cli import main

    pairs = toy_pairs(7, seed=4)
    csv = _kaggle_csv(pairs, tmp_path / "test.csv")
    out = tmp_path / "preds.csv"
    assert main(["predict", str(checkpoint), str(csv), "--out", str(out), "--device", "cpu"]) == 0
    preds = read_predictions(out)
    assert list(preds["id"]) == list(pairs["id"]) and (preds["model"] == "tinyllama").all() and (preds["fold"] == -1).all()


def test_predict_cli_missing_checkpoint_is_exit_2(tmp_path, capsys):
    from prefkit.cli import main

    assert main(["predict", str(tmp_path / "nope"), str(tmp_path / "x.csv")]) == 2
    assert "checkpoint folder not found" in capsys.readouterr().err
