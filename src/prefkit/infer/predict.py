"""The one prediction path: evaluation during training, ``prefkit predict`` and the kernel.

* :func:`predict_outputs` raw model outputs of many token id sequences, in their order:
  batches from the one planner (:class:`~prefkit.text.batching.BatchPlan`, length-sorted,
  longest first, or packs of whole sequences for decoders), optionally shared by several
  processes (:class:`Sharding`: every process runs the same number of forward passes, as
  FSDP needs, and the results are gathered);
* :func:`predict_encoded` a task's predictions of encoded rows, with swap test-time
  augmentation: each row is also predicted with A and B exchanged and the two averaged
  (mapped back by the task), so a model's side bias cancels;
* :func:`prepare_model` the inference set-up of a model (packed attention, the fp16 varlen
  probe, bf16 adapter compute), shared with training;
* :class:`Predictor` a checkpoint folder ready to predict tables under its ``infer`` settings
  (:class:`~prefkit.config.InferConfig`: fp16/bf16/fp32 weights, bf16 refused on GPUs without
  it; 8/4-bit loading; model copies on several devices, batches split among them or the
  swapped order on the second; a max length; fixed outputs for empty and identical
  responses, :mod:`prefkit.infer.fixed`); :func:`predict_checkpoints` several fold
  checkpoints averaged at the prediction or the weight level (:mod:`prefkit.infer.folds`);
  :func:`predict_file` the ``prefkit predict`` command.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from prefkit.errors import ConfigError
from prefkit.models import packing
from prefkit.models.transformer import unwrap_peft
from prefkit.tasks import Encoded, Task, get_task
from prefkit.tasks.base import row_lengths, rows_seqs
from prefkit.text.batching import BatchPlan, collate_ids


@dataclass(frozen=True)
class Sharding:
    """This process's place among ``num_processes`` (accelerate's process index)."""

    num_processes: int = 1
    process_index: int = 0

    @classmethod
    def of(cls, accelerator) -> "Sharding":
        return cls(accelerator.num_processes, accelerator.process_index)


def autocast_context(device: torch.device, mixed_precision: str = "no"):
    if device.type == "cuda" and mixed_precision in ("bf16", "fp16"):
        return torch.autocast("cuda", dtype=torch.bfloat16 if mixed_precision == "bf16" else torch.float16)
    return contextlib.nullcontext()


def model_device(model) -> torch.device:
    try:
        return next(p.device for p in model.parameters())
    except StopIteration:  # pragma: no cover
        return torch.device("cpu")


def use_packing(train_cfg, model) -> bool:
    """Packed batches for ``model`` under ``train_cfg.packing``: ``off`` never, ``on``
    always (a model that cannot take packs is a ConfigError), ``auto`` for decoders that
    support them when ``train_cfg.max_tokens`` (the training token budget) is set."""
    if train_cfg.packing == "off":
        return False
    ok = packing.supports_packing(model)
    if train_cfg.packing == "on" and not ok:
        name = type(unwrap_peft(model)).__name__
        raise ConfigError(
            f"train.packing=on: {name} cannot take packed batches (decoder sequence classifiers whose attention "
            "goes through transformers' AttentionInterface, without logit soft-capping); set train.packing=auto or off"
        )
    return ok and (train_cfg.packing == "on" or train_cfg.max_tokens is not None)


def prepare_model(model, device: torch.device, mixed_precision: str, packed: bool) -> str:
    """Packed attention (with the fp16 varlen probe on CUDA) and, under bf16, LoRA adapters
    computing in bf16 (their weights stay fp32); returns a description for the log."""
    if not packed:
        return "padded length batches"
    attn = packing.enable_packed_attention(model)
    if device.type == "cuda" and mixed_precision == "fp16":
        packing.probe_varlen(device, torch.float16)  # fall back where the fp16 kernel fails
    casting = mixed_precision != "bf16"
    packing.set_adapter_input_casting(model, casting)
    return f"packed batches (attention {attn}, adapter input casting {'on' if casting else 'off'})"


def inference_plan(train_cfg, lengths, packed: bool) -> BatchPlan:
    """Inference batches of ``train.eval_batch_size`` rows (and ``train.eval_max_tokens``), or
    packs of ``eval_max_tokens`` tokens, else of what ``eval_batch_size`` of the longest rows
    (``lengths``: tokens per row) would hold padded (the same memory bound)."""
    if not packed:
        return BatchPlan(batch_size=train_cfg.eval_batch_size, max_tokens=train_cfg.eval_max_tokens)
    budget = train_cfg.eval_max_tokens or train_cfg.eval_batch_size * int(max(lengths, default=1))
    return BatchPlan(max_tokens=int(budget), packed=True)


def forward(model, seqs, pad_id: int, device, packed: bool = False, pad_to: int | None = None, min_seqlen: int = 0,
            pad_to_multiple_of: int = 1) -> torch.Tensor:  # fmt: skip
    """Float32 outputs (n, num_outputs) on the CPU of one batch (or pack) of id lists.

    ``packed``: ``model`` a :class:`~prefkit.models.packing.PackedClassifier` (or a wrapper of
    one); ``pad_to`` / ``min_seqlen``: a fixed pack length and a constant ``max_seqlen``
    floor (static shapes for compiled layers)."""
    if packed:
        batch = packing.collate_packed(seqs, pad_id, pad_to=pad_to)
        batch.max_seqlen = max(batch.max_seqlen, int(min_seqlen))
        logits = model(**packing.PackedClassifier.inputs(batch.to(device)))
    else:
        batch = collate_ids(seqs, pad_id, pad_to_multiple_of)
        logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
    return logits.float().cpu()


def as_packed_forward(model):
    """``model`` as a module whose forward takes a pack; a PackedClassifier (or a DDP/FSDP
    wrapper of one) is returned as it is."""
    if isinstance(model, packing.PackedClassifier) or isinstance(getattr(model, "module", None), packing.PackedClassifier):
        return model
    return packing.PackedClassifier(model)


def _process_share(batches: list, sharding: Sharding) -> list[tuple[list[int], bool]]:
    """This process's batches, each with whether it counts: every process runs the same number
    of passes (a spare pass repeats the last batch and is dropped), as FSDP needs."""
    rounds = math.ceil(len(batches) / sharding.num_processes)
    share = []
    for r in range(rounds):
        j = sharding.process_index + r * sharding.num_processes
        share.append((batches[j], True) if j < len(batches) else (batches[-1], False))
    return share


def _copy_context(device: torch.device):
    """A CUDA copy's thread works on its own GPU (kernels that use the current device)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _run_share(model, share, seqs, pad_id: int, device, plan: BatchPlan, *, per_row: int, combine, pad_to, min_seqlen: int,
               pad_to_multiple_of: int, mixed_precision: str, bar) -> list:  # fmt: skip
    """(rows, outputs) of the counted batches of ``share`` on one model copy."""
    device = torch.device(device) if device is not None else model_device(model)
    if plan.packed:
        model = as_packed_forward(model)
    was_training = model.training
    model.eval()
    results = []
    with torch.no_grad(), _copy_context(device), autocast_context(device, mixed_precision):
        for rows, counts in share:
            logits = forward(model, rows_seqs(seqs, rows, per_row), pad_id, device, plan.packed, pad_to, min_seqlen, pad_to_multiple_of).numpy()
            if counts:
                results.append((rows, logits if combine is None else combine(logits)))
                if bar is not None:
                    bar.update(len(rows))
    if was_training:
        model.train()
    return results


def model_copies(model) -> list:
    """``model`` as a list of copies (a list given is kept)."""
    return list(model) if isinstance(model, (list, tuple)) else [model]


@torch.no_grad()
def predict_outputs(
    model,
    seqs,
    pad_id: int,
    plan: BatchPlan,
    device=None,
    *,
    num_outputs: int | None = None,
    per_row: int = 1,
    combine=None,
    static_min_seqlen: int | None = None,
    pad_to_multiple_of: int = 1,
    sharding: Sharding = Sharding(),
    mixed_precision: str = "no",
    progress: bool = False,
    desc: str = "predict",
) -> np.ndarray:
    """(rows, num_outputs) raw outputs of ``seqs`` in their order (see module doc).

    ``model``: one model, or a list of copies on several devices (``infer.devices``): the
    length-sorted batches are dealt out among them in turn (similar work per copy), each copy
    in its own thread, on its own device (``device`` is then each copy's own).
    ``per_row`` sequences make a row (adjacent, batched together); ``combine`` maps a batch's
    outputs per sequence to outputs per row (a task's :meth:`~prefkit.tasks.base.Task.combine`).
    ``static_min_seqlen`` (packs): every pack padded to the plan's budget with that
    ``max_seqlen`` floor, static shapes for compiled layers. ``mixed_precision``: autocast
    here (a model prepared by accelerate autocasts in its own forward: pass ``"no"``)."""
    n_rows = len(seqs) // per_row
    if not n_rows:
        return np.zeros((0, num_outputs or 0))
    copies = model_copies(model)
    if len(copies) > 1 and sharding.num_processes > 1:
        raise ConfigError("several model copies in one process (infer.devices) and several processes: choose one")
    batches = plan.batches(row_lengths(seqs, per_row))
    pad_to = plan.max_tokens if (plan.packed and static_min_seqlen is not None) else None
    bar = None
    if progress:
        from prefkit.progress import progress_bar

        bar = progress_bar(total=n_rows, desc=desc, unit="row", dynamic_ncols=True)  # rows of per_row sequences
    run = dict(per_row=per_row, combine=combine, pad_to=pad_to, min_seqlen=static_min_seqlen or 0,
               pad_to_multiple_of=pad_to_multiple_of, mixed_precision=mixed_precision, bar=bar)  # fmt: skip
    if len(copies) == 1:
        results = _run_share(copies[0], _process_share(batches, sharding), seqs, pad_id, device, plan, **run)
    else:
        from concurrent.futures import ThreadPoolExecutor

        n = len(copies)
        with ThreadPoolExecutor(n) as pool:
            parts = list(pool.map(lambda i: _run_share(copies[i], [(b, True) for b in batches[i::n]], seqs, pad_id, None, plan, **run), range(n)))
        results = [r for part in parts for r in part]
    if bar is not None:
        bar.close()
    if sharding.num_processes > 1:
        from accelerate.utils import gather_object

        results = gather_object(results)  # every process's (rows, outputs) list, concatenated
    out = np.zeros((n_rows, results[0][1].shape[1]))
    for rows, logits in results:
        out[rows] = logits
    return out


def predict_encoded(model, task: Task, encoded: Encoded, pad_id: int, plan: BatchPlan, tta_swap: bool = True,
                    swap_copies: bool = False, **kwargs) -> np.ndarray:  # fmt: skip
    """The task's predictions of ``encoded`` rows, averaged with the swapped order when
    ``tta_swap`` and swapped sequences exist. ``model``: one model or a list of copies
    (:func:`predict_outputs`); ``swap_copies``: the original order on the even copies and the
    swapped order on the odd ones at the same time (``infer.multi_device=swap``: one T4
    each), else both orders in turn on all copies. ``kwargs``: :func:`predict_outputs`'s."""
    kwargs.update(per_row=encoded.per_row, combine=task.combine)
    swap = tta_swap and encoded.seqs_swapped is not None
    swapped_kwargs = {**kwargs, "desc": kwargs["desc"] + " (swapped)"} if "desc" in kwargs else kwargs
    copies = model_copies(model)
    if swap and swap_copies and len(copies) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(predict_outputs, copies[0::2], encoded.seqs, pad_id, plan, **kwargs)
            second = pool.submit(predict_outputs, copies[1::2], encoded.seqs_swapped, pad_id, plan, **swapped_kwargs)
            preds, swapped = task.predictions(first.result()), task.predictions(second.result())
        return 0.5 * (preds + task.unswap(swapped))
    preds = task.predictions(predict_outputs(model, encoded.seqs, pad_id, plan, **kwargs))
    if swap:
        swapped = task.predictions(predict_outputs(model, encoded.seqs_swapped, pad_id, plan, **swapped_kwargs))
        preds = 0.5 * (preds + task.unswap(swapped))
    return preds


def checkpoint_config(ckpt_dir: str | Path, overrides: list[str] | None = None):
    """A checkpoint's run config with dotted ``overrides`` (``infer.precision=fp16``, ...)."""
    from prefkit.config import load_config

    return load_config(Path(ckpt_dir) / "config.yaml", overrides)


def check_bf16(device: torch.device, why: str) -> None:
    """bf16 compute on a GPU that has it (compute capability 8.0+; a T4 has not: emulated bf16
    would be many times slower), else one line saying what to set."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        name = torch.cuda.get_device_name(device)
        raise ConfigError(f"{why}: {device} ({name}) has no bf16 support; set infer.precision=fp16 (or fp32)")


def inference_precision(cfg, devices: list[torch.device]) -> tuple[str | None, str]:
    """(weights dtype for loading, or None as trained; mixed precision for autocast) of
    ``cfg.infer.precision``; bf16 compute is refused on devices without bf16."""
    precision = cfg.infer.precision
    if precision == "auto":
        mixed = cfg.train.mixed_precision
        if mixed == "bf16" or (mixed == "no" and cfg.model.dtype == "bfloat16"):
            why = f"bf16 compute as trained (train.mixed_precision={mixed}, model.dtype={cfg.model.dtype}; infer.precision=auto)"
            for d in devices:
                check_bf16(d, why)
        return None, mixed
    if precision == "bf16":
        for d in devices:
            check_bf16(d, "infer.precision=bf16")
    dtype = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[precision]
    return dtype, {"fp32": "no", "fp16": "fp16", "bf16": "bf16"}[precision]


class Predictor:
    """A saved checkpoint, ready to predict tables, under the checkpoint's ``infer`` settings
    (:class:`~prefkit.config.InferConfig`) with ``overrides`` (dotted, ``infer.quantize=8bit``).

    ``infer.devices``: one copy of the model per device (``device`` is then not used),
    batches split among them or (``infer.multi_device=swap``) the swapped order on the second.
    ``packed``: packed batches (decoders); default as the run was configured
    (``train.packing``, :func:`use_packing`). ``True`` for a model that cannot take packs
    is a ConfigError."""

    def __init__(self, ckpt_dir, device: str | None = None, batch_size: int | None = None, tta_swap: bool | None = None,
                 packed: bool | None = None, overrides: list[str] | None = None):  # fmt: skip
        from prefkit.infer.fixed import FixedOutputs
        from prefkit.models.transformer import load_checkpoint

        self.ckpt_dir = Path(ckpt_dir)
        cfg = checkpoint_config(self.ckpt_dir, overrides)
        infer = cfg.infer
        default = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        devices = [torch.device(d) for d in infer.devices] if infer.devices else [default]
        dtype, mixed_precision = inference_precision(cfg, devices)
        if infer.devices:
            from prefkit.models.checks import check_device

            for d in infer.devices:
                check_device(d)  # an absent GPU: one line, before any weights load
        quantize = None if infer.quantize == "auto" else infer.quantize
        copies = []
        for d in devices:
            model, tokenizer, _ = load_checkpoint(self.ckpt_dir, device=d, quantize=quantize, dtype=dtype)
            copies.append(model)
        fixed = FixedOutputs.read(self.ckpt_dir) if infer.fixed_outputs else None
        self._setup(cfg, copies, tokenizer, mixed_precision, tta_swap, batch_size, packed, fixed)

    @classmethod
    def from_model(cls, model, tokenizer, cfg, tta_swap: bool | None = None, batch_size: int | None = None,
                   packed: bool | None = None) -> "Predictor":  # fmt: skip
        """A model already in memory (one copy; e.g. random-initialised for a speed measurement)
        predicting under ``cfg``'s render, evaluation-batch and ``infer`` settings (its weights
        cast to ``infer.precision``; no fixed outputs)."""
        from prefkit.models.transformer import torch_dtype

        self = cls.__new__(cls)
        self.ckpt_dir = None
        dtype, mixed_precision = inference_precision(cfg, [model_device(model)])
        if dtype is not None:
            model.to(torch_dtype(dtype))
        self._setup(cfg, [model], tokenizer, mixed_precision, tta_swap, batch_size, packed, None)
        return self

    def _setup(self, cfg, copies: list, tokenizer, mixed_precision: str, tta_swap, batch_size, packed, fixed) -> None:
        infer = cfg.infer
        self.copies, self.model, self.tokenizer, self.mixed_precision = copies, copies[0], tokenizer, mixed_precision
        if infer.max_length is not None:
            cfg = cfg.model_copy(update={"render": cfg.render.model_copy(update={"max_length": infer.max_length})})
        self.cfg = cfg
        self.task = get_task(self.cfg.task, self.cfg)
        self.device = model_device(self.model)
        self.renderer = self.task.renderer(self.tokenizer, self.cfg.render)
        self.tta_swap = self.cfg.train.tta_swap if tta_swap is None else tta_swap
        if infer.multi_device == "swap" and not self.tta_swap:
            raise ConfigError("infer.multi_device=swap runs the A/B-swapped order on the second device: it needs swap TTA (train.tta_swap=true, no --no-tta)")
        tc = self.cfg.train
        if batch_size is not None:
            tc = tc.model_copy(update={"eval_batch_size": batch_size})
        if packed is not None:
            tc = tc.model_copy(update={"packing": "on" if packed else "off"})
        self.train_cfg = tc
        self.packed = use_packing(tc, self.model)
        for model in self.copies:
            prepare_model(model, model_device(model), self.mixed_precision, self.packed)
        self.fixed = fixed if self.task.name == "pair3" else None
        self.fixed_rows = 0  # rows the last predict() gave fixed outputs

    def outputs(self, seqs, progress: bool = False, desc: str = "predict") -> np.ndarray:
        """Raw outputs (rows, head outputs) of single token id sequences, one per row and no
        task combine (an item scorer's s(x) per text), on every model copy."""
        return predict_outputs(
            self.copies,  # each copy runs on its own device (a list of one included)
            seqs,
            self.tokenizer.pad_token_id,
            inference_plan(self.train_cfg, row_lengths(seqs), self.packed),
            mixed_precision=self.mixed_precision,
            pad_to_multiple_of=self.train_cfg.pad_to_multiple_of,
            progress=progress,
            desc=desc,
        )

    def predict(self, table: pd.DataFrame, progress: bool = False) -> np.ndarray:
        encoded = self.task.encode(self.renderer, table, labels=False, swapped=self.tta_swap)
        preds = predict_encoded(
            self.copies,
            self.task,
            encoded,
            self.tokenizer.pad_token_id,
            inference_plan(self.train_cfg, encoded.lengths, self.packed),
            tta_swap=self.tta_swap,
            swap_copies=self.cfg.infer.multi_device == "swap",
            mixed_precision=self.mixed_precision,
            pad_to_multiple_of=self.train_cfg.pad_to_multiple_of,
            progress=progress,
        )
        if self.fixed is not None:
            preds, self.fixed_rows = self.fixed.apply(table, preds)
        return preds


def predict_checkpoints(ckpt_dirs, table: pd.DataFrame, overrides: list[str] | None = None, progress: bool = False,
                        **kwargs) -> tuple[np.ndarray, Predictor]:  # fmt: skip
    """Predictions of several fold checkpoints as one (``infer.fold_average`` of the first):
    ``predictions``, the mean of each checkpoint's predictions (loaded one after another, so
    one model is in memory at a time); ``weights``, one checkpoint of their mean weights
    (:func:`prefkit.infer.folds.average_checkpoints`, in a temporary folder) predicting once.
    Returns the predictions and the last :class:`Predictor` (its config and task).
    ``kwargs``: :class:`Predictor`'s."""
    import gc
    import tempfile

    dirs = [Path(d) for d in ([ckpt_dirs] if isinstance(ckpt_dirs, (str, Path)) else ckpt_dirs)]
    if len(dirs) > 1 and checkpoint_config(dirs[0], overrides).infer.fold_average == "weights":
        from prefkit.infer.folds import average_checkpoints

        with tempfile.TemporaryDirectory(prefix="prefkit-fold-average-") as tmp:
            predictor = Predictor(average_checkpoints(dirs, Path(tmp) / "checkpoint"), overrides=overrides, **kwargs)
            return predictor.predict(table, progress=progress), predictor
    total = None
    for d in dirs:
        predictor = Predictor(d, overrides=overrides, **kwargs)
        preds = predictor.predict(table, progress=progress)
        total = preds if total is None else total + preds
        if d != dirs[-1]:
            del predictor
            gc.collect()
    return total / len(dirs), predictor


def predict_file(ckpt_dir, table: pd.DataFrame, out: str | Path, model_name: str | None = None, overrides: list[str] | None = None,
                 **kwargs) -> pd.DataFrame:  # fmt: skip
    """Predict ``table`` with a checkpoint (or several fold checkpoints, averaged as
    ``infer.fold_average`` says) and write a prediction CSV (prefkit.predictions)."""
    t0 = time.perf_counter()
    preds, predictor = predict_checkpoints(ckpt_dir, table, overrides=overrides, progress=True, **kwargs)
    frame = predictor.task.prediction_frame(table["id"], preds, model_name or predictor.cfg.name, -1)
    predictor.task.write_predictions(frame, out)
    elapsed = time.perf_counter() - t0
    fixed = f"; {predictor.fixed_rows} with fixed outputs (empty or identical responses)" if predictor.fixed_rows else ""
    print(f"wrote {len(frame)} predictions to {out} ({len(frame) / max(elapsed, 1e-9):.1f} rows/s incl. loading{fixed})")
    return frame
