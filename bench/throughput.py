#!/usr/bin/env python3
"""Training and inference throughput of prefkit's own training engine and prediction path.

    python bench/throughput.py -c configs/bench/tiny.yaml --device cpu
    python bench/throughput.py -c configs/bench/llama3_8b.yaml --device cuda [--sweep | --variant naive_b4_gc]
    python bench/throughput.py -c configs/bench/deberta_v3_base.yaml --device cuda --sweep --out runs/throughput

Run from the repository root (the experiment files name their model folders relative to it). ``-c`` is an
ordinary prefkit experiment file (``configs/bench/*.yaml``: ``model.init=random`` builds the architecture of
a committed ``config.json`` with fresh weights, a tiny committed tokenizer); the variants are named lists of
dotted overrides on top of it, in ``bench/throughput_variants.yaml`` (``--variant NAME``, ``--sweep`` for all;
default: the file's ``default`` variant). Dotted overrides after the options apply to every variant.

For each variant, in a fresh run folder (``--out DIR``/runs/<config>-<variant>, removed first; a temporary
folder without ``--out``):

* a synthetic pair table whose rendered token lengths follow the arena test mix (``--lengths FILE``, one
  length a line; default: the arena test-set lengths file when found, else a lognormal with its mean, 525,
  and spread, sd 367), texts made of the tokenizer's own tokens so that rendering gives about the drawn
  length, truncated at ``render.max_length`` by the renderer (the mean rendered length is printed);
* training: ``prefkit.train.engine.train_folds`` on fold 0 (8 validation rows; every other row is a
  ``-1`` row, always training; the table is sized so that one epoch outlasts ``train.max_steps`` and the
  only evaluation is the last), timed from the engine's own counters (``Progress.pairs_seen``,
  ``tokens_seen``, ``train_seconds``: collation, forward, backward and optimizer step) over the steps after
  the first ``warmup_steps``, read through the engine's step hook;
* inference: ``prefkit.infer.predict.Predictor`` on the fold's checkpoint (the one prediction path, as
  ``prefkit predict``), on a synthetic unlabelled table, timed after a warm-up batch (rendering included).

Useful FLOPs (what MFU counts)
------------------------------
Per pair of ``s`` real tokens (padding earns nothing), with ``N`` the weights of the matrix products every
token passes through (backbone linear layers and LoRA adapters; embeddings and the per-pair head excluded),
``L`` layers, ``d`` = heads x head_dim::

    forward(s) = 2*N*s + 4*L*d*s^2        (QK^T and AV over the full s x s square)
                 + 4*L*d*R*s              (DeBERTa only: c2p + p2c against R = 2*position_buckets)
    training, LoRA (frozen base weights) = 2 * forward(s)   (activation gradients only)
    training, full fine-tuning            = 3 * forward(s)
    inference                             = forward(s)

Recomputation by gradient checkpointing earns no credit. ``N`` is counted on a meta-device
``build_model`` of the variant's config (no memory, no weights). MFU = useful FLOPs / (seconds x peak);
peak = ``--peak-tflops`` (default 989, bf16 dense of an H100/H200 SXM, on cuda; nan on cpu unless given).
With the arena lengths truncated at 1024 this reproduces the reference figures quoted for an H100 (plain
transformers + peft, LoRA r16 on q,k,v,o): 5.9 pairs/s <-> 8.6% and 14.5 pairs/s <-> 21%.

Training pairs per second are pairs *of the length mix*: the timed tokens per second divided by the mix's
mean rendered length (a few packs sample pairs longer or shorter than the mix; tokens carry over to a full
epoch); ``raw p/s`` is the count of pairs actually trained in the timed steps.

Output: one row per variant, then, LAST, ``train_pairs_per_s=<v> infer_pairs_per_s=<v> mfu=<v>`` (mfu a
fraction of peak) of the variant run, or of the fastest-training variant of a ``--sweep`` (named on the line
before). ``--out DIR`` also writes ``DIR/variants.jsonl`` (one record per variant).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from prefkit.config import RunConfig, load_config
from prefkit.kernel.estimate import backbone_linear_weights
from prefkit.models.transformer import unwrap_peft

VARIANTS_FILE = ROOT / "bench" / "throughput_variants.yaml"
LENGTHS_REL = Path("data") / "arena_alpacaeval_gpt4" / "test_token_lengths_approx.txt"
LENGTHS_CANDIDATES = [ROOT / "shared" / LENGTHS_REL, ROOT.parent / "shared" / LENGTHS_REL]
# Lognormal matched to the arena file (mean 525, sd 367 tokens): sigma^2 = ln(1 + (367/525)^2).
LOGNORMAL_SIGMA = math.sqrt(math.log(1 + (367 / 525) ** 2))
LOGNORMAL_MU = math.log(525) - LOGNORMAL_SIGMA**2 / 2
H100_BF16_DENSE_TFLOPS = 989.0
VALIDATION_ROWS = 8
PROMPT_SHARE = 0.15  # of a drawn pair's text tokens; the responses share the rest evenly


def log(*parts) -> None:
    print(*parts, flush=True)


# -- variants ----------------------------------------------------------------------------
@dataclass
class Variant:
    name: str
    overrides: list[str]
    warmup_steps: int = 2


def load_variants(config_path: Path, variants_file: Path = VARIANTS_FILE) -> tuple[str, dict[str, Variant]]:
    """(default variant name, variants by name) of an experiment file; the file as it is when
    ``variants_file`` has no entry for it."""
    tree = yaml.safe_load(variants_file.read_text()) if variants_file.exists() else {}
    entry = (tree or {}).get(config_path.stem)
    if not entry:
        return "default", {"default": Variant("default", [])}
    warmup = int(entry.get("warmup_steps", 2))
    variants = {}
    for name, spec in entry["variants"].items():
        if isinstance(spec, dict):
            variants[name] = Variant(name, list(spec.get("overrides") or []), int(spec.get("warmup_steps", warmup)))
        else:
            variants[name] = Variant(name, list(spec or []), warmup)
    default = entry.get("default", next(iter(variants)))
    if default not in variants:
        raise SystemExit(f"{variants_file}: {config_path.stem}.default {default!r} is not one of its variants")
    return default, variants


# -- lengths -----------------------------------------------------------------------------
def default_lengths_file() -> Path | None:
    env = os.environ.get("PREFKIT_BENCH_LENGTHS")
    if env and Path(env).exists():
        return Path(env)
    for cand in LENGTHS_CANDIDATES:
        if cand.exists():
            return cand
    return None


def load_lengths(path: str | Path | None, n: int, seed: int) -> tuple[np.ndarray, str]:
    """``n`` pair lengths drawn (with replacement) from ``path``, else from the lognormal."""
    rng = np.random.default_rng(seed)
    if path is None:
        path = default_lengths_file()
    if path is not None:
        values = np.loadtxt(path, dtype=np.float64, ndmin=1)
        values = values[np.isfinite(values) & (values >= 1)]
        if values.size == 0:
            raise SystemExit(f"no usable lengths in {path}")
        return rng.choice(values, size=n, replace=True).round().astype(np.int64), str(path)
    draws = rng.lognormal(LOGNORMAL_MU, LOGNORMAL_SIGMA, size=n)
    return np.clip(draws.round(), 16, None).astype(np.int64), "lognormal(mean 525, sd 367)"


# -- synthetic pairs ---------------------------------------------------------------------
class TokenText:
    """Texts of about ``n`` tokens of ``tokenizer``: decoded slices of one long tokenised text,
    so that tokenising them again gives about ``n`` tokens."""

    WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "which", "response", "is", "better", "answer",
             "question", "list", "item", "first", "second", "third", "capital", "of", "France", "Paris", "Italy", "Rome",
             "def", "add", "return", "small", "function", "sorry", "help", "request", "prompt", "assistant", "user")  # fmt: skip

    def __init__(self, tokenizer, seed: int, n_words: int = 40_000):
        self.tokenizer = tokenizer
        self.rng = np.random.default_rng(seed)
        text = " ".join(self.rng.choice(self.WORDS, size=n_words))
        self.stream = np.asarray(tokenizer(text, add_special_tokens=False)["input_ids"])

    def text(self, n: int) -> str:
        n = int(min(max(n, 1), len(self.stream) - 1))
        start = int(self.rng.integers(0, len(self.stream) - n))
        return self.tokenizer.decode(self.stream[start : start + n].tolist())


def synthetic_pairs(renderer, lengths: np.ndarray, seed: int, prefix: str = "p", labelled: bool = True):
    """A pair table whose renderings are about ``lengths`` tokens long (before truncation):
    the template's own tokens, then ``PROMPT_SHARE`` of the rest for the prompt and the
    responses sharing the remainder; random one-hot labels (``labelled``) or none."""
    from prefkit.schema import make_pairs

    maker = TokenText(renderer.tokenizer, seed)
    prompts, ra, rb = [], [], []
    for total in lengths:
        content = max(3, int(total) - renderer.fixed_length)
        n_prompt = max(1, round(PROMPT_SHARE * content))
        n_a = max(1, (content - n_prompt) // 2)
        prompts.append([maker.text(n_prompt)])
        ra.append([maker.text(n_a)])
        rb.append([maker.text(max(1, content - n_prompt - n_a))])
    labels = np.eye(3)[maker.rng.integers(0, 3, size=len(lengths))] if labelled else None
    ids = [f"{prefix}{i}" for i in range(len(lengths))]
    return make_pairs(ids, prompts, ra, rb, labels, groups=ids)


def rendered_lengths(renderer, table, task: str = "pair3") -> np.ndarray:
    """Token lengths of the rows of ``table`` as the task renders them for the model."""
    from prefkit.tasks import get_task

    return get_task(task).encode(renderer, table, labels=False).lengths


def rows_per_batch(cfg: RunConfig, mean_length: float, train: bool) -> int:
    """About how many pairs one training (or inference) batch holds under ``cfg``."""
    tc = cfg.train
    budget = tc.max_tokens if train else tc.eval_max_tokens
    rows = budget / max(mean_length, 1.0) if budget else (tc.batch_size if train else tc.eval_batch_size)
    return max(1, math.ceil(rows)) * (tc.grad_accum if train else 1)


# -- FLOPs -------------------------------------------------------------------------------
def meta_model(cfg: RunConfig):
    """The model ``cfg`` trains, built on the meta device (no memory, no weights)."""
    from accelerate import init_empty_weights

    from prefkit.models.transformer import build_model, load_tokenizer
    from prefkit.tasks import get_task

    model_cfg = cfg.model.model_copy(update={"init": "random", "load_in_4bit": False, "load_in_8bit": False})
    with init_empty_weights():
        return build_model(model_cfg, head=cfg.model.head or get_task(cfg.task).head, tokenizer=load_tokenizer(cfg.model))


@dataclass
class FlopModel:
    n_matmul: int
    layers: int
    d_attn: int
    rel_positions: int  # DeBERTa c2p/p2c span (2 * position buckets); 0 otherwise
    train_mult: int  # 2: LoRA (activation gradients only), 3: full fine-tuning

    def forward(self, s: np.ndarray) -> float:
        s = np.asarray(s, dtype=np.float64)
        per = 2.0 * self.n_matmul * s + 4.0 * self.layers * self.d_attn * s * s
        per += 4.0 * self.layers * self.d_attn * self.rel_positions * s
        return float(per.sum())

    def train(self, s: np.ndarray) -> float:
        return self.train_mult * self.forward(s)


def flop_model(model, cfg: RunConfig) -> FlopModel:
    hf = unwrap_peft(model).config
    heads = hf.num_attention_heads
    head_dim = getattr(hf, "head_dim", None) or hf.hidden_size // heads
    rel = 0
    if getattr(hf, "relative_attention", False):
        span = getattr(hf, "position_buckets", -1)
        if span is None or span <= 0:
            span = getattr(hf, "max_relative_positions", -1)
            if span is None or span < 1:
                span = hf.max_position_embeddings
        rel = 2 * int(span)
    train_mult = 2 if cfg.model.lora.enabled else 3
    return FlopModel(backbone_linear_weights(model), hf.num_hidden_layers, heads * head_dim, rel, train_mult)


# -- one variant -------------------------------------------------------------------------
class StepTimer:
    """The engine's step hook: the fold's counters after the warm-up steps and after the last."""

    def __init__(self, warmup_steps: int):
        self.warmup_steps = warmup_steps
        self.start = (0, 0, 0, 0.0) if warmup_steps == 0 else None
        self.end = None

    def __call__(self, fold: int, step: int, progress) -> None:
        counters = (step, progress.pairs_seen, progress.tokens_seen, progress.train_seconds)
        if step == self.warmup_steps:
            self.start = counters
        self.end = counters

    def window(self) -> dict:
        if self.start is None or self.end is None or self.end[0] <= self.start[0]:
            raise RuntimeError(f"no timed steps: train.max_steps must exceed the {self.warmup_steps} warm-up steps")
        steps, pairs, tokens, seconds = (b - a for a, b in zip(self.start, self.end))
        return {"steps": steps, "pairs": pairs, "tokens": tokens, "seconds": seconds}


def peak_memory_gb(device: str) -> float:
    return torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else float("nan")


def reset_peak_memory(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def variant_config(config_path: Path, variant: Variant, args, run_root: Path) -> RunConfig:
    overrides = [*variant.overrides, *args.overrides, f"train.device={args.device}", f"output_dir={run_root}",
                 f"name={config_path.stem}-{variant.name}", "train.folds=[0]", "train.evals_per_epoch=1"]  # fmt: skip
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    cfg = load_config(config_path, overrides)
    if cfg.train.max_steps is None or cfg.train.max_steps <= variant.warmup_steps:
        raise ValueError(f"train.max_steps={cfg.train.max_steps}: the bench times the steps after {variant.warmup_steps} warm-up steps")
    return cfg


def measure_training(cfg: RunConfig, renderer, pool: np.ndarray, variant: Variant, args) -> tuple[dict, np.ndarray]:
    """Train fold 0 with the engine; (timed window, rendered lengths of the training table)."""
    from prefkit.train.engine import train_folds

    mean_guess = float(np.minimum(pool, cfg.render.max_length).mean())
    n_train = math.ceil(1.25 * cfg.train.max_steps * rows_per_batch(cfg, mean_guess, train=True)) + 4
    table = synthetic_pairs(renderer, pool[: n_train + VALIDATION_ROWS], seed=args.seed)
    lengths = rendered_lengths(renderer, table, cfg.task)
    fold_ids = np.full(len(table), -1)
    fold_ids[:VALIDATION_ROWS] = 0
    timer = StepTimer(variant.warmup_steps)
    train_folds(cfg, table, fold_ids, on_step=timer)
    return timer.window(), lengths


def measure_inference(cfg: RunConfig, renderer, pool: np.ndarray, args) -> dict:
    """Predict a synthetic table with the fold's checkpoint through ``Predictor``, after a warm-up batch."""
    from prefkit.infer.predict import Predictor

    mean_guess = float(np.minimum(pool, cfg.render.max_length).mean())
    batch = rows_per_batch(cfg, mean_guess, train=False)
    n_rows = args.infer_rows or max(64, 6 * batch)
    table = synthetic_pairs(renderer, pool[-n_rows:], seed=args.seed + 1, prefix="t", labelled=False)
    lengths = rendered_lengths(renderer, table, cfg.task)
    predictor = Predictor(cfg.run_dir / "fold_0" / "checkpoint", device=args.device)
    predictor.predict(table.head(batch))  # warm-up
    t0 = time.perf_counter()
    preds = predictor.predict(table)
    seconds = time.perf_counter() - t0
    if not np.isfinite(preds).all():
        raise RuntimeError("non-finite predictions")
    del predictor
    return {"pairs": len(table), "tokens": int(lengths.sum()), "seconds": seconds, "lengths": lengths}


def run_variant(config_path: Path, variant: Variant, args, run_root: Path, pool: np.ndarray) -> dict:
    from prefkit.models.transformer import load_tokenizer
    from prefkit.tasks import get_task

    record: dict = {"config": config_path.stem, "variant": variant.name, "overrides": variant.overrides, "status": "ok"}
    try:
        cfg = variant_config(config_path, variant, args, run_root)
        shutil.rmtree(cfg.run_dir, ignore_errors=True)  # the bench's own folder: a finished fold would be reused
        renderer = get_task(cfg.task).renderer(load_tokenizer(cfg.model), cfg.render)
        fm = flop_model(meta_model(cfg), cfg)
        reset_peak_memory(args.device)
        window, lengths = measure_training(cfg, renderer, pool, variant, args)
        done = json.loads((cfg.run_dir / "fold_0" / "done.json").read_text())
        tokens_per_s = window["tokens"] / window["seconds"]
        pairs_per_s = tokens_per_s / lengths.mean()  # pairs of the length mix
        train_flops_per_pair = fm.train(lengths) / len(lengths)
        record["train"] = {
            **window,
            "warmup_steps": variant.warmup_steps,
            "pairs_per_s": pairs_per_s,
            "raw_pairs_per_s": window["pairs"] / window["seconds"],
            "tokens_per_s": tokens_per_s,
            "tflops_per_pair": train_flops_per_pair / 1e12,
            "mfu": pairs_per_s * train_flops_per_pair / args.peak_flops,
            "peak_mem_gb": peak_memory_gb(args.device),
            "engine_pairs_per_second": done["train_pairs_per_second"],  # whole fold, warm-up included
        }
        record["mean_rendered_length"] = float(lengths.mean())
        record["parameters"] = done["parameters"]
        record["flops"] = {"n_matmul": fm.n_matmul, "layers": fm.layers, "d_attn": fm.d_attn, "train_mult": fm.train_mult}
        reset_peak_memory(args.device)
        infer = measure_inference(cfg, renderer, pool, args)
        infer_lengths = infer.pop("lengths")
        record["infer"] = {
            **infer,
            "pairs_per_s": infer["pairs"] / infer["seconds"],
            "tokens_per_s": infer["tokens"] / infer["seconds"],
            "mfu": fm.forward(infer_lengths) / infer["seconds"] / args.peak_flops,
            "peak_mem_gb": peak_memory_gb(args.device),
        }
    except torch.OutOfMemoryError:
        record["status"] = "OOM"
    except Exception as err:  # noqa: BLE001 - one failing variant must not end a sweep
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        record["status"] = f"error: {type(err).__name__}: {first}"
        traceback.print_exc()
    finally:
        reset_peak_memory(args.device)
    return record


# -- output ------------------------------------------------------------------------------
def fmt(x, spec=".1f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def table(records: list[dict], title: str) -> str:
    head = (f"{'variant':<24} {'train p/s':>9} {'raw p/s':>8} {'train tok/s':>11} {'MFU%':>6} {'mem GB':>6} "
            f"{'infer p/s':>9} {'infer tok/s':>11} {'iMFU%':>6} {'mean len':>8}  status")  # fmt: skip
    lines = [f"== {title} ==", head]
    for r in records:
        t, i = r.get("train", {}), r.get("infer", {})
        lines.append(
            f"{r['variant']:<24} {fmt(t.get('pairs_per_s'), '.2f'):>9} {fmt(t.get('raw_pairs_per_s'), '.2f'):>8} "
            f"{fmt(t.get('tokens_per_s'), '.0f'):>11} {fmt(100 * t['mfu'] if t else None):>6} {fmt(t.get('peak_mem_gb')):>6} "
            f"{fmt(i.get('pairs_per_s'), '.2f'):>9} {fmt(i.get('tokens_per_s'), '.0f'):>11} "
            f"{fmt(100 * i['mfu'] if i else None):>6} {fmt(r.get('mean_rendered_length')):>8}  {r['status']}"
        )
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", required=True, help="an experiment file (configs/bench/*.yaml)")
    p.add_argument("overrides", nargs="*", help="dotted overrides for every variant, e.g. train.max_tokens=4096")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    p.add_argument("--variant", help="one variant of bench/throughput_variants.yaml (default: the config's default)")
    p.add_argument("--sweep", action="store_true", help="every variant of the config, in order")
    p.add_argument("--max-steps", type=int, help="train.max_steps (warm-up steps included)")
    p.add_argument("--lengths", help="file of pair token lengths, one a line (default: arena test lengths if found)")
    p.add_argument("--infer-rows", type=int, help="rows of the inference table (default: about 6 batches)")
    p.add_argument("--peak-tflops", type=float, help="peak for MFU (default 989 on cuda, nan on cpu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="folder for the run folders and variants.jsonl (default: a temporary folder)")
    args = p.parse_args(argv)
    peak = args.peak_tflops or (H100_BF16_DENSE_TFLOPS if args.device == "cuda" else float("nan"))
    args.peak_flops = peak * 1e12
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    config_path = Path(args.config)
    default, variants = load_variants(config_path)
    if args.sweep:
        chosen = list(variants.values())
    else:
        name = args.variant or default
        if name not in variants:
            raise SystemExit(f"unknown variant {name!r} for {config_path.stem}; known: {', '.join(variants)}")
        chosen = [variants[name]]
    pool, source = load_lengths(args.lengths, 16_384, args.seed)
    log(f"lengths: {source}; {len(pool)} drawn, mean {pool.mean():.1f}, sd {pool.std():.1f}")
    if args.device == "cuda" and torch.cuda.is_available():
        log(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, peak {args.peak_flops / 1e12:.0f} TFLOP/s")
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="prefkit-throughput-"))
    out.mkdir(parents=True, exist_ok=True)
    records = []
    try:
        for v in chosen:
            log(f"-- {v.name}: {' '.join(v.overrides) or '(the experiment file as it is)'}; warm-up {v.warmup_steps} steps")
            t0 = time.perf_counter()
            rec = run_variant(config_path, v, args, out / "runs", pool)
            rec.update(device=args.device, lengths=source, wall_s=round(time.perf_counter() - t0, 1))
            records.append(rec)
            t, i = rec.get("train", {}), rec.get("infer", {})
            log(f"   {v.name}: {rec['status']} in {rec['wall_s']:.0f}s; mean rendered length {fmt(rec.get('mean_rendered_length'))}; "
                f"train {fmt(t.get('pairs_per_s'), '.2f')} pairs/s over {t.get('steps', '-')} steps, "
                f"MFU {fmt(100 * t['mfu'] if t else None)}%; infer {fmt(i.get('pairs_per_s'), '.2f')} pairs/s")  # fmt: skip
            if args.out:
                with open(out / "variants.jsonl", "a") as fh:
                    fh.write(json.dumps(rec) + "\n")
    finally:
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)
    log(table(records, f"{config_path.stem} on {args.device}, peak {fmt(args.peak_flops / 1e12, '.0f')} TFLOP/s"))
    ok = [r for r in records if r["status"] == "ok"]
    if not ok:
        log("train_pairs_per_s=nan infer_pairs_per_s=nan mfu=nan")
        return 1
    best = max(ok, key=lambda r: r["train"]["pairs_per_s"])
    log(f"headline: {best['variant']} ({'fastest training of the sweep' if args.sweep else 'the variant run'})")
    t, i = best["train"], best["infer"]
    log(f"train_pairs_per_s={t['pairs_per_s']:.4g} infer_pairs_per_s={i['pairs_per_s']:.4g} mfu={t['mfu']:.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
