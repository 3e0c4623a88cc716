"""How long a Kaggle kernel's inference takes: ``prefkit kernel estimate``.

The estimate is FLOP-based: each test pair costs one forward pass at its rendered length
``s`` truncated at the max length (``infer.max_length`` or ``render.max_length``),

    forward(s) = 2*N*s + 4*L*d*s^2

(``N`` the weights of the per-token matrix products, counted on a meta-device copy of the
architecture; ``L`` layers; ``d`` = heads x head_dim; the QK^T and AV products over the
s x s square), times 2 with swap TTA, times the fold models predicted one after another
(``infer.fold_average=predictions``; 1 when their weights are averaged). Seconds = FLOPs /
(GPUs x per-GPU peak x MFU) + the time to load each model, with the peak, the MFU and the
load time from ``profiles.yaml`` (beside this file: what each figure is, where it comes
from, the command that measured it; T4 figures are the H100's MFU on the T4's peak until
measured). The largest max length that fits the limit is found by bisection (the time only
grows with the max length).

Test lengths: a text file of one token length a line (``test_token_lengths_approx.txt``), or
a pair file rendered with the run's tokenizer and render settings (no truncation).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from prefkit.errors import InputError

PROFILES_FILE = Path(__file__).with_name("profiles.yaml")
UNTRUNCATED = 1 << 20  # a render budget no pair reaches: the lengths as they would be without a cap


def load_profiles(path: str | Path = PROFILES_FILE) -> dict:
    return yaml.safe_load(Path(path).read_text())


# -- FLOPs -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class FlopModel:
    """Useful forward FLOPs of one sequence of ``s`` real tokens (see module doc)."""

    n_matmul: int  # weights of the per-token matrix products (backbone linear layers, LoRA included)
    layers: int
    d_attn: int  # heads x head_dim
    params: int  # all weights (memory)

    def forward(self, s) -> np.ndarray:
        s = np.asarray(s, dtype=np.float64)
        return 2.0 * self.n_matmul * s + 4.0 * self.layers * self.d_attn * s * s


def backbone_linear_weights(model) -> int:
    """Weights of the per-token matrix products: the backbone's ``nn.Linear`` layers (LoRA
    adapters included, the embeddings and the per-pair head not)."""
    import torch

    from prefkit.models.transformer import unwrap_peft

    base = unwrap_peft(model)
    backbone = getattr(base, getattr(base, "base_model_prefix", ""), base)
    return sum(m.weight.numel() for m in backbone.modules() if isinstance(m, torch.nn.Linear))


def flop_model_of(hf_config) -> FlopModel:
    """The FLOP model of a transformers config, counted on the meta device (no memory)."""
    return _flop_model(type(hf_config), hf_config.to_json_string(use_diff=False))


@functools.lru_cache(maxsize=16)
def _flop_model(config_class, config_json: str) -> FlopModel:
    import json

    from accelerate import init_empty_weights
    from transformers import AutoModelForSequenceClassification

    hf_config = config_class.from_dict(json.loads(config_json))
    with init_empty_weights():
        model = AutoModelForSequenceClassification.from_config(hf_config)
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    params = sum(p.numel() for p in model.parameters())
    return FlopModel(backbone_linear_weights(model), cfg.num_hidden_layers, heads * head_dim, params)


# -- profiles --------------------------------------------------------------------------------
@dataclass
class Throughput:
    """What a device does with an architecture: FLOP/s and where the figure comes from."""

    device: str
    gpus: int
    peak_tflops: float  # per GPU, at the device's precision
    mfu: float
    measured: bool
    source: str
    load_minutes: float
    memory_gb: float
    precision: str

    @property
    def flops_per_s(self) -> float:
        return self.gpus * self.peak_tflops * 1e12 * self.mfu


def architecture_of(hf_config, profiles: dict) -> str:
    """The profile name whose ``match`` fields all equal the config's, else ``default``."""
    for name, arch in profiles["architectures"].items():
        match = arch.get("match")
        if match and all(getattr(hf_config, k, None) == v for k, v in match.items()):
            return name
    return "default"


def throughput(device: str, arch: str, profiles: dict) -> Throughput:
    """The ``device`` profile's throughput for ``arch``: its own measured MFU on that GPU,
    else the architecture's H100 MFU on this GPU's peak (said in ``source``)."""
    devices = profiles["devices"]
    if device not in devices:
        raise InputError(f"unknown device profile {device!r}; known: {', '.join(devices)}")
    dev = devices[device]
    gpu = dev["gpu"]
    peaks = profiles["peaks"][gpu]
    peak = peaks[dev["precision"]]
    mfus = profiles["architectures"].get(arch, profiles["architectures"]["default"])["mfu"]
    if gpu in mfus:
        entry, source = mfus[gpu], mfus[gpu]["source"]
    else:
        ref = "h100" if "h100" in mfus else next(iter(mfus))
        entry = mfus[ref]
        source = f"not measured on {gpu}: the {ref} MFU ({entry['value']:.0%}, {entry['source']}) on the {gpu} peak ({peak} TFLOP/s)"
    measured = bool(entry.get("measured")) and gpu in mfus
    return Throughput(device, int(dev["gpus"]), float(peak), float(entry["value"]), measured, source, float(dev.get("load_minutes", 0.0)),
                      float(peaks["memory_gb"]), dev["precision"])  # fmt: skip


# -- the estimate -------------------------------------------------------------------------------
@dataclass
class Estimate:
    device: str
    pairs: int
    max_length: int
    passes: int  # forward passes per pair: swap TTA x fold models
    loads: int  # models loaded one after another
    hours: float
    limit_hours: float
    max_length_that_fits: int  # 0: not even the shortest max length fits
    longest: int  # the longest untruncated test pair
    max_positions: int  # the model's position limit (max_position_embeddings)
    truncated_share: float  # of the pairs, cut at max_length
    throughput: Throughput
    flops: FlopModel
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return self.hours <= self.limit_hours


def hours_at(max_length: int, lengths: np.ndarray, flops: FlopModel, tp: Throughput, passes: int, loads: int, scale: float) -> float:
    """Hours of a kernel at ``max_length`` (``scale``: hidden-test pairs per test-file pair)."""
    work = float(flops.forward(np.minimum(lengths, max_length)).sum()) * passes * scale
    return (work / tp.flops_per_s + loads * tp.load_minutes * 60.0) / 3600.0


def largest_fitting(lengths: np.ndarray, limit_hours: float, hours, low: int = 32, high: int | None = None) -> int:
    """The largest max length in [``low``, ``high``] (default: the longest pair) whose
    ``hours(L)`` is within the limit (0 when even ``low`` is not)."""
    longest = min(int(lengths.max()), high or int(lengths.max()))
    if hours(longest) <= limit_hours:
        return longest
    if hours(low) > limit_hours:
        return 0
    lo, hi = low, longest  # hours(lo) fits, hours(hi) does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if hours(mid) <= limit_hours else (lo, mid)
    return lo


def estimate(hf_config, lengths, device: str, max_length: int, *, tta: bool = True, folds: int = 1, pairs: int | None = None,
             limit_hours: float = 9.0, weight_bytes: float = 2.0, profiles: dict | None = None,
             mfu: tuple[float, str] | None = None) -> Estimate:  # fmt: skip
    """The run-time estimate of predicting ``pairs`` pairs (default: as many as ``lengths``)
    with the length mix of ``lengths`` (untruncated rendered token lengths) on ``device``.
    ``folds``: fold models predicted one after another; ``weight_bytes``: per weight (2 for
    fp16, 1 for 8-bit, 0.5 for 4-bit), for the memory note. ``mfu``: (value, where it comes
    from) instead of the profile's (a figure just measured, applied to the device's peak)."""
    profiles = profiles or load_profiles()
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size == 0:
        raise InputError("no test lengths to estimate from")
    flops = flop_model_of(hf_config)
    arch = architecture_of(hf_config, profiles)
    tp = throughput(device, arch, profiles)
    if mfu is not None:
        tp.mfu, tp.source, tp.measured = float(mfu[0]), mfu[1], False
    pairs = int(pairs or len(lengths))
    positions = int(getattr(hf_config, "max_position_embeddings", None) or lengths.max())
    passes, loads, scale = (2 if tta else 1) * folds, folds, pairs / len(lengths)

    def hours(cap: int) -> float:
        return hours_at(cap, lengths, flops, tp, passes, loads, scale)

    notes = [f"architecture: {arch} ({flops.params / 1e9:.2f}B weights, {flops.n_matmul / 1e9:.2f}B in per-token matrix products, "
             f"{flops.layers} layers); MFU {tp.mfu:.0%} ({'measured' if tp.measured else 'estimated'}: {tp.source})"]  # fmt: skip
    if weight_bytes < 2:
        notes.append("8-bit/4-bit weights: bitsandbytes matrix products are slower than fp16 ones and are not in the profile (not measured): a lower bound")
    memory = flops.params * weight_bytes / 1e9
    if memory > 0.9 * tp.memory_gb:
        notes.append(f"memory: {memory:.1f} GB of weights at {weight_bytes:g} bytes each exceed a {tp.memory_gb:g} GB GPU: load 8-bit (infer.quantize=8bit) or 4-bit")
    return Estimate(device, pairs, int(max_length), passes, loads, hours(int(max_length)), float(limit_hours),
                    largest_fitting(lengths, limit_hours, hours, high=positions), int(lengths.max()), positions,
                    float((lengths > max_length).mean()), tp, flops, notes)  # fmt: skip


# -- inputs -------------------------------------------------------------------------------------
def read_lengths_file(path: str | Path) -> np.ndarray:
    """One positive integer a line (blank lines ignored); a bad line is one error naming it."""
    path = Path(path)
    values = []
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.strip()
        if not text:
            continue
        try:
            value = int(float(text))
        except ValueError:
            raise InputError(f"expected a token length (a positive integer), got {text[:40]!r}", file=path, row=i) from None
        if value < 1:
            raise InputError(f"expected a token length (a positive integer), got {value}", file=path, row=i)
        values.append(value)
    if not values:
        raise InputError("no token lengths in the file", file=path)
    return np.asarray(values, dtype=np.int64)


def rendered_lengths(cfg, tokenizer, table) -> np.ndarray:
    """Token lengths of ``table``'s pairs as ``cfg``'s task renders them, untruncated."""
    from prefkit.tasks import get_task

    task = get_task(cfg.task, cfg)
    render = cfg.render.model_copy(update={"max_length": UNTRUNCATED})
    return np.asarray(task.encode(task.renderer(tokenizer, render), table, labels=False).lengths, dtype=np.int64)


def is_lengths_file(path: str | Path) -> bool:
    return Path(path).suffix == ".txt"


@dataclass
class Target:
    """What is estimated: the run config, where its tokenizer is, and its fold models."""

    cfg: object
    tokenizer_source: Path | None  # a checkpoint folder holding the tokenizer; None: the config's model/tokenizer
    checkpoints: int  # fold checkpoints found (0 for a bare config)


def resolve_target(path: str | Path, overrides: list[str] | None = None) -> Target:
    """A run folder (``config.yaml`` + ``fold_*/checkpoint``), a checkpoint folder, or an
    experiment file."""
    from prefkit.config import load_config
    from prefkit.models.transformer import CHECKPOINT_META

    path = Path(path)
    if not path.exists():
        raise InputError("run folder, checkpoint or config file not found", file=path)
    if path.is_file():
        return Target(load_config(path, overrides), None, 0)
    if (path / CHECKPOINT_META).exists():
        return Target(load_config(path / "config.yaml", overrides), path, 1)
    if not (path / "config.yaml").exists():
        raise InputError("not a run folder (no config.yaml)", file=path)
    ckpts = sorted(path.glob("fold_*/checkpoint"))
    return Target(load_config(path / "config.yaml", overrides), ckpts[0] if ckpts else None, len(ckpts))


def model_config_of(cfg):
    """The transformers config of ``cfg``'s model (its ``config.json``)."""
    from transformers import AutoConfig

    from prefkit.models.transformer import _local_or_hub, _source_error

    try:
        return AutoConfig.from_pretrained(_local_or_hub(cfg.model.name_or_path, "model config"))
    except (OSError, ValueError) as err:
        raise _source_error(cfg.model.name_or_path, err) from None


def test_lengths(target: Target, test: str | Path, fmt: str = "kaggle") -> tuple[np.ndarray, str]:
    """(untruncated lengths, how they were obtained) of the test file."""
    from prefkit.data.fileio import COMPRESSION_SUFFIXES

    asked = Path(test)
    # a Kaggle layout kept compressed (test.csv.xz) answers to its plain name, as the readers' other files do
    test = next((p for p in (asked.with_name(asked.name + s) for s in COMPRESSION_SUFFIXES) if p.exists()), None)
    if test is None:
        raise InputError("test file not found", file=asked)
    if is_lengths_file(test):
        return read_lengths_file(test), f"token lengths read from {test}"
    from prefkit.data import read_pairs

    if target.tokenizer_source is not None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(target.tokenizer_source)
        where = str(target.tokenizer_source)
    else:
        from prefkit.models.transformer import load_tokenizer

        tokenizer = load_tokenizer(target.cfg.model)
        where = target.cfg.model.tokenizer or target.cfg.model.name_or_path
    lengths = rendered_lengths(target.cfg, tokenizer, read_pairs(test, fmt))
    return lengths, f"{len(lengths)} pairs of {test} rendered with the tokenizer of {where}"


def kernel_passes(cfg, checkpoints: int) -> tuple[bool, int]:
    """(swap TTA, fold models predicted one after another) of a kernel under ``cfg``."""
    folds = checkpoints or cfg.folds.n_folds
    return cfg.train.tta_swap, (1 if cfg.infer.fold_average == "weights" else folds)


WEIGHT_BYTES = {"8bit": 1.0, "4bit": 0.5}


def weight_bytes_of(cfg, precision: str) -> float:
    """Bytes per weight on the device: the quantisation asked for (or trained: QLoRA), else the precision's."""
    quant = cfg.infer.quantize
    if quant == "auto":
        quant = "4bit" if cfg.model.load_in_4bit else "8bit" if cfg.model.load_in_8bit else "none"
    return WEIGHT_BYTES.get(quant, 4.0 if precision == "fp32" else 2.0)


def format_line(est: Estimate) -> str:
    """The headline, last line of the command."""
    return f"{est.device}_hours={est.hours:.3g} fits={'yes' if est.fits else 'no'} max_length_that_fits={est.max_length_that_fits}"


def describe(est: Estimate) -> list[str]:
    tp = est.throughput
    cap = f"{est.truncated_share:.1%} of the pairs cut"
    lines = [
        f"{est.pairs} pairs x {est.passes} forward pass(es) (swap TTA x fold models) at max length {est.max_length} ({cap}; longest pair {est.longest} tokens)",
        f"{est.device}: {tp.gpus} x {tp.peak_tflops:g} TFLOP/s {tp.precision} peak x MFU {tp.mfu:.0%} = {tp.flops_per_s / 1e12:.1f} TFLOP/s; "
        f"{est.loads} model load(s) of {tp.load_minutes:g} min",
        *est.notes,
        f"limit {est.limit_hours:g} h: {'fits' if est.fits else 'does not fit'}; the largest max length within it: {est.max_length_that_fits}"
        + (f" (no cap needed up to the longest pair or the model's {est.max_positions} positions)" if est.max_length_that_fits >= min(est.longest, est.max_positions) else ""),
    ]
    return lines


def effective_max_length(cfg) -> int:
    return int(cfg.infer.max_length or cfg.render.max_length)

