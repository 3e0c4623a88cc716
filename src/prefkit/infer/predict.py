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
* :class:`Predictor` a checkpoint folder ready to predict tables; :func:`predict_file` the
  ``prefkit predict`` command.
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

    ``per_row`` sequences make a row (adjacent, batched together); ``combine`` maps a batch's
    outputs per sequence to outputs per row (a task's :meth:`~prefkit.tasks.base.Task.combine`).
    ``static_min_seqlen`` (packs): every pack padded to the plan's budget with that
    ``max_seqlen`` floor, static shapes for compiled layers. ``mixed_precision``: autocast
    here (a model prepared by accelerate autocasts in its own forward: pass ``"no"``)."""
    n_rows = len(seqs) // per_row
    if not n_rows:
        return np.zeros((0, num_outputs or 0))
    device = torch.device(device) if device is not None else model_device(model)
    if plan.packed:
        model = as_packed_forward(model)
    batches = plan.batches(row_lengths(seqs, per_row))
    pad_to = plan.max_tokens if (plan.packed and static_min_seqlen is not None) else None
    rounds = math.ceil(len(batches) / sharding.num_processes)
    bar = None
    if progress:
        from prefkit.progress import progress_bar

        bar = progress_bar(total=len(seqs), desc=desc, unit="row", dynamic_ncols=True)
    was_training = model.training
    model.eval()
    results = []
    with autocast_context(device, mixed_precision):
        for r in range(rounds):
            j = sharding.process_index + r * sharding.num_processes
            rows = batches[j] if j < len(batches) else batches[-1]  # a spare pass keeps processes in step
            logits = forward(model, rows_seqs(seqs, rows, per_row), pad_id, device, plan.packed, pad_to, static_min_seqlen or 0, pad_to_multiple_of).numpy()
            if j < len(batches):
                results.append((rows, logits if combine is None else combine(logits)))
                if bar is not None:
                    bar.update(len(rows))
    if bar is not None:
        bar.close()
    if was_training:
        model.train()
    if sharding.num_processes > 1:
        from accelerate.utils import gather_object

        results = gather_object(results)  # every process's (rows, outputs) list, concatenated
    out = np.zeros((n_rows, results[0][1].shape[1]))
    for rows, logits in results:
        out[rows] = logits
    return out


def predict_encoded(model, task: Task, encoded: Encoded, pad_id: int, plan: BatchPlan, tta_swap: bool = True, **kwargs) -> np.ndarray:
    """The task's predictions of ``encoded`` rows, averaged with the swapped order when
    ``tta_swap`` and swapped sequences exist. ``kwargs``: :func:`predict_outputs`'s."""
    kwargs.update(per_row=encoded.per_row, combine=task.combine)
    preds = task.predictions(predict_outputs(model, encoded.seqs, pad_id, plan, **kwargs))
    if tta_swap and encoded.seqs_swapped is not None:
        if "desc" in kwargs:
            kwargs = {**kwargs, "desc": kwargs["desc"] + " (swapped)"}
        swapped = task.predictions(predict_outputs(model, encoded.seqs_swapped, pad_id, plan, **kwargs))
        preds = 0.5 * (preds + task.unswap(swapped))
    return preds


class Predictor:
    """A saved checkpoint, ready to predict tables.

    ``packed``: packed batches (decoders); default as the run was configured
    (``train.packing``, :func:`use_packing`). ``True`` for a model that cannot take packs
    is a ConfigError."""

    def __init__(self, ckpt_dir, device: str | None = None, batch_size: int | None = None, tta_swap: bool | None = None,
                 packed: bool | None = None):  # fmt: skip
        from prefkit.models.transformer import load_checkpoint

        self.ckpt_dir = Path(ckpt_dir)
        self.model, self.tokenizer, self.cfg = load_checkpoint(self.ckpt_dir, device=device)
        self.task = get_task(self.cfg.task, self.cfg)
        self.device = model_device(self.model)
        self.renderer = self.task.renderer(self.tokenizer, self.cfg.render)
        self.tta_swap = self.cfg.train.tta_swap if tta_swap is None else tta_swap
        tc = self.cfg.train
        if batch_size is not None:
            tc = tc.model_copy(update={"eval_batch_size": batch_size})
        if packed is not None:
            tc = tc.model_copy(update={"packing": "on" if packed else "off"})
        self.train_cfg = tc
        self.packed = use_packing(tc, self.model)
        prepare_model(self.model, self.device, tc.mixed_precision, self.packed)

    def outputs(self, seqs, progress: bool = False, desc: str = "predict") -> np.ndarray:
        """Raw outputs (rows, head outputs) of single token id sequences, one per row and no
        task combine (an item scorer's s(x) per text)."""
        return predict_outputs(
            self.model,
            seqs,
            self.tokenizer.pad_token_id,
            inference_plan(self.train_cfg, row_lengths(seqs), self.packed),
            device=self.device,
            mixed_precision=self.train_cfg.mixed_precision,
            pad_to_multiple_of=self.train_cfg.pad_to_multiple_of,
            progress=progress,
            desc=desc,
        )

    def predict(self, table: pd.DataFrame, progress: bool = False) -> np.ndarray:
        encoded = self.task.encode(self.renderer, table, labels=False, swapped=self.tta_swap)
        return predict_encoded(
            self.model,
            self.task,
            encoded,
            self.tokenizer.pad_token_id,
            inference_plan(self.train_cfg, encoded.lengths, self.packed),
            tta_swap=self.tta_swap,
            device=self.device,
            mixed_precision=self.train_cfg.mixed_precision,
            pad_to_multiple_of=self.train_cfg.pad_to_multiple_of,
            progress=progress,
        )


def predict_file(ckpt_dir: str | Path, table: pd.DataFrame, out: str | Path, model_name: str | None = None, **kwargs) -> pd.DataFrame:
    """Predict ``table`` with a checkpoint and write a prediction CSV (prefkit.predictions)."""
    t0 = time.perf_counter()
    predictor = Predictor(ckpt_dir, **kwargs)
    preds = predictor.task.prediction_frame(table["id"], predictor.predict(table, progress=True), model_name or predictor.cfg.name, -1)
    predictor.task.write_predictions(preds, out)
    elapsed = time.perf_counter() - t0
    print(f"wrote {len(preds)} predictions to {out} ({len(preds) / max(elapsed, 1e-9):.1f} rows/s incl. loading)")
    return preds
