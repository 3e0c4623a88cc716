"""bench/throughput.py on CPU with tiny configs: the name=value last line, the FLOP
convention, and the bench model configs (the 8B one built on the meta device)."""

from __future__ import annotations

import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench" / "throughput.py"
LAST_LINE = re.compile(r"^train_pairs_per_s=(\S+) infer_pairs_per_s=(\S+) mfu=(\S+)$")

pytest.importorskip("transformers")
pytest.importorskip("peft")


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_throughput", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_throughput"] = module
    spec.loader.exec_module(module)
    return module


def run_bench(*args, timeout=600):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [sys.executable, str(BENCH), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()


def test_cpu_run_prints_name_value_last_line(tmp_path):
    lengths = tmp_path / "lengths.txt"
    lengths.write_text("\n".join(str(n) for n in [40, 90, 12, 300, 64, 128, 7, 55] * 4) + "\n")
    lines = run_bench(
        "--config", "configs/bench/tiny.yaml", "--device", "cpu", "--batching", "packed",
        "--seconds", "0.2", "--infer-seconds", "0.1", "--warmup-steps", "1", "--max-steps", "2",
        "--lengths", str(lengths), "--peak-tflops", "1", "--check", "--threads", "1", "--out", str(tmp_path / "out"),
    )
    match = LAST_LINE.match(lines[-1])
    assert match, lines[-5:]
    train, infer, mfu = (float(x) for x in match.groups())
    assert train > 0 and infer > 0 and 0 < mfu < 1
    assert lines[-2].startswith("train_tokens_per_s=")
    assert any(line.startswith("check packed vs padded:") for line in lines)
    assert (tmp_path / "out" / "variants.jsonl").exists()


def test_cpu_sweep_encoder_and_padded_modes(tmp_path):
    lines = run_bench(
        "--config", "configs/bench/tiny_encoder.yaml", "--device", "cpu", "--batching", "random",
        "--batch-size", "4", "--seconds", "0.2", "--infer-seconds", "0.1", "--warmup-steps", "1",
        "--max-steps", "2", "--pool", "64", "--threads", "1",
    )
    match = LAST_LINE.match(lines[-1])
    assert match, lines[-5:]
    assert float(match.group(1)) > 0
    assert math.isnan(float(match.group(3)))  # no peak given on cpu


def test_flop_convention_reproduces_reference():
    """4N + 8*L*d*s^2 per trained pair (LoRA), lengths truncated at 1024: the quoted
    5.9 pairs/s <-> 8.6% and 14.5 pairs/s <-> 21% of 989 TFLOP/s on the arena mix."""
    tp = load_bench()
    cfg = tp.load_bench_config(ROOT / "configs" / "bench" / "llama3_8b.yaml")
    model = tp.build_model(cfg, torch.device("meta"), torch.bfloat16, "sdpa")
    fm = tp.flop_model(model, cfg)
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


def test_deberta_config_is_deberta_v3_base():
    tp = load_bench()
    cfg = tp.load_bench_config(ROOT / "configs" / "bench" / "deberta_v3_base.yaml")
    model = tp.build_model(cfg, torch.device("meta"), torch.float32, "eager")
    total = sum(p.numel() for p in model.parameters())
    assert 183e6 < total < 186e6  # DeBERTa-v3-base: 86M backbone + 98M embeddings
    fm = tp.flop_model(model, cfg)
    assert fm.n_matmul == 12 * (4 * 768 * 768 + 2 * 768 * 3072)
    assert (fm.train_mult, fm.rel_positions) == (3, 512)


def test_lengths_fallback_matches_arena_mix(monkeypatch):
    tp = load_bench()
    monkeypatch.setattr(tp, "default_lengths_file", lambda: None)
    lengths, source = tp.load_lengths(None, 200_000, seed=0)
    assert source.startswith("lognormal")
    assert lengths.mean() == pytest.approx(525, rel=0.02)
    assert lengths.std() == pytest.approx(367, rel=0.05)
