#!/usr/bin/env python3
"""Kaggle-kernel inference speed of a random-initialised classifier of a real architecture,
through prefkit's prediction path, against a naive baseline in the same run.

    python bench/kernel_inference.py --arch gemma2-9b --device cuda --dtype bf16
    python bench/kernel_inference.py --arch llama3-8b --device cuda --dtype fp16
    python bench/kernel_inference.py --arch llama3-8b --device cpu --quick        # a tiny Llama, a few rows

Run from the repository root. The model is the architecture of ``configs/bench/arch/<arch>/config.json``
(``model.init=random``: fresh weights, created on the GPU in the chosen dtype) read as a 3-way classifier,
with the tiny committed byte-level tokenizer (no real tokenizer offline: ids use a few hundred embedding rows,
which costs the same FLOPs). ``--quick`` swaps in the tiny architecture of the same family
(``tiny_llama``, ``tiny_gemma2``), at most 48 rows and max length 256, for a CPU.

The rows: a synthetic pair table whose rendered lengths follow the arena test mix (``--lengths FILE``, default
the shared ``arena_alpacaeval_gpt4/test_token_lengths_approx.txt`` when found, else a lognormal with its mean
and spread), truncated by the renderer at ``--max-length`` (2048).

* **prefkit**: ``prefkit.infer.predict.Predictor.from_model`` (the one prediction path, as ``prefkit predict``
  and the kernel run it: rows rendered, sorted by length, cut into batches of ``--max-tokens`` padded tokens
  with dynamic padding), one forward pass per pair (swap TTA off: pairs/s count pairs), ``infer.precision``
  = ``--dtype``; rendering included in the time, after a warm-up batch;
* **naive**: the same model and the same token ids in file order, ``--naive-batch`` rows per batch, every
  batch padded to the max length (``prefkit.infer.predict.predict_outputs`` with an unsorted plan); both must
  give the same predictions (the largest difference is printed).

MFU = useful forward FLOPs (``prefkit.kernel.estimate.FlopModel``: 2*N*s + 4*L*d*s^2 per pair of s real tokens;
padding earns nothing) / seconds / the peak of the device at the dtype (``src/prefkit/kernel/profiles.yaml``:
989 TFLOP/s for an H100/H200 in bf16 or fp16; nan on a CPU unless ``--peak-tflops``).
``t4x2_estimate_h``: ``prefkit kernel estimate``'s hours on 2 x T4 for ``--pairs`` (25,000, the LMSYS hidden test
set) of the whole length mix at this max length with swap TTA and one model (fold-averaged weights), at the
MFU just measured (on a CPU: the profile's MFU) on the T4's peak.

Last line: ``pairs_per_s=<v> mfu=<v> speedup_vs_naive=<v> t4x2_estimate_h=<v>``.
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import default_lengths_file, load_lengths, log, synthetic_pairs  # noqa: E402

ARCH = ROOT / "configs" / "bench" / "arch"
ARCHES = {"gemma2-9b": ("gemma2_9b", "tiny_gemma2"), "llama3-8b": ("llama3_8b", "tiny_llama")}
DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", required=True, choices=sorted(ARCHES))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    p.add_argument("--dtype", choices=sorted(DTYPES), help="weights and compute (default: bf16 on cuda, fp32 on cpu)")
    p.add_argument("--quick", action="store_true", help="the tiny architecture of the family, few rows (CPU)")
    p.add_argument("--rows", type=int, help="pairs timed (default: 1024 on cuda, 48 with --quick)")
    p.add_argument("--max-length", type=int, help="render.max_length (default 2048; 256 with --quick)")
    p.add_argument("--max-tokens", type=int, default=32768, help="train.eval_max_tokens: padded tokens per sorted batch")
    p.add_argument("--naive-batch", type=int, default=8, help="rows per naive batch (padded to the max length)")
    p.add_argument("--lengths", help="token lengths, one a line (default: the shared arena test lengths when found)")
    p.add_argument("--pairs", type=int, default=25_000, help="pairs of the T4 estimate")
    p.add_argument("--peak-tflops", type=float, help="peak for MFU (default: profiles.yaml for the GPU; nan on cpu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. model.attn_implementation=eager")
    args = p.parse_args(argv)
    args.dtype = args.dtype or ("bf16" if args.device == "cuda" else "fp32")
    args.rows = args.rows or (48 if args.quick else 1024)
    args.max_length = args.max_length or (256 if args.quick else 2048)
    return args


def bench_config(args):
    from prefkit.config import load_config

    full, tiny = ARCHES[args.arch]
    overrides = [
        f"model.name_or_path={ARCH / (tiny if args.quick else full)}",
        f"model.tokenizer={ARCH / 'tokenizer_decoder'}",
        "model.init=random",
        f"model.dtype={DTYPES[args.dtype]}",
        f"render.max_length={args.max_length}",
        f"train.eval_max_tokens={args.max_tokens}",
        "train.tta_swap=false",
        f"infer.precision={args.dtype}",
        *args.overrides,
    ]
    return load_config(None, overrides)


def gpu_profile(device: str, profiles: dict) -> str | None:
    """The profiles.yaml GPU of this machine's CUDA device, by name."""
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name().lower()
    return next((gpu for gpu in profiles["peaks"] if gpu in name), None)


def peak_flops(args, profiles: dict) -> float:
    if args.peak_tflops:
        return args.peak_tflops * 1e12
    gpu = gpu_profile(args.device, profiles)
    peak = profiles["peaks"].get(gpu, {}).get(args.dtype) if gpu else None
    return float(peak) * 1e12 if peak else float("nan")


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str):
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def main(argv=None) -> int:
    from prefkit.infer.predict import Predictor, predict_outputs
    from prefkit.kernel import estimate as est
    from prefkit.models.transformer import load_backbone, load_tokenizer
    from prefkit.text.batching import BatchPlan

    args = parse_args(argv)
    torch.manual_seed(args.seed)
    if args.device == "cpu":
        torch.set_num_threads(min(2, torch.get_num_threads()))
    elif not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here (use --device cpu --quick)")
    cfg = bench_config(args)
    profiles = est.load_profiles()
    peak = peak_flops(args, profiles)
    lengths_path = args.lengths or default_lengths_file()
    pool, source = load_lengths(lengths_path, args.rows, args.seed)
    log(f"lengths: {source}; {len(pool)} drawn, mean {pool.mean():.0f}; arch {Path(cfg.model.name_or_path).name}, {args.dtype}, "
        f"max length {args.max_length}, {args.device}{' (' + torch.cuda.get_device_name() + ')' if args.device == 'cuda' else ''}")  # fmt: skip

    tokenizer = load_tokenizer(cfg.model)
    t0 = time.perf_counter()
    model = load_backbone(cfg.model, "pair3", pad_token_id=tokenizer.pad_token_id).to(args.device)
    log(f"model: {sum(p.numel() for p in model.parameters()) / 1e9:.3f}B weights, random, built in {time.perf_counter() - t0:.0f}s")
    predictor = Predictor.from_model(model, tokenizer, cfg)
    flops = est.flop_model_of(model.config)
    table = synthetic_pairs(predictor.renderer, pool, seed=args.seed, labelled=False)
    encoded = predictor.task.encode(predictor.renderer, table, labels=False)
    lengths = encoded.lengths
    useful = float(flops.forward(lengths).sum())
    log(f"rows: {len(table)}, rendered mean {lengths.mean():.0f} tokens, longest {lengths.max()}, {useful / len(table) / 1e12:.3f} TFLOP per pair")

    predictor.predict(table.head(min(len(table), 8)))  # warm-up (kernels, allocator)
    preds, seconds = timed(lambda: predictor.predict(table), args.device)
    if not np.isfinite(preds).all():  # random weights overflowing in fp16, say: the speed would mean nothing
        raise SystemExit(f"non-finite predictions in {args.dtype}: try --dtype bf16 or fp32")
    pairs_per_s = len(table) / seconds
    mfu = useful / seconds / peak
    log(f"prefkit: {seconds:.1f}s, {pairs_per_s:.2f} pairs/s, {lengths.sum() / seconds:.0f} tokens/s, MFU {100 * mfu:.1f}%")

    naive_plan = BatchPlan(batch_size=args.naive_batch, sort=False)
    run_naive = lambda: predict_outputs(  # noqa: E731
        predictor.model, encoded.seqs, tokenizer.pad_token_id, naive_plan, pad_to_multiple_of=args.max_length,
        mixed_precision=predictor.mixed_precision,
    )  # fmt: skip
    predict_outputs(predictor.model, encoded.seqs[: args.naive_batch], tokenizer.pad_token_id, naive_plan, pad_to_multiple_of=args.max_length,
                    mixed_precision=predictor.mixed_precision)  # warm-up  # fmt: skip
    naive_out, naive_s = timed(run_naive, args.device)
    naive_pps = len(table) / naive_s
    gap = float(np.abs(predictor.task.predictions(naive_out) - preds).max())
    log(f"naive (batches of {args.naive_batch} padded to {args.max_length}, file order): {naive_s:.1f}s, {naive_pps:.2f} pairs/s, "
        f"MFU {100 * useful / naive_s / peak:.1f}%; largest prediction difference {gap:.2e}")  # fmt: skip

    mix = est.read_lengths_file(lengths_path) if lengths_path else pool
    measured = (mfu, f"measured by this bench on {torch.cuda.get_device_name()}, {args.dtype}") if math.isfinite(mfu) else None
    t4 = est.estimate(model.config, mix, "t4x2", args.max_length, tta=True, folds=1, pairs=args.pairs, profiles=profiles, mfu=measured)
    log(f"t4x2 estimate: {args.pairs} pairs with swap TTA, one model, max length {args.max_length}: {t4.hours:.2f} h "
        f"(MFU {100 * t4.throughput.mfu:.0f}%: {t4.throughput.source})")  # fmt: skip
    del predictor, model
    gc.collect()
    print(f"pairs_per_s={pairs_per_s:.4g} mfu={mfu:.4g} speedup_vs_naive={pairs_per_s / naive_pps:.4g} t4x2_estimate_h={t4.hours:.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
