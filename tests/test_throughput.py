"""bench/throughput.py, the thin driver of the training engine and the prediction path: the
name=value last line of a CPU run, the FLOP convention, the committed bench architectures
(built on the meta device), the synthetic lengths and the variants file."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from prefkit.config import load_config

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench" / "throughput.py"
BENCH_CONFIGS = sorted((ROOT / "configs" / "bench").glob("*.yaml"))
LAST_LINE = re.compile(r"^train_pairs_per_s=(\S+) infer_pairs_per_s=(\S+) mfu=(\S+)$")

pytest.importorskip("transformers")
pytest.importorskip("peft")


@pytest.fixture(scope="module")
def tp():
    spec = importlib.util.spec_from_file_location("bench_throughput", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_throughput"] = module
    spec.loader.exec_module(module)
    return module


def run_bench(*args, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, str(BENCH), *args], check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()


def test_cpu_run_trains_through_the_engine_and_prints_name_value_last_line(tmp_path):
    lengths = tmp_path / "lengths.txt"
    lengths.write_text("\n".join(str(n) for n in [40, 90, 12, 300, 64, 128, 7, 55] * 4) + "\n")
    out = tmp_path / "out"
    lines = run_bench("-c", "configs/bench/tiny.yaml", "--device", "cpu", "--max-steps", "4", "--lengths", str(lengths),
                      "--peak-tflops", "1", "--infer-rows", "16", "--out", str(out))  # fmt: skip
    match = LAST_LINE.match(lines[-1])
    assert match, lines[-5:]
    train, infer, mfu = (float(x) for x in match.groups())
    assert train > 0 and infer > 0 and 0 < mfu < 1
    assert lines[-2] == "headline: packed_1k (the variant run)"
    (record,) = [json.loads(line) for line in (out / "variants.jsonl").read_text().splitlines()]
    # the engine ran the fold: its own done.json, with the steps after warm-up timed
    done = json.loads((out / "runs" / "tiny-packed_1k" / "fold_0" / "done.json").read_text())
    assert done["steps"] == 4 and done["packed"] and done["val_pairs"] == 8
    assert record["train"]["steps"] == 2 and record["train"]["warmup_steps"] == 2
    assert record["parameters"] == done["parameters"]
    # rendered lengths follow the drawn mix (truncated at render.max_length = 128)
    assert record["mean_rendered_length"] == pytest.approx(np.minimum([40, 90, 12, 300, 64, 128, 7, 55], 128).mean(), rel=0.15)
    assert record["infer"]["pairs"] == 16


def test_flop_convention_reproduces_reference(tp):
    """4N + 8*L*d*s^2 per trained pair (LoRA), lengths truncated at 1024: the quoted
    5.9 pairs/s <-> 8.6% and 14.5 pairs/s <-> 21% of 989 TFLOP/s on the arena mix."""
    cfg = load_config(ROOT / "configs" / "bench" / "llama3_8b.yaml")
    fm = tp.flop_model(tp.meta_model(cfg), cfg)
    base = 32 * (2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336)
    lora = 32 * 16 * ((4096 + 4096) * 2 + (4096 + 1024) * 2)
    assert fm.n_matmul == base + lora
    assert (fm.layers, fm.d_attn, fm.rel_positions, fm.train_mult) == (32, 4096, 0, 2)
    s = np.array([100.0, 1024.0])
    assert fm.train(s) == pytest.approx(2 * fm.forward(s))
    assert fm.forward(s) == pytest.approx(sum(2 * fm.n_matmul * x + 4 * 32 * 4096 * x * x for x in s))
    path = tp.default_lengths_file()
    if path is None:
        pytest.skip("arena lengths file not found (shared data)")
    lengths = np.minimum(np.loadtxt(path), 1024)
    per_pair = fm.train(lengths) / len(lengths)
    assert round(100 * 5.9 * per_pair / 989e12, 1) == 8.6
    assert round(100 * 14.5 * per_pair / 989e12) == 21


def test_deberta_architecture_is_deberta_v3_base(tp):
    cfg = load_config(ROOT / "configs" / "bench" / "deberta_v3_base.yaml")
    model = tp.meta_model(cfg)
    total = sum(p.numel() for p in model.parameters())
    assert 183e6 < total < 186e6  # DeBERTa-v3-base: 86M backbone + 98M embeddings
    fm = tp.flop_model(model, cfg)
    assert fm.n_matmul == 12 * (4 * 768 * 768 + 2 * 768 * 3072)
    assert (fm.train_mult, fm.rel_positions) == (3, 512)


def test_lengths_fallback_matches_arena_mix(tp, monkeypatch):
    monkeypatch.setattr(tp, "default_lengths_file", lambda: None)
    lengths, source = tp.load_lengths(None, 200_000, seed=0)
    assert source.startswith("lognormal")
    assert lengths.mean() == pytest.approx(525, rel=0.02)
    assert lengths.std() == pytest.approx(367, rel=0.05)


def test_synthetic_pairs_render_to_the_drawn_lengths(tp):
    from prefkit.models.transformer import load_tokenizer
    from prefkit.text.render import PairRenderer

    cfg = load_config(ROOT / "configs" / "bench" / "tiny.yaml", ["render.max_length=2048"])
    renderer = PairRenderer(load_tokenizer(cfg.model), cfg.render)
    drawn = np.array([40, 57, 300, 999, 3000])  # above the template's own tokens
    rendered = tp.rendered_lengths(renderer, tp.synthetic_pairs(renderer, drawn, seed=3))
    np.testing.assert_allclose(rendered, np.minimum(drawn, 2048), rtol=0.05)


@pytest.mark.parametrize("path", BENCH_CONFIGS, ids=lambda p: p.name)
def test_bench_config_variants_validate_and_fit_the_tokenizer(tp, path):
    from transformers import AutoConfig

    from prefkit.models.transformer import load_tokenizer

    default, variants = tp.load_variants(path)
    assert default in variants
    assert any(name.startswith("naive") for name in variants)  # the Trainer-like baseline, for the speed-up ratio
    for variant in variants.values():
        cfg = load_config(path, variant.overrides)
        assert cfg.model.init == "random" and cfg.train.max_steps > variant.warmup_steps
    arch = AutoConfig.from_pretrained(ROOT / cfg.model.name_or_path)
    assert len(load_tokenizer(cfg.model.model_copy(update={"tokenizer": str(ROOT / cfg.model.tokenizer)}))) <= arch.vocab_size


@pytest.mark.parametrize("kind", ["decoder", "encoder"])
def test_committed_bench_tokenizers_are_the_tiny_tokenizer(kind):
    from transformers import AutoTokenizer

    from prefkit.testing.tiny import tiny_tokenizer

    committed = AutoTokenizer.from_pretrained(ROOT / "configs" / "bench" / "arch" / f"tokenizer_{kind}")
    text = "Which response is better? The capital of France is Paris; zebras 42."
    assert committed(text)["input_ids"] == tiny_tokenizer(kind)(text)["input_ids"]
