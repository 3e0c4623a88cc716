#!/usr/bin/env python3
"""Training / inference throughput of a transformer pair classifier (random weights).

    PYTHONPATH=src python3 bench/throughput.py --config configs/bench/llama3_8b.yaml --device cuda
    PYTHONPATH=src python3 bench/throughput.py --config configs/bench/tiny.yaml --device cpu --seconds 2
    PYTHONPATH=src python3 bench/throughput.py --config configs/bench/llama3_8b.yaml --device cuda --sweep

Builds a RANDOMLY INITIALISED model of the architecture in the config (``arch``: an
AutoConfig dict; bf16 weights on cuda, created on the GPU directly; LoRA through peft
when ``lora.enabled``), draws pair lengths from a realistic mix (``--lengths FILE``, one
token length a line; default: the arena test-set lengths file when found, else a
lognormal with the same mean, 525, and spread, sd 367), truncates them at
``--max-length``, and times

* training: forward + backward + grad-norm clip + AdamW step (fused on cuda), after
  warm-up steps, CUDA events around the timed steps;
* inference: forward only, ``torch.inference_mode``.

Batching (``--batching``):

* ``random``: a random permutation cut into batches of ``--batch-size`` pairs, padded to
  the longest (a Trainer's default loop);
* ``bucketed``: length-sorted batches of at most ``--max-tokens-per-batch`` padded tokens
  (``prefkit.text.batching.make_length_batches``, the training loop's batching);
* ``packed``: pairs concatenated without padding into packs of at most
  ``--max-tokens-per-batch`` tokens, ``position_ids`` restarting per pair, attention
  kept inside each pair (``--attn varlen``: FlashAttention varlen through
  ``prefkit.models.packing``; ``flex``/``sdpa``: transformers' packed masks), the score
  head on each pair's last token only (``prefkit.models.packing.packed_logits``).

Useful FLOPs (what MFU counts)
------------------------------
Per pair of ``s`` real tokens (padding earns nothing), with ``N`` the weights of the
matrix products every token passes through (backbone linear layers and LoRA adapters;
embeddings and the per-pair head excluded), ``L`` layers, ``d`` = heads x head_dim::

    forward(s) = 2*N*s + 4*L*d*s^2        (QK^T and AV over the full s x s square)
                 + 4*L*d*R*s              (DeBERTa only: c2p + p2c against R = 2*position_buckets
                                           relative positions)
    training, LoRA (frozen base weights) = 2 * forward(s)
        i.e. 2N forward + 2N backward per token (activation gradients only: frozen
        weights get no weight gradient), attention backward counted like its forward;
    training, full fine-tuning            = 3 * forward(s)   (6N per token)
    inference                             = forward(s)

Recomputation by gradient checkpointing earns no credit. MFU = useful FLOPs / (seconds
x peak); peak = ``--peak-tflops`` (default 989 bf16 dense, H100 SXM, on cuda; nan on cpu
unless given). This convention reproduces the reference figures quoted for an H100
(plain transformers + peft, LoRA r16 on q,k,v,o, arena lengths truncated at 1024 tokens,
mean 502): 5.9 pairs/s <-> 8.6% and 14.5 pairs/s <-> 21% (14.36 TFLOP per trained pair).

Pairs per second are pairs *of the length mix*: useful FLOP rate / mean useful FLOPs of a
mix pair (at the variant's max length). A timed window of a few large batches samples
pairs that are on average longer or shorter than the mix (packs built first-fit
decreasing hold many short or few long pairs); the FLOP rate is what carries over to a
full epoch. ``raw p/s`` in the table is the count actually seen. Tokens/s count real
tokens (no padding); ``pad%`` is the share of processed positions that were padding.

Output: one row per variant, then ``train_tokens_per_s=... infer_tokens_per_s=...`` and,
LAST, ``train_pairs_per_s=<v> infer_pairs_per_s=<v> mfu=<v>`` (mfu a fraction of peak)
for the single variant run, or for the fastest-training variant of a ``--sweep`` (the
config's ``bench.variants``). ``--out DIR`` writes ``variants.jsonl`` and the table.
Each variant runs under its own time cap (``timeout``; SIGALRM) and ``--deadline`` stops
starting new ones, so a sweep always ends with its table.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import signal
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from prefkit.models import packing  # noqa: E402

LENGTHS_REL = Path("data") / "arena_alpacaeval_gpt4" / "test_token_lengths_approx.txt"
LENGTHS_CANDIDATES = [
    ROOT / "shared" / LENGTHS_REL,
    ROOT.parent / "shared" / LENGTHS_REL,
]
# Lognormal matched to the arena file (mean 525, sd 367 tokens): sigma^2 = ln(1 + (367/525)^2).
LOGNORMAL_SIGMA = math.sqrt(math.log(1 + (367 / 525) ** 2))
LOGNORMAL_MU = math.log(525) - LOGNORMAL_SIGMA**2 / 2
H100_BF16_DENSE_TFLOPS = 989.0


def log(*parts) -> None:
    print(*parts, flush=True)


# -- config ------------------------------------------------------------------------------
@dataclass
class Variant:
    """One measured setting. Every field can be set in the config's ``bench`` section (the
    default for all variants), in one entry of ``bench.variants``, or on the command line."""

    name: str = "default"
    batching: str = "packed"  # random | bucketed | packed
    batch_size: int = 4  # random: pairs per batch
    max_tokens: int = 8192  # bucketed: padded tokens per batch; packed: tokens per pack
    infer_batch_size: int = 16  # random inference
    infer_max_tokens: int = 32768  # bucketed / packed inference
    max_length: int = 1024  # pairs truncated to this many tokens
    gradient_checkpointing: bool = False
    attn: str = "varlen"  # varlen | flex | sdpa | eager  (padded batches: sdpa / eager)
    compile: bool = False  # torch.compile each transformer layer (regional)
    lora_compute: str = "bf16"  # fp32: peft default (adapters in fp32, inputs cast); bf16: autocast
    hf_forward: bool = False  # padded batches: the model's own forward + loss (head on all tokens)
    pad_to_budget: bool = False  # packed: pad each pack to max_tokens (static shapes)
    pad_to_multiple: int = 1  # padded batches: round the padded length up (fewer distinct shapes)
    sdpa_backends: str = ""  # e.g. "flash,efficient": restrict SDPA's kernels (default: torch's choice)
    infer: bool = True
    seconds: float = 15.0  # timed training
    infer_seconds: float = 8.0
    warmup_steps: int = 2
    max_steps: int = 10_000
    timeout: float = 120.0  # seconds for the whole variant (build excluded)
    requires: str = ""  # run only if the variant of this name succeeded (sweeps)
    fallback_for: str = ""  # run only if the variant of this name failed (e.g. OOM)

    @classmethod
    def from_dict(cls, base: Variant, tree: dict) -> Variant:
        known = {f.name: f.type for f in fields(cls)}
        unknown = set(tree) - set(known)
        if unknown:
            raise SystemExit(f"unknown variant key(s): {sorted(unknown)}")
        return replace(base, **tree)


@dataclass
class BenchConfig:
    name: str
    kind: str  # decoder | encoder
    arch: dict
    num_labels: int = 3
    dtype: str = "bfloat16"  # weights on cuda; autocast: false keeps compute in this dtype
    autocast: bool = False  # encoders: fp32 weights + bf16 autocast
    lora: dict = field(default_factory=dict)
    optim: dict = field(default_factory=dict)
    bench: dict = field(default_factory=dict)
    variants: list = field(default_factory=list)


def load_bench_config(path: str | Path) -> BenchConfig:
    tree = yaml.safe_load(Path(path).read_text()) or {}
    bench = dict(tree.get("bench") or {})
    variants = bench.pop("variants", []) or []
    return BenchConfig(
        name=tree.get("name", Path(path).stem),
        kind=tree.get("kind", "decoder"),
        arch=dict(tree["arch"]),
        num_labels=int(tree.get("num_labels", 3)),
        dtype=tree.get("dtype", "bfloat16"),
        autocast=bool(tree.get("autocast", False)),
        lora=dict(tree.get("lora") or {}),
        optim=dict(tree.get("optim") or {}),
        bench=bench,
        variants=list(variants),
    )


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


# -- model -------------------------------------------------------------------------------
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_model(cfg: BenchConfig, device: torch.device, dtype: torch.dtype, attn: str):
    """Random-weight ``AutoModelForSequenceClassification`` of ``cfg.arch``, created on ``device``
    in ``dtype`` (no CPU detour), wrapped in LoRA when configured."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    arch = dict(cfg.arch)
    model_type = arch.pop("model_type")
    hf_cfg = AutoConfig.for_model(model_type, **arch)
    hf_cfg.num_labels = cfg.num_labels
    hf_cfg.problem_type = "single_label_classification"
    if getattr(hf_cfg, "use_cache", None) is not None:
        hf_cfg.use_cache = False
    kwargs = {"dtype": dtype}
    if attn in ("sdpa", "eager"):
        kwargs["attn_implementation"] = attn
    with torch.device(device):
        try:
            model = AutoModelForSequenceClassification.from_config(hf_cfg, **kwargs)
        except (ValueError, ImportError):  # e.g. no sdpa for this architecture (DeBERTa)
            kwargs["attn_implementation"] = "eager"
            model = AutoModelForSequenceClassification.from_config(hf_cfg, **kwargs)
    model.to(device)
    lora = cfg.lora
    if lora.get("enabled", False):
        from peft import LoraConfig, TaskType, get_peft_model

        peft_cfg = LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=int(lora.get("r", 16)),
            lora_alpha=int(lora.get("alpha", 32)),
            lora_dropout=float(lora.get("dropout", 0.0)),
            target_modules=lora.get("target_modules", ["q_proj", "k_proj", "v_proj", "o_proj"]),
        )
        with torch.device(device):
            model = get_peft_model(model, peft_cfg)
    return model


def linear_weights(model) -> int:
    """Weights of the per-token matrix products (backbone nn.Linear incl. LoRA; no head)."""
    base = packing.unwrap(model)
    prefix = getattr(base, "base_model_prefix", "")
    backbone = getattr(base, prefix, base)
    return sum(m.weight.numel() for m in backbone.modules() if isinstance(m, torch.nn.Linear))


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


def flop_model(model, cfg: BenchConfig) -> FlopModel:
    hf = packing.unwrap(model).config
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
    lora = bool(cfg.lora.get("enabled", False))
    return FlopModel(linear_weights(model), hf.num_hidden_layers, heads * head_dim, rel, 2 if lora else 3)


# -- batches -----------------------------------------------------------------------------
@dataclass
class Batch:
    lengths: np.ndarray  # real tokens per pair
    padded: dict | None = None  # input_ids, attention_mask (CPU)
    packed: packing.PackedBatch | None = None
    labels: torch.Tensor | None = None

    @property
    def n_pairs(self) -> int:
        return len(self.lengths)

    @property
    def n_tokens(self) -> int:
        return int(self.lengths.sum())

    @property
    def n_slots(self) -> int:  # tokens the model actually processes, padding included
        if self.packed is not None:
            return int(self.packed.input_ids.shape[1])
        return int(self.padded["input_ids"].numel())


def group_rows(lengths: np.ndarray, v: Variant, train: bool, seed: int) -> list[list[int]]:
    from prefkit.text.batching import make_length_batches

    if v.batching == "random":
        size = v.batch_size if train else v.infer_batch_size
        return make_length_batches(lengths, batch_size=size, shuffle=True, seed=seed, sort=False)
    tokens = v.max_tokens if train else v.infer_max_tokens
    if v.batching == "bucketed":
        return make_length_batches(lengths, max_tokens=tokens, shuffle=True, seed=seed)
    if v.batching == "packed":
        return packing.pack_batches(lengths, max_tokens=tokens, shuffle=True, seed=seed)
    raise SystemExit(f"unknown batching {v.batching!r}")


def make_batch(rows: list[int], lengths: np.ndarray, v: Variant, vocab: int, pad_id: int, gen, train: bool) -> Batch:
    lens = lengths[rows]
    seqs = [torch.randint(0, vocab, (int(n),), generator=gen) for n in lens]
    labels = torch.randint(0, 3, (len(rows),), generator=gen)
    if v.batching == "packed":
        pad_to = (v.max_tokens if train else v.infer_max_tokens) if v.pad_to_budget else None
        pb = packing.collate_packed(seqs, pad_id=pad_id, pad_to=pad_to)
        if v.compile:  # an upper bound, constant across packs: no recompiles on it
            pb.max_seqlen = max(pb.max_seqlen, v.max_length)
        return Batch(lens, packed=pb, labels=labels)
    longest = int(lens.max())
    if v.pad_to_multiple > 1:
        longest = -(-longest // v.pad_to_multiple) * v.pad_to_multiple
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return Batch(lens, padded={"input_ids": ids, "attention_mask": mask}, labels=labels)


# -- timing ------------------------------------------------------------------------------
class VariantTimeout(Exception):
    pass


def _on_alarm(signum, frame):  # noqa: ARG001
    raise VariantTimeout("variant time cap reached")


@contextlib.contextmanager
def time_cap(seconds: float):
    if seconds is None or seconds <= 0 or not hasattr(signal, "SIGALRM"):
        yield
        return
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timer:
    """CUDA events on cuda, perf_counter elsewhere."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        sync(self.device)
        if self.device.type == "cuda":
            self.start, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.start.record()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.end.record()
            self.end.synchronize()
            self.seconds = self.start.elapsed_time(self.end) / 1000.0
        else:
            self.seconds = time.perf_counter() - self.t0
        return False


# -- the runner --------------------------------------------------------------------------
class Runner:
    def __init__(self, cfg: BenchConfig, args):
        self.cfg = cfg
        self.args = args
        self.device = torch.device(args.device)
        dtype_name = args.dtype or (cfg.dtype if self.device.type == "cuda" else "float32")
        self.dtype = _DTYPES[dtype_name]
        self.autocast_dtype = torch.bfloat16 if (cfg.autocast and self.device.type == "cuda") else None
        self.is_decoder = cfg.kind == "decoder"
        self.peak = args.peak_tflops if args.peak_tflops is not None else (H100_BF16_DENSE_TFLOPS if self.device.type == "cuda" else float("nan"))
        self.peak_flops = self.peak * 1e12
        self.current_attn = None
        self.compiled = False
        self.infer_cache: dict = {}

    # -- setup
    def build(self, first_attn: str) -> None:
        torch.manual_seed(self.args.seed)
        t0 = time.perf_counter()
        attn = first_attn if first_attn in ("sdpa", "eager") else "sdpa"
        self.model = build_model(self.cfg, self.device, self.dtype, attn)
        sync(self.device)
        self.build_seconds = time.perf_counter() - t0
        base = packing.unwrap(self.model)
        self.vocab = int(base.config.vocab_size)
        pad = getattr(base.config, "pad_token_id", None)
        self.pad_id = int(pad) if pad is not None else 0
        # token ids never equal the pad id (the model's own pooling looks for it)
        self.id_high = self.pad_id if self.pad_id > self.vocab // 2 else self.vocab
        self.flops = flop_model(self.model, self.cfg)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        total = sum(p.numel() for p in self.model.parameters())
        self.current_attn = base.config._attn_implementation
        log(
            f"built {self.cfg.name} ({type(base).__name__}) on {self.device} {self.dtype}: {total / 1e9:.3f}B params, "
            f"{sum(p.numel() for p in self.trainable) / 1e6:.2f}M trainable, N(matmul)={self.flops.n_matmul / 1e9:.3f}B, "
            f"build {self.build_seconds:.1f}s, attn={self.current_attn}"
        )

    def set_attn(self, attn: str) -> None:
        if attn == self.current_attn or (attn == "varlen" and self.current_attn == packing.ATTN_NAME):
            return
        if attn == "varlen":
            self.current_attn = packing.enable_packed_attention(self.model, "varlen")
            if self.device.type == "cuda":
                log(f"varlen probe: {packing.probe_varlen(self.device, self.dtype if self.dtype != torch.float32 else torch.bfloat16)}")
        else:
            self.current_attn = packing.set_attention(self.model, "flex_attention" if attn == "flex" else attn)

    def set_checkpointing(self, on: bool) -> None:
        base = packing.unwrap(self.model)
        if on:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            base.gradient_checkpointing_disable()

    def set_lora_compute(self, mode: str) -> None:
        packing.set_adapter_input_casting(self.model, enabled=mode != "bf16")

    def set_compile(self, on: bool) -> None:
        if on != self.compiled:
            packing.compile_layers(self.model, enabled=on)
            self.compiled = on

    def kernels(self, v: Variant):
        if not v.sdpa_backends:
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        names = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                 "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}
        return sdpa_kernel([names[n.strip()] for n in v.sdpa_backends.split(",") if n.strip()])

    def autocast(self, v: Variant):
        if self.device.type != "cuda":
            return contextlib.nullcontext()
        if self.autocast_dtype is not None:
            return torch.autocast("cuda", dtype=self.autocast_dtype)
        if self.cfg.lora.get("enabled") and v.lora_compute == "bf16" and self.dtype != torch.float32:
            return torch.autocast("cuda", dtype=self.dtype)
        return contextlib.nullcontext()

    # -- steps
    def logits_and_loss(self, batch: Batch, v: Variant):
        labels = batch.labels.to(self.device, non_blocking=True)
        if batch.packed is not None:
            pb = batch.packed.to(self.device)
            logits = packing.packed_logits(self.model, pb)
            return logits, F.cross_entropy(logits, labels)
        ids = batch.padded["input_ids"].to(self.device, non_blocking=True)
        mask = batch.padded["attention_mask"].to(self.device, non_blocking=True)
        if v.hf_forward or not self.is_decoder:
            out = self.model(input_ids=ids, attention_mask=mask, labels=labels)
            return out.logits, out.loss
        logits = packing.padded_logits(self.model, ids, mask)
        return logits, F.cross_entropy(logits, labels)

    def train_step(self, batch: Batch, v: Variant, opt) -> None:
        with self.kernels(v):
            with self.autocast(v):
                _, loss = self.logits_and_loss(batch, v)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(self.trainable, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    def infer_step(self, batch: Batch, v: Variant) -> None:
        with torch.inference_mode(), self.kernels(v), self.autocast(v):
            self.logits_and_loss(batch, v)

    def make_optimizer(self):
        o = self.cfg.optim
        kwargs = {"lr": float(o.get("lr", 1e-4)), "weight_decay": float(o.get("weight_decay", 0.0))}
        if self.device.type == "cuda" and o.get("fused", True):
            kwargs["fused"] = True
        return torch.optim.AdamW(self.trainable, **kwargs)

    # -- measurement
    def batches(self, lengths: np.ndarray, v: Variant, train: bool, seed: int):
        rows = group_rows(lengths, v, train, seed)
        gen = torch.Generator().manual_seed(seed)
        i = 0
        while True:
            if i == len(rows):
                i = 0
            yield make_batch(rows[i], lengths, v, self.id_high, self.pad_id, gen, train)
            i += 1

    def measure(self, step, batch_iter, v: Variant, seconds: float, train: bool, mix: np.ndarray) -> dict:
        warm = []
        for i in range(max(1, v.warmup_steps)):
            b = next(batch_iter)
            t0 = time.perf_counter()
            step(b)
            sync(self.device)
            warm.append(time.perf_counter() - t0)
            log(f"  {'train' if train else 'infer'} warm-up step {i + 1}: {warm[-1]:.2f}s ({b.n_pairs} pairs, {b.n_slots} slots)")
        per_step = warm[-1]  # the first steps carry one-off costs (allocator, autotuning, compiles)
        steps = int(max(2, min(v.max_steps, math.ceil(seconds / max(per_step, 1e-4)))))
        todo = [next(batch_iter) for _ in range(steps)]
        if self.device.type == "cuda":
            todo = [replace(b, packed=b.packed.pin_memory() if b.packed is not None else None) for b in todo]
        with Timer(self.device) as t:
            for b in todo:
                step(b)
        lens = np.concatenate([b.lengths for b in todo])
        cost = self.flops.train if train else self.flops.forward
        useful = cost(lens)
        per_pair = cost(mix) / len(mix)  # mean useful FLOPs of a pair of the length mix
        return {
            "steps": steps,
            "seconds": t.seconds,
            # pairs of the length mix per second: a short window samples a few batches whose
            # pairs are longer or shorter than the mix; the useful-FLOP rate is what carries over
            "pairs_per_s": useful / t.seconds / per_pair,
            "raw_pairs_per_s": len(lens) / t.seconds,
            "tokens_per_s": float(lens.sum()) / t.seconds,
            "slots_per_s": float(sum(b.n_slots for b in todo)) / t.seconds,
            "pad_fraction": 1.0 - float(lens.sum()) / sum(b.n_slots for b in todo),
            "tflops": useful / t.seconds / 1e12,
            "mfu": useful / t.seconds / self.peak_flops,
            "pairs_per_step": len(lens) / steps,
            "peak_mem_gb": torch.cuda.max_memory_allocated(self.device) / 1e9 if self.device.type == "cuda" else float("nan"),
        }

    def infer_key(self, v: Variant) -> tuple:
        return (v.batching, v.attn, v.infer_batch_size if v.batching == "random" else v.infer_max_tokens, v.max_length,
                v.compile, v.lora_compute, v.hf_forward, v.pad_to_budget, v.pad_to_multiple, v.sdpa_backends)

    def run_variant(self, v: Variant, pool: np.ndarray) -> dict:
        rec = {"name": v.name, "variant": asdict(v), "status": "ok"}
        lengths = np.minimum(pool, v.max_length)
        opt = None
        try:
            self.set_attn(v.attn)
            self.set_checkpointing(v.gradient_checkpointing)
            self.set_lora_compute(v.lora_compute)
            self.set_compile(v.compile)
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
            self.model.train()
            opt = self.make_optimizer()
            optimizer = opt
            step = lambda b: self.train_step(b, v, optimizer)  # noqa: E731
            rec["train"] = self.measure(step, self.batches(lengths, v, True, self.args.seed), v, v.seconds, True, lengths)
            opt = optimizer = step = None  # free the AdamW state before inference
            self.model.zero_grad(set_to_none=True)
            if v.infer:
                key = self.infer_key(v)
                if key in self.infer_cache:
                    rec["infer"] = dict(self.infer_cache[key], reused=True)
                else:
                    if self.device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(self.device)
                    self.model.eval()
                    step = lambda b: self.infer_step(b, v)  # noqa: E731
                    rec["infer"] = self.measure(
                        step, self.batches(lengths, v, False, self.args.seed + 1), v, v.infer_seconds, False, lengths
                    )
                    self.infer_cache[key] = rec["infer"]
        except VariantTimeout as err:
            rec["status"] = f"timeout ({err})"
        except torch.OutOfMemoryError:
            rec["status"] = "OOM"
        except Exception as err:  # noqa: BLE001 - one failing variant must not end the sweep
            rec["status"] = f"error: {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
            rec["traceback"] = traceback.format_exc()
            log(rec["traceback"])
        finally:
            if opt is not None:
                opt.zero_grad(set_to_none=True)
            opt = None
            self.model.zero_grad(set_to_none=True)
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        return rec

    def check_packed(self, pool: np.ndarray, max_length: int) -> dict:
        """Packed (varlen) vs padded (sdpa) logits and LoRA gradients on a few pairs."""
        lens = np.array([min(max_length, x) for x in (300, max_length, 57, 700, 5, 512, 1, 129)])
        gen = torch.Generator().manual_seed(123)
        seqs = [torch.randint(0, self.id_high, (int(n),), generator=gen) for n in lens]
        labels = torch.randint(0, 3, (len(lens),), generator=gen).to(self.device)
        v = Variant(lora_compute="bf16")
        out = {}
        grads = {}
        for mode in ("padded", "packed"):
            self.set_attn("sdpa" if mode == "padded" else "varlen")
            self.set_checkpointing(self.device.type == "cuda")  # 8 x 1024 padded tokens: keep memory low
            self.set_lora_compute("bf16")
            self.model.train()
            self.model.zero_grad(set_to_none=True)
            with self.autocast(v):
                if mode == "packed":
                    logits = packing.packed_logits(self.model, packing.collate_packed(seqs, self.pad_id).to(self.device))
                else:
                    ids = torch.full((len(seqs), int(lens.max())), self.pad_id, dtype=torch.long)
                    mask = torch.zeros_like(ids)
                    for i, s in enumerate(seqs):
                        ids[i, : len(s)] = s
                        mask[i, : len(s)] = 1
                    logits = packing.padded_logits(self.model, ids.to(self.device), mask.to(self.device))
                loss = F.cross_entropy(logits, labels)
            loss.backward()
            out[mode] = logits.detach().float()
            grads[mode] = torch.cat([p.grad.detach().float().flatten() for p in self.trainable if p.grad is not None])
        self.model.zero_grad(set_to_none=True)
        a, b = out["packed"], out["padded"]
        res = {
            "logits_max_abs_diff": float((a - b).abs().max()),
            "logits_rel_err": float((a - b).norm() / b.norm().clamp_min(1e-12)),
            "grad_rel_err": float((grads["packed"] - grads["padded"]).norm() / grads["padded"].norm().clamp_min(1e-12)),
            "logits_scale": float(b.abs().mean()),
        }
        log("check packed vs padded: " + " ".join(f"{k}={v:.3g}" for k, v in res.items()))
        return res


# -- output ------------------------------------------------------------------------------
def fmt(x, spec=".1f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def table(records: list[dict], model_name: str) -> str:
    head = (
        f"{'variant':<30} {'train p/s':>9} {'raw p/s':>7} {'train tok/s':>11} {'MFU%':>6} {'TFLOP/s':>7} {'pad%':>5} {'mem GB':>6} "
        f"{'p/step':>6} {'infer p/s':>9} {'infer tok/s':>11} {'iMFU%':>6} {'imem GB':>7}  status"
    )
    lines = [f"== {model_name} ==", head]
    for r in records:
        t, i = r.get("train", {}), r.get("infer", {})
        lines.append(
            f"{r['name']:<30} {fmt(t.get('pairs_per_s'), '.2f'):>9} {fmt(t.get('raw_pairs_per_s'), '.2f'):>7} "
            f"{fmt(t.get('tokens_per_s'), '.0f'):>11} "
            f"{fmt(100 * t['mfu'] if t else None):>6} {fmt(t.get('tflops')):>7} {fmt(100 * t['pad_fraction'] if t else None):>5} "
            f"{fmt(t.get('peak_mem_gb')):>6} {fmt(t.get('pairs_per_step')):>6} {fmt(i.get('pairs_per_s'), '.2f'):>9} "
            f"{fmt(i.get('tokens_per_s'), '.0f'):>11} {fmt(100 * i['mfu'] if i else None):>6} {fmt(i.get('peak_mem_gb')):>7}  "
            f"{r['status']}{' (infer reused)' if i.get('reused') else ''}"
        )
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="bench model config (configs/bench/*.yaml)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    p.add_argument("--dtype", choices=sorted(_DTYPES), help="weights dtype (default: config's on cuda, float32 on cpu)")
    p.add_argument("--seconds", type=float, help="timed training seconds per variant")
    p.add_argument("--infer-seconds", type=float, help="timed inference seconds per variant")
    p.add_argument("--lengths", help="file of pair token lengths, one a line (default: arena test lengths if found)")
    p.add_argument("--pool", type=int, default=8192, help="pairs drawn from the length mix")
    p.add_argument("--max-length", type=int)
    p.add_argument("--batching", choices=["random", "bucketed", "packed"])
    p.add_argument("--batch-size", type=int)
    p.add_argument("--max-tokens-per-batch", type=int, dest="max_tokens")
    p.add_argument("--infer-batch-size", type=int)
    p.add_argument("--infer-max-tokens-per-batch", type=int, dest="infer_max_tokens")
    p.add_argument("--gradient-checkpointing", choices=["on", "off"])
    p.add_argument("--attn", choices=["varlen", "flex", "sdpa", "eager"])
    p.add_argument("--compile", choices=["on", "off"])
    p.add_argument("--lora-compute", choices=["fp32", "bf16"])
    p.add_argument("--hf-forward", choices=["on", "off"])
    p.add_argument("--pad-to-budget", choices=["on", "off"])
    p.add_argument("--pad-to-multiple", type=int, help="padded batches: round lengths up to a multiple")
    p.add_argument("--sdpa-backends", help="restrict SDPA kernels, e.g. flash,efficient")
    p.add_argument("--no-infer", action="store_true")
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--variant-timeout", type=float, dest="timeout")
    p.add_argument("--sweep", action="store_true", help="run the config's bench.variants (one model build)")
    p.add_argument("--only", help="comma-separated variant names (with --sweep)")
    p.add_argument("--deadline", type=float, help="seconds from start after which no variant starts")
    p.add_argument("--check", action="store_true", help="decoders: compare packed vs padded logits/grads first")
    p.add_argument("--peak-tflops", type=float, help="peak for MFU (default 989 on cuda, nan on cpu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--out", help="folder for variants.jsonl and table.txt")
    return p.parse_args(argv)


def cli_overrides(args) -> dict:
    over = {}
    for key in ("seconds", "infer_seconds", "max_length", "batching", "batch_size", "max_tokens", "infer_batch_size",
                "infer_max_tokens", "attn", "lora_compute", "warmup_steps", "max_steps", "timeout", "pad_to_multiple",
                "sdpa_backends"):
        value = getattr(args, key)
        if value is not None:
            over[key] = value
    for key in ("gradient_checkpointing", "compile", "hf_forward", "pad_to_budget"):
        value = getattr(args, key)
        if value is not None:
            over[key] = value == "on"
    if args.no_infer:
        over["infer"] = False
    return over


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_bench_config(args.config)
    base = Variant.from_dict(Variant(), cfg.bench)
    over = cli_overrides(args)
    if args.sweep and cfg.variants:
        variants = [Variant.from_dict(base, dict(v)) for v in cfg.variants]
        if args.only:
            keep = set(args.only.split(","))
            variants = [v for v in variants if v.name in keep]
        variants = [replace(v, **over) for v in variants]
    else:
        variants = [replace(base, **over, name=args.batching or base.name)]
    if not variants:
        raise SystemExit("no variants to run")
    pool, source = load_lengths(args.lengths, args.pool, args.seed)
    max_len = max(v.max_length for v in variants)
    trunc = np.minimum(pool, max_len)
    log(
        f"lengths: {source}; {len(pool)} pairs, mean {pool.mean():.1f}, sd {pool.std():.1f}; "
        f"truncated at {max_len}: mean {trunc.mean():.1f}, mean of squares {np.mean(trunc.astype(float) ** 2):.0f}"
    )
    out_dir = Path(args.out) if args.out else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    if args.device == "cuda":
        log(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, peak {args.peak_tflops or H100_BF16_DENSE_TFLOPS} TFLOP/s")
    runner = Runner(cfg, args)
    runner.build(variants[0].attn)
    fm = runner.flops
    mean_len = float(trunc.mean())
    log(
        f"useful FLOPs per pair (mean, at max length {max_len}): train {fm.train(trunc) / len(trunc) / 1e12:.3f} TFLOP, "
        f"infer {fm.forward(trunc) / len(trunc) / 1e12:.3f} TFLOP; mean tokens {mean_len:.1f}"
    )
    if runner.is_decoder and cfg.lora.get("enabled"):
        per_pair = fm.train(trunc) / len(trunc)
        log("MFU at the reference rates: " + ", ".join(
            f"{r} pairs/s -> {100 * r * per_pair / runner.peak_flops:.2f}%" for r in (5.9, 14.5, 27.0)))
    check = None
    if args.check and runner.is_decoder:
        try:
            check = runner.check_packed(pool, max_len)
        except Exception as err:  # noqa: BLE001
            log(f"check failed: {type(err).__name__}: {err}")
            log(traceback.format_exc())
    records = []
    status: dict[str, str] = {}
    for v in variants:
        elapsed = time.perf_counter() - start
        if (v.requires and status.get(v.requires) != "ok") or (v.fallback_for and status.get(v.fallback_for, "ok") == "ok"):
            why = f"needs {v.requires} ok" if v.requires else f"{v.fallback_for} ran"
            records.append({"name": v.name, "variant": asdict(v), "status": f"skipped ({why})"})
            log(f"-- {v.name}: skipped ({why})")
            continue
        if args.deadline is not None:
            left = args.deadline - elapsed
            if left < v.seconds + 10:
                records.append({"name": v.name, "variant": asdict(v), "status": "skipped (deadline)"})
                log(f"-- {v.name}: skipped, {left:.0f}s left before the deadline")
                continue
            v = replace(v, timeout=min(v.timeout, left))
        log(f"-- {v.name}: {json.dumps({k: x for k, x in asdict(v).items() if k != 'name'})}")
        t0 = time.perf_counter()
        with time_cap(v.timeout):
            rec = runner.run_variant(v, pool)
        rec["wall_s"] = time.perf_counter() - t0
        records.append(rec)
        status[v.name] = rec["status"]
        t, i = rec.get("train", {}), rec.get("infer", {})
        log(
            f"   {v.name}: {rec['status']} in {rec['wall_s']:.0f}s; train {fmt(t.get('pairs_per_s'), '.2f')} pairs/s "
            f"{fmt(t.get('tokens_per_s'), '.0f')} tok/s MFU {fmt(100 * t['mfu'] if t else None)}% mem {fmt(t.get('peak_mem_gb'))} GB; "
            f"infer {fmt(i.get('pairs_per_s'), '.2f')} pairs/s"
        )
        if out_dir:
            with open(out_dir / "variants.jsonl", "a") as fh:
                fh.write(json.dumps({"model": cfg.name, "check": check, **{k: x for k, x in rec.items() if k != 'traceback'}}) + "\n")
    text = table(records, f"{cfg.name} on {args.device} (build {runner.build_seconds:.1f}s, peak {runner.peak} TFLOP/s)")
    log(text)
    if out_dir:
        with open(out_dir / "table.txt", "a") as fh:
            fh.write(text + "\n")
    ok = [r for r in records if r["status"] == "ok" and "train" in r]
    if not ok:
        log("train_pairs_per_s=nan infer_pairs_per_s=nan mfu=nan")
        return 1
    best = max(ok, key=lambda r: r["train"]["pairs_per_s"])
    t, i = best["train"], best.get("infer", {})
    ipairs = i.get("pairs_per_s", float("nan"))
    log(f"best: {best['name']}")
    log(f"train_tokens_per_s={t['tokens_per_s']:.1f} infer_tokens_per_s={i.get('tokens_per_s', float('nan')):.1f}")
    log(f"train_pairs_per_s={t['pairs_per_s']:.4g} infer_pairs_per_s={ipairs:.4g} mfu={t['mfu']:.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
