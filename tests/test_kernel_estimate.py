"""``prefkit kernel estimate``: FLOP counts, device profiles, the time limit and the largest
max length that fits, test lengths from a lengths file or rendered with the run's tokenizer."""

import re
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoConfig

from prefkit.errors import InputError
from prefkit.kernel import estimate as est

ROOT = Path(__file__).resolve().parents[1]
ARCH = ROOT / "configs" / "bench" / "arch"
HEADLINE = re.compile(r"^t4x2_hours=([0-9.e+-]+) fits=(yes|no) max_length_that_fits=(\d+)$")


@pytest.fixture(scope="module")
def llama8b():
    return AutoConfig.from_pretrained(ARCH / "llama3_8b")


@pytest.fixture(scope="module")
def lengths():
    return np.random.default_rng(0).lognormal(6.1, 0.6, size=2000).astype(int) + 24


def test_flops_count_the_llama_matrix_products(llama8b):
    fm = est.flop_model_of(llama8b)
    h, kv, ff, layers = 4096, 1024, 14336, 32
    assert fm.n_matmul == layers * (2 * h * h + 2 * h * kv + 3 * h * ff)
    assert (fm.layers, fm.d_attn) == (32, 4096)
    s = np.array([100, 1000])
    np.testing.assert_allclose(fm.forward(s), 2 * fm.n_matmul * s + 4 * 32 * 4096 * s**2)


def test_profiles_say_where_each_figure_comes_from(llama8b):
    profiles = est.load_profiles()
    assert est.architecture_of(llama8b, profiles) == "llama3-8b"
    h100 = est.throughput("h100", "llama3-8b", profiles)
    t4 = est.throughput("t4x2", "llama3-8b", profiles)
    assert h100.measured and not t4.measured and "not measured on t4" in t4.source
    # until measured, a T4 runs at the H100's MFU on its own peak: the peak ratio
    assert t4.flops_per_s / h100.flops_per_s == pytest.approx(2 * 65 / 989)
    assert profiles["peaks"]["t4"]["bf16"] is None
    with pytest.raises(InputError, match="unknown device profile 'v100'; known: t4x2"):
        est.throughput("v100", "llama3-8b", profiles)


def test_time_scales_with_pairs_passes_and_length(llama8b, lengths):
    one = est.estimate(llama8b, lengths, "t4x2", 1024, tta=False, folds=1, pairs=10_000)
    load_h = one.throughput.load_minutes / 60
    more = est.estimate(llama8b, lengths, "t4x2", 1024, tta=False, folds=1, pairs=30_000)
    tta = est.estimate(llama8b, lengths, "t4x2", 1024, tta=True, folds=1, pairs=10_000)
    folds = est.estimate(llama8b, lengths, "t4x2", 1024, tta=True, folds=3, pairs=10_000)
    assert more.hours - load_h == pytest.approx(3 * (one.hours - load_h))
    assert tta.hours - load_h == pytest.approx(2 * (one.hours - load_h))
    assert folds.hours - 3 * load_h == pytest.approx(3 * (tta.hours - load_h))
    shorter = est.estimate(llama8b, lengths, "t4x2", 512, tta=False, folds=1, pairs=10_000)
    assert shorter.hours < one.hours and shorter.truncated_share > one.truncated_share


def test_largest_max_length_that_fits_the_limit(llama8b, lengths):
    big = est.estimate(llama8b, lengths, "t4x2", 2048, tta=True, folds=5, pairs=25_000, limit_hours=9)
    assert not big.fits
    cap = big.max_length_that_fits
    assert 32 < cap < 2048
    at_cap = est.estimate(llama8b, lengths, "t4x2", cap, tta=True, folds=5, pairs=25_000, limit_hours=9)
    above = est.estimate(llama8b, lengths, "t4x2", cap + 1, tta=True, folds=5, pairs=25_000, limit_hours=9)
    assert at_cap.fits and not above.fits
    roomy = est.estimate(llama8b, lengths, "h100", 2048, tta=False, folds=1, pairs=25_000, limit_hours=9)
    assert roomy.fits and roomy.max_length_that_fits == min(lengths.max(), llama8b.max_position_embeddings)
    hopeless = est.estimate(llama8b, lengths, "t4x2", 2048, tta=True, folds=5, pairs=25_000, limit_hours=0.5)
    assert hopeless.max_length_that_fits == 0  # five model loads alone take longer


def test_memory_note_for_weights_a_t4_cannot_hold(llama8b, lengths):
    fp16 = est.estimate(llama8b, lengths, "t4x2", 1024, weight_bytes=2.0)
    int8 = est.estimate(llama8b, lengths, "t4x2", 1024, weight_bytes=1.0)
    assert any("infer.quantize=8bit" in n for n in fp16.notes) and not any(n.startswith("memory") for n in int8.notes)


def test_lengths_file_errors_name_the_row(tmp_path):
    good = tmp_path / "lengths.txt"
    good.write_text("120\n\n300\n")
    np.testing.assert_array_equal(est.read_lengths_file(good), [120, 300])
    bad = tmp_path / "bad.txt"
    bad.write_text("120\nabc\n")
    with pytest.raises(InputError, match=r"bad.txt, row 2: expected a token length"):
        est.read_lengths_file(bad)


def tiny_config(tmp_path, extra=""):
    config = tmp_path / "tiny.yaml"
    config.write_text(
        f"model:\n  name_or_path: {ARCH / 'tiny_llama'}\n  tokenizer: {ARCH / 'tokenizer_decoder'}\n  init: random\n"
        f"render:\n  max_length: 128\nfolds:\n  n_folds: 3\n{extra}"
    )
    return config


def test_cli_on_a_pair_file_rendered_with_the_run_tokenizer(tmp_path, capsys):
    from prefkit.cli import main
    from prefkit.data.synthetic import write_synthetic_arena

    write_synthetic_arena(tmp_path / "data", n_train=10, n_test=40, seed=1)
    test = next((tmp_path / "data").glob("test.csv*"))
    config = tiny_config(tmp_path)
    assert main(["kernel", "estimate", str(config), "--test", str(test), "--pairs", "25000"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    hours, fits, cap = HEADLINE.match(out[-1]).groups()
    assert "rendered with the tokenizer of" in out[0] and "25000 pairs x 6 forward pass(es)" in out[1]  # TTA x 3 folds
    assert float(hours) > 0 and fits == "yes"
    # weight-averaged folds run one model: a third of the passes, and an override of the max length
    assert main(["kernel", "estimate", str(config), "infer.fold_average=weights", "infer.max_length=64", "--test", str(test)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert "x 2 forward pass(es) (swap TTA x fold models) at max length 64" in out[1]


def test_cli_errors_are_one_line(tmp_path, capsys):
    from prefkit.cli import main

    lengths = tmp_path / "lengths.txt"
    lengths.write_text("100\n200\n")
    config = tiny_config(tmp_path)
    assert main(["kernel", "estimate", str(config), "--test", str(tmp_path / "nope.csv")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'nope.csv'}: test file not found"
    assert main(["kernel", "estimate", str(config), "--test", str(lengths), "--device", "tpu"]) == 2
    assert "unknown device profile 'tpu'" in capsys.readouterr().err
    assert main(["kernel", "estimate", str(tmp_path / "runs" / "none"), "--test", str(lengths)]) == 2
    assert "run folder, checkpoint or config file not found" in capsys.readouterr().err


@pytest.mark.parametrize("arch", ["llama3-8b", "gemma2-9b"])
def test_kernel_inference_bench_quick_on_cpu(arch, tmp_path, capsys):
    """bench/kernel_inference.py --quick: the prediction path and the naive baseline agree, and
    the headline is the last line."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("kernel_inference_bench", ROOT / "bench" / "kernel_inference.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    lengths = tmp_path / "lengths.txt"
    lengths.write_text("\n".join(str(n) for n in (40, 90, 150, 60, 200, 120, 30, 80)) + "\n")
    argv = ["--arch", arch, "--device", "cpu", "--quick", "--rows", "8", "--max-length", "128", "--naive-batch", "4", "--lengths", str(lengths)]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    last = re.match(r"^pairs_per_s=(\S+) mfu=(\S+) speedup_vs_naive=(\S+) t4x2_estimate_h=(\S+)$", out.strip().splitlines()[-1])
    assert last, out
    pairs_per_s, mfu, speedup, hours = (float(x) for x in last.groups())
    assert pairs_per_s > 0 and speedup > 0 and hours > 0 and np.isnan(mfu)  # no peak on a CPU
    assert float(re.search(r"largest prediction difference (\S+)", out).group(1)) < 1e-4


def test_the_committed_t4_kernel_setup_validates():
    from prefkit.config import load_config

    cfg = load_config(ROOT / "configs" / "kernel" / "gemma2_9b_t4x2.yaml")
    assert (cfg.infer.precision, cfg.infer.quantize, cfg.infer.multi_device) == ("fp16", "8bit", "swap")
    assert est.kernel_passes(cfg, 5) == (True, 1)  # swap TTA, one fold-averaged model
    assert est.weight_bytes_of(cfg, "fp16") == 1.0
