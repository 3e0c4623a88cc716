"""Predictions of a transformer pair classifier; no training code is imported here.

* :func:`forward_probs` one padded batch -> class probabilities (A, B, tie);
  :func:`forward_probs_packed` the same for one pack (decoders, no padding, see
  :mod:`prefkit.models.packing`);
* :func:`predict_ids` many rendered pairs, batched by length (sorted, longest first) or,
  with ``packed=True``, in packs of whole pairs (first-fit decreasing);
* :func:`use_packing` whether a run config asks for packed batches for a model
  (``train.packing``), shared with the training loop;
* :func:`predict_rendered` the same with swap test-time augmentation: the pair is also
  predicted with A and B exchanged, and the two are averaged with the labels swapped
  back, so a model's side bias cancels and identical responses get P(A) = P(B);
* :class:`Predictor` a checkpoint folder (model + tokenizer + saved config) ready to
  predict pair tables; :func:`predict_file` the ``prefkit predict`` command.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from prefkit.errors import ConfigError
from prefkit.models import packing
from prefkit.schema import SWAP_ORDER
from prefkit.text.batching import collate_ids, make_length_batches


def swap_probs(probs: np.ndarray) -> np.ndarray:
    """Probabilities of a swapped pair expressed for the original order."""
    return np.asarray(probs)[:, SWAP_ORDER]


def autocast_context(device: torch.device, mixed_precision: str = "no"):
    if device.type == "cuda" and mixed_precision in ("bf16", "fp16"):
        return torch.autocast("cuda", dtype=torch.bfloat16 if mixed_precision == "bf16" else torch.float16)
    return contextlib.nullcontext()


def model_device(model) -> torch.device:
    try:
        return next(p.device for p in model.parameters())
    except StopIteration:  # pragma: no cover
        return torch.device("cpu")


@torch.no_grad()
def forward_probs(model, seqs, pad_id: int, device=None, pad_to_multiple_of: int = 1) -> torch.Tensor:
    """Softmax probabilities (float32, on CPU) for one batch of token id lists."""
    device = device if device is not None else model_device(model)
    batch = collate_ids(seqs, pad_id, pad_to_multiple_of)
    logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
    return torch.softmax(logits.float(), dim=-1).cpu()


def use_packing(train_cfg, model) -> bool:
    """Packed batches for ``model`` under ``train_cfg.packing``: ``off`` never, ``on``
    always (a model that cannot take packs is a ConfigError), ``auto`` for decoders that
    support them when ``train_cfg.max_tokens`` (the training token budget) is set."""
    if train_cfg.packing == "off":
        return False
    ok = packing.supports_packing(model)
    if train_cfg.packing == "on" and not ok:
        name = type(packing.unwrap(model)).__name__
        raise ConfigError(
            f"train.packing=on: {name} cannot take packed batches (decoder sequence classifiers whose attention "
            "goes through transformers' AttentionInterface, without logit soft-capping); set train.packing=auto or off"
        )
    return ok and (train_cfg.packing == "on" or train_cfg.max_tokens is not None)


def packed_budget(seqs, batch_size: int, max_tokens: int | None) -> int:
    """Tokens per inference pack: ``max_tokens``, else what a padded batch of
    ``batch_size`` of the longest rows would hold (the same memory bound)."""
    if max_tokens:
        return int(max_tokens)
    return int(batch_size) * max((len(s) for s in seqs), default=1)


def as_packed_forward(model):
    """``model`` as a module whose forward takes a pack (:class:`~prefkit.models.packing.PackedClassifier`);
    already such a module (or a DDP/FSDP wrapper of one) is returned as it is."""
    if isinstance(model, packing.PackedClassifier) or isinstance(getattr(model, "module", None), packing.PackedClassifier):
        return model
    return packing.PackedClassifier(model)


@torch.no_grad()
def forward_probs_packed(model, seqs, pad_id: int, device=None, pad_to: int | None = None, min_seqlen: int = 0) -> torch.Tensor:
    """Softmax probabilities (float32, on CPU) for one pack of token id lists, in their order.

    ``model``: see :func:`as_packed_forward`. ``pad_to`` / ``min_seqlen``: a fixed pack
    length and a constant ``max_seqlen`` floor (static shapes for compiled layers)."""
    model = as_packed_forward(model)
    device = device if device is not None else model_device(model)
    batch = packing.collate_packed(seqs, pad_id, pad_to=pad_to)
    batch.max_seqlen = max(batch.max_seqlen, int(min_seqlen))
    batch = batch.to(device)
    logits = model(**packing.PackedClassifier.inputs(batch))
    return torch.softmax(logits.float(), dim=-1).cpu()


@torch.inference_mode()
def predict_ids(
    model,
    seqs,
    pad_id: int,
    batch_size: int = 64,
    max_tokens: int | None = None,
    device=None,
    mixed_precision: str = "no",
    pad_to_multiple_of: int = 1,
    progress: bool = False,
    desc: str = "predict",
    packed: bool = False,
    pad_packs: bool = False,
) -> np.ndarray:
    """(n, 3) probabilities of rendered pairs ``seqs``, in their order.

    ``packed``: packs of at most :func:`packed_budget` tokens instead of padded batches
    (``model`` a decoder classifier after ``packing.enable_packed_attention``);
    ``pad_packs``: every pack padded to the budget (static shapes, compiled layers)."""
    was_training = model.training
    model.eval()
    device = torch.device(device) if device is not None else model_device(model)
    out = np.zeros((len(seqs), 3), dtype=np.float64)
    lengths = [len(s) for s in seqs]
    if packed:
        budget = packed_budget(seqs, batch_size, max_tokens)
        batches = packing.pack_batches(lengths, max_tokens=budget, shuffle=False)
        forward = as_packed_forward(model)
        longest = max(lengths, default=1)

        def probs_of(rows):
            return forward_probs_packed(forward, [seqs[i] for i in rows], pad_id, device, budget if pad_packs else None, longest if pad_packs else 0)
    else:
        batches = make_length_batches(lengths, batch_size=batch_size, max_tokens=max_tokens, shuffle=False)

        def probs_of(rows):
            return forward_probs(model, [seqs[i] for i in rows], pad_id, device, pad_to_multiple_of)
    bar = None
    if progress:
        from prefkit.progress import progress_bar

        bar = progress_bar(total=len(seqs), desc=desc, unit="pair", dynamic_ncols=True)
    with autocast_context(device, mixed_precision):
        for idx in batches:
            out[idx] = probs_of(idx).numpy()
            if bar is not None:
                bar.update(len(idx))
    if bar is not None:
        bar.close()
    if was_training:
        model.train()
    return out


def predict_rendered(model, seqs, seqs_swapped, pad_id: int, tta_swap: bool = True, **kwargs) -> np.ndarray:
    """``predict_ids``, averaged with the swapped order (labels swapped back) when ``tta_swap``."""
    probs = predict_ids(model, seqs, pad_id, **kwargs)
    if tta_swap and seqs_swapped is not None:
        if "desc" in kwargs:
            kwargs = {**kwargs, "desc": kwargs["desc"] + " (swapped)"}
        probs = 0.5 * (probs + swap_probs(predict_ids(model, seqs_swapped, pad_id, **kwargs)))
    return probs


class Predictor:
    """A saved checkpoint, ready to predict pair tables.

    ``packed``: packed batches (decoders); default as the run was configured
    (``train.packing``, :func:`use_packing`). ``True`` for a model that cannot take packs
    is a ConfigError."""

    def __init__(
        self,
        ckpt_dir: str | Path,
        device: str | None = None,
        batch_size: int | None = None,
        tta_swap: bool | None = None,
        packed: bool | None = None,
    ):
        from prefkit.models.transformer import load_checkpoint
        from prefkit.text.render import PairRenderer

        self.ckpt_dir = Path(ckpt_dir)
        self.model, self.tokenizer, self.cfg = load_checkpoint(self.ckpt_dir, device=device)
        self.device = model_device(self.model)
        self.renderer = PairRenderer(self.tokenizer, self.cfg.render)
        self.batch_size = batch_size or self.cfg.train.eval_batch_size
        self.tta_swap = self.cfg.train.tta_swap if tta_swap is None else tta_swap
        tc = self.cfg.train
        if packed is not None:
            tc = tc.model_copy(update={"packing": "on" if packed else "off"})
        self.packed = use_packing(tc, self.model)
        if self.packed:
            packing.enable_packed_attention(self.model)
            if self.device.type == "cuda" and tc.mixed_precision == "fp16":
                packing.probe_varlen(self.device, torch.float16)  # as in training: fall back where the kernel fails
            if self.device.type == "cuda" and tc.mixed_precision == "bf16":
                packing.set_adapter_input_casting(self.model, False)  # LoRA matmuls in bf16 under autocast

    def predict(self, pairs: pd.DataFrame, progress: bool = False) -> np.ndarray:
        ids, ids_sw = self.renderer.render_pairs(pairs, swapped=self.tta_swap)
        return predict_rendered(
            self.model,
            ids,
            ids_sw,
            self.tokenizer.pad_token_id,
            tta_swap=self.tta_swap,
            batch_size=self.batch_size,
            max_tokens=self.cfg.train.eval_max_tokens,
            device=self.device,
            mixed_precision=self.cfg.train.mixed_precision,
            pad_to_multiple_of=self.cfg.train.pad_to_multiple_of,
            progress=progress,
            packed=self.packed,
        )


def predict_file(ckpt_dir: str | Path, pairs: pd.DataFrame, out: str | Path, model_name: str | None = None, **kwargs) -> pd.DataFrame:
    """Predict ``pairs`` with a checkpoint and write a prediction CSV (prefkit.predictions)."""
    from prefkit.predictions import make_predictions, write_predictions

    t0 = time.perf_counter()
    predictor = Predictor(ckpt_dir, **kwargs)
    probs = predictor.predict(pairs, progress=True)
    preds = make_predictions(pairs["id"], probs, model_name or predictor.cfg.name, -1)
    write_predictions(preds, out)
    elapsed = time.perf_counter() - t0
    print(f"wrote {len(preds)} predictions to {out} ({len(preds) / max(elapsed, 1e-9):.1f} pairs/s incl. loading)")
    return preds
