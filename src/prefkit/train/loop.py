"""Fold training of transformer pair classifiers with accelerate.

One code path for a CPU, one GPU and several (``accelerate launch``: DDP; FSDP through
accelerate's config). For each fold:

* the fold's training rows (optionally a random subset, ``train.max_train_pairs``) are
  batched by length (shuffled buckets, dynamic padding) or, for decoder LLMs with
  ``train.packing`` (``auto``: when ``train.max_tokens`` is set), packed: whole pairs end
  to end in packs of at most ``train.max_tokens`` tokens, no padding, attention kept
  inside each pair (:mod:`prefkit.models.packing`; validation and test predictions are
  packed too); swap augmentation
  ``train.swap``: ``off``, ``double`` (every pair also with A and B exchanged and its
  label swapped, shuffled independently) or ``paired`` (each batch holds pairs and their
  swaps together);
* loss: soft cross-entropy on (p_a, p_b, p_tie) with label smoothing and sample weights;
  AdamW (``train.head_lr`` for the head), warm-up + cosine/linear/constant schedule,
  gradient accumulation (``accelerator.accumulate``), gradient clipping;
* ``train.evals_per_epoch`` evaluations on the fold's validation rows (log loss, with
  swap TTA when ``train.tta_swap``), early stopping after ``train.early_stopping_patience``
  evaluations without improvement; the best weights are kept in ``fold_<k>/checkpoint``;
* every ``train.state_every_steps`` optimizer steps the training state (trainable
  weights, optimizer, scheduler, RNG, position in the data) goes to ``fold_<k>/state``;
  a killed run started again with the same config resumes there, and folds with a
  ``done.json`` are skipped;
* finally ``fold_<k>/oof.csv`` (the best evaluation's predictions of the validation
  rows) and ``fold_<k>/test.csv``, and for the run ``oof.csv`` (all finished folds) and
  ``test.csv`` (mean over folds), in the format of :mod:`prefkit.predictions`, with
  the run name as model name. ``train.log`` holds the run's log.

The batch order of every epoch is a function of (seed, fold, epoch) only, and the RNG
state is saved with the training state, so a resumed run repeats an uninterrupted one
step for step (exactly so on a CPU).
"""

from __future__ import annotations

import gc
import json
import logging
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from prefkit.config import RunConfig, TrainConfig, save_config
from prefkit.errors import ConfigError, InputError
from prefkit.infer.predict import forward_probs, forward_probs_packed, packed_budget, swap_probs, use_packing
from prefkit.models import packing
from prefkit.predictions import make_predictions, prob_matrix, read_predictions, write_predictions
from prefkit.schema import SWAP_ORDER, label_matrix
from prefkit.text.batching import collate, make_length_batches
from prefkit.train.losses import soft_cross_entropy, soft_log_loss

logger = logging.getLogger("prefkit.train")

DONE_FILE = "done.json"
PROGRESS_FILE = "progress.json"
TRAINABLE_FILE = "trainable.pt"


# -- setup -----------------------------------------------------------------------------
def make_accelerator(train_cfg: TrainConfig):
    """An ``Accelerator`` for ``train_cfg`` (mixed precision, accumulation, device)."""
    from accelerate import Accelerator

    cuda = torch.cuda.is_available()
    if train_cfg.device == "cuda" and not cuda:
        raise ConfigError("train.device=cuda but no CUDA GPU is available")
    cpu = train_cfg.device == "cpu" or not cuda
    if cpu and train_cfg.mixed_precision == "fp16":
        raise ConfigError("train.mixed_precision=fp16 needs a GPU (use bf16 or no on a CPU)")
    from accelerate.state import AcceleratorState

    # A second run in the same process may ask for other settings (mixed precision):
    # start accelerate's shared state afresh (the process group, if any, is kept).
    if AcceleratorState._shared_state:
        AcceleratorState._reset_state()
    return Accelerator(
        mixed_precision=train_cfg.mixed_precision,
        gradient_accumulation_steps=train_cfg.grad_accum,
        cpu=cpu,
        step_scheduler_with_optimizer=False,
    )


def setup_run_logging(run_dir: Path, main: bool) -> logging.Handler | None:
    """Log ``prefkit.*`` INFO lines to ``run_dir/train.log`` (main process only)."""
    if not main:
        return None
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("prefkit")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler


def _say(accelerator, text: str) -> None:
    """Log a line and show it on the console (main process; keeps tqdm bars intact)."""
    if not accelerator.is_main_process:
        return
    logger.info(text)
    from tqdm.auto import tqdm

    tqdm.write(text, file=sys.stderr)


def device_name(accelerator) -> str:
    """What ran the fold, for the record in ``done.json``: "cuda:<GPU name> x<processes>" or "cpu x<processes>"."""
    device = accelerator.device
    name = f"cuda:{torch.cuda.get_device_name(device)}" if device.type == "cuda" else device.type
    return f"{name} x{accelerator.num_processes}"


def _epoch_seed(seed: int, fold: int, epoch: int) -> int:
    """Seed of one epoch's batch order (epoch -1: the training-row subset)."""
    return int(np.random.SeedSequence([seed, fold + 1, epoch + 1]).generate_state(1)[0])


# -- data ------------------------------------------------------------------------------
@dataclass
class Rendered:
    """Token ids of pairs and of their swapped versions, with labels and weights."""

    ids: list[list[int]]
    ids_swapped: list[list[int]] | None
    targets: np.ndarray | None = None  # (n, 3) probability labels
    weights: np.ndarray | None = None

    @classmethod
    def from_pairs(cls, renderer, pairs: pd.DataFrame, swapped: bool = True, labels: bool = True) -> "Rendered":
        ids, ids_sw = renderer.render_pairs(pairs, swapped=swapped)
        targets = label_matrix(pairs) if labels else None
        weights = pairs["weight"].to_numpy(dtype=float) if "weight" in pairs else np.ones(len(pairs))
        return cls(ids, ids_sw, targets, weights)


@dataclass
class TrainItems:
    """What one fold trains on: rendered sequences, targets, weights; swapped copies after
    the ``n_orig`` originals (item ``i + n_orig`` is the swap of item ``i``)."""

    seqs: list[list[int]]
    targets: np.ndarray
    weights: np.ndarray
    n_orig: int

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(s) for s in self.seqs), dtype=np.int64, count=len(self.seqs))


def training_items(rendered: Rendered, rows: np.ndarray, swap: str, soft_labels: bool = True) -> TrainItems:
    targets = rendered.targets[rows].astype(np.float32)
    if not soft_labels:
        targets = np.eye(3, dtype=np.float32)[targets.argmax(axis=1)]
    weights = rendered.weights[rows].astype(np.float32)
    seqs = [rendered.ids[i] for i in rows]
    if swap != "off":
        if rendered.ids_swapped is None:
            raise ValueError("swap augmentation needs the swapped renderings")
        seqs = seqs + [rendered.ids_swapped[i] for i in rows]
        targets = np.concatenate([targets, targets[:, SWAP_ORDER]])
        weights = np.concatenate([weights, weights])
    return TrainItems(seqs, targets, weights, len(rows))


def epoch_batches(items: TrainItems, train_cfg: TrainConfig, swap: str, seed: int, packed: bool = False) -> list[list[int]]:
    """Training batches of one epoch (indices into ``items``), a function of ``seed`` only.

    ``train.max_tokens`` set: batches hold up to that many padded tokens (``batch_size``
    is then not used); ``packed``: packs of up to ``train.max_tokens`` real tokens
    (``batch_size`` and ``length_batching`` not used); ``paired``: half a batch of pairs,
    each followed by its swap."""
    bs = None if train_cfg.max_tokens else train_cfg.batch_size
    mt = train_cfg.max_tokens
    if packed and mt is None:
        raise ConfigError("packed batches need train.max_tokens")
    lengths = items.lengths

    def group(lens: np.ndarray, share: int) -> list[list[int]]:
        if packed:
            return packing.pack_batches(lens, max(1, mt // share), shuffle=True, seed=seed, bucket_batches=train_cfg.bucket_batches)
        return make_length_batches(
            lens,
            batch_size=None if bs is None else max(1, bs // share),
            max_tokens=None if mt is None else max(1, mt // share),
            shuffle=True,
            seed=seed,
            bucket_batches=train_cfg.bucket_batches,
            sort=train_cfg.length_batching,
        )

    if swap == "paired":
        return [b + [i + items.n_orig for i in b] for b in group(lengths[: items.n_orig], 2)]
    return group(lengths if swap == "double" else lengths[: items.n_orig], 1)


def shard_batches(batches: list, num_processes: int, process_index: int) -> list:
    """This process's share; every process gets the same number (leftovers dropped)."""
    if num_processes == 1:
        return batches
    per = len(batches) // num_processes
    if per == 0:
        raise InputError(f"{len(batches)} training batch(es) cannot be shared by {num_processes} processes")
    return batches[process_index::num_processes][:per]


# -- steps -----------------------------------------------------------------------------
def compute_loss(model, batch: dict | packing.PackedBatch, label_smoothing: float = 0.0) -> torch.Tensor:
    """Soft cross-entropy of ``model`` on a collated batch (already on the device): a
    padded batch (dict), or a pack for a :class:`~prefkit.models.packing.PackedClassifier`."""
    if isinstance(batch, packing.PackedBatch):
        logits = model(**packing.PackedClassifier.inputs(batch))
        return soft_cross_entropy(logits, batch.targets, batch.weights, label_smoothing)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return soft_cross_entropy(logits, batch["targets"], batch.get("weights"), label_smoothing)


def train_step(accelerator, model, optimizer, scheduler, batch, train_cfg: TrainConfig) -> tuple[float, bool]:
    """One micro-batch: forward, backward and, at the end of an accumulation window,
    clipping, optimizer and scheduler step. Returns (loss, whether the optimizer stepped).

    ``model``/``optimizer`` are prepared by ``accelerator``; ``scheduler`` is not (it
    steps once per optimizer step here)."""
    with accelerator.accumulate(model):
        loss = compute_loss(model, batch, train_cfg.label_smoothing)
        accelerator.backward(loss)
        if accelerator.sync_gradients:
            accelerator.clip_grad_norm_(model.parameters(), train_cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    stepped = accelerator.sync_gradients
    if stepped and scheduler is not None:
        scheduler.step()
    return float(loss.detach()), stepped


def param_groups(model, train_cfg: TrainConfig) -> list[dict]:
    """AdamW groups: no weight decay on biases and norms; ``head_lr`` for the head."""
    from prefkit.models.transformer import head_module_names

    heads = set(head_module_names(model))
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        bare = name.removeprefix("base_model.model.")
        is_head = bare.split(".")[0] in heads
        decay = p.ndim >= 2 and "norm" not in name.lower()
        groups.setdefault((is_head, decay), []).append(p)
    out = []
    for (is_head, decay), params in groups.items():
        lr = train_cfg.head_lr if (is_head and train_cfg.head_lr) else train_cfg.lr
        out.append({"params": params, "lr": lr, "weight_decay": train_cfg.weight_decay if decay else 0.0})
    return out


def make_scheduler(optimizer, train_cfg: TrainConfig, total_steps: int):
    from transformers import get_scheduler

    name = "constant_with_warmup" if train_cfg.scheduler == "constant" else train_cfg.scheduler
    warmup = int(round(train_cfg.warmup_ratio * total_steps))
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


@torch.no_grad()
def distributed_predict(
    accelerator,
    model,
    seqs,
    pad_id: int,
    batch_size: int,
    max_tokens: int | None = None,
    pad_to_multiple_of: int = 1,
    packed: bool = False,
    min_seqlen: int | None = None,
) -> np.ndarray:
    """(n, 3) probabilities; batches sorted by length (or packs, ``packed``: ``model`` a
    PackedClassifier, packs of :func:`~prefkit.infer.predict.packed_budget` tokens) and
    shared by the processes (every process runs the same number of forward passes, as
    FSDP needs). ``min_seqlen`` (packed): packs padded to the budget with that
    ``max_seqlen`` floor, static shapes for compiled layers."""
    out = np.zeros((len(seqs), 3))
    if not len(seqs):
        return out
    lengths = [len(s) for s in seqs]
    if packed:
        budget = packed_budget(seqs, batch_size, max_tokens)
        batches = packing.pack_batches(lengths, max_tokens=budget, shuffle=False)

        def probs_of(idx):
            pad_to = None if min_seqlen is None else budget
            return forward_probs_packed(model, [seqs[i] for i in idx], pad_id, accelerator.device, pad_to, min_seqlen or 0)
    else:
        batches = make_length_batches(lengths, batch_size=batch_size, max_tokens=max_tokens, shuffle=False)

        def probs_of(idx):
            return forward_probs(model, [seqs[i] for i in idx], pad_id, accelerator.device, pad_to_multiple_of)
    nproc, rank = accelerator.num_processes, accelerator.process_index
    rounds = math.ceil(len(batches) / nproc)
    was_training = model.training
    model.eval()
    results = []
    for r in range(rounds):
        j = rank + r * nproc
        idx = batches[j] if j < len(batches) else batches[-1]  # a spare pass keeps processes in step
        probs = probs_of(idx)
        if j < len(batches):
            results.append((idx, probs.numpy()))
    if was_training:
        model.train()
    if nproc > 1:
        from accelerate.utils import gather_object

        results = gather_object(results)  # every process's (rows, probs) list, concatenated
    for idx, probs in results:
        out[idx] = probs
    return out


def predict_with_tta(
    accelerator, model, rendered: Rendered, rows, pad_id: int, train_cfg: TrainConfig, packed: bool = False, min_seqlen: int | None = None
) -> np.ndarray:
    seqs = [rendered.ids[i] for i in rows]
    kw = dict(
        batch_size=train_cfg.eval_batch_size,
        max_tokens=train_cfg.eval_max_tokens,
        pad_to_multiple_of=train_cfg.pad_to_multiple_of,
        packed=packed,
        min_seqlen=min_seqlen,
    )
    probs = distributed_predict(accelerator, model, seqs, pad_id, **kw)
    if train_cfg.tta_swap and rendered.ids_swapped is not None:
        seqs_sw = [rendered.ids_swapped[i] for i in rows]
        probs = 0.5 * (probs + swap_probs(distributed_predict(accelerator, model, seqs_sw, pad_id, **kw)))
    return probs


# -- resumable state -------------------------------------------------------------------
@dataclass
class Progress:
    step: int = 0  # optimizer steps done
    micro: int = 0  # micro-batches done
    epoch: int = 0
    pos: int = 0  # next batch within the epoch
    best_loss: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    stopped_early: bool = False
    pairs_seen: int = 0
    train_seconds: float = 0.0
    packed: bool = False  # packed batches (states saved before packing existed were padded)
    # The batch order and step count depend on these: a resume must keep them (None: not recorded).
    processes: int | None = None
    grad_accum: int | None = None
    evals: list = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2)

    @classmethod
    def read(cls, path: Path) -> "Progress":
        return cls(**json.loads(path.read_text()))


def _check_resumable(saved: Progress, now: Progress, state_dir: Path) -> None:
    """Refuse to resume a fold under a setup that would change its batches or step count."""
    names = {False: "padded", True: "packed"}
    changed = []
    if saved.packed != now.packed:
        changed.append(f"{names[saved.packed]} batches, now {names[now.packed]} (train.packing)")
    if saved.processes is not None and saved.processes != now.processes:
        changed.append(f"{saved.processes} process(es), now {now.processes}")
    if saved.grad_accum is not None and saved.grad_accum != now.grad_accum:
        changed.append(f"train.grad_accum={saved.grad_accum}, now {now.grad_accum}")
    if changed:
        raise ConfigError(
            f"the training state in {state_dir} was saved with {'; '.join(changed)}: "
            f"run as it was saved, or delete {state_dir} to start the fold afresh"
        )


def _register_state_hooks(accelerator, model) -> None:
    """Save only trainable weights in the training state (LoRA: adapters + head), load them back."""
    has_trainable = any(p.requires_grad for p in model.parameters())

    def save_hook(models, weights, output_dir):
        for i, sd in enumerate(weights):
            weights[i] = trainable_state(model, sd)  # names compared without wrapper prefixes (DDP's "module.")
            if has_trainable and not weights[i]:
                raise RuntimeError(f"training state would hold no weights: none of {len(sd)} state-dict names is a trainable parameter")

    return accelerator.register_save_state_pre_hook(save_hook)


def _unwrapped_name(name: str) -> str:
    for wrapper in ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module."):  # FSDP1 / activation checkpointing
        name = name.replace(wrapper, "")
    return name.removeprefix("module.")  # DDP


def trainable_state(model, state: dict) -> dict:
    """The entries of a state dict that training changes: what the training state keeps and
    what going back to the best step restores (LoRA: adapters and head, a few MB)."""
    names = {_unwrapped_name(n) for n, p in model.named_parameters() if p.requires_grad}
    return {name: tensor for name, tensor in state.items() if _unwrapped_name(name) in names}


def restore_sharded_state(model, state: dict) -> None:
    """Load full tensors held by the main process (the others may hold none) into an FSDP-sharded
    ``model``: broadcast, then each process keeps its shard. Entries absent stay as they are."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    from torch.distributed.fsdp import FSDPModule

    # Modules sharded with reshard_after_forward=False (accelerate's root) still hold plain
    # unsharded tensors after the last evaluation's forward; loading needs them sharded.
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=False)
    set_model_state_dict(model, state, options=options)


BEST_SHARDED_FILE = "best_trainable.safetensors"  # FSDP: the best step's trainable weights, for a resume


def save_state(
    accelerator, state_dir: Path, progress: Progress, best_val: np.ndarray | None = None, best_sharded: dict | None = None
) -> None:
    accelerator.wait_for_everyone()
    tmp = state_dir.with_name(state_dir.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / PROGRESS_FILE).write_text(progress.to_json())
        if best_val is not None:
            np.save(tmp / "best_val.npy", best_val)
        if best_sharded:
            from safetensors.torch import save_file

            save_file({name: t.contiguous() for name, t in best_sharded.items()}, str(tmp / BEST_SHARDED_FILE))
        old = state_dir.with_name(state_dir.name + ".old")
        if state_dir.exists():
            shutil.rmtree(old, ignore_errors=True)
            state_dir.rename(old)
        tmp.rename(state_dir)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def load_state(accelerator, state_dir: Path) -> Progress:
    accelerator.load_state(str(state_dir), strict=False)
    return Progress.read(state_dir / PROGRESS_FILE)


# -- one fold --------------------------------------------------------------------------
@dataclass
class FoldResult:
    fold: int
    oof: pd.DataFrame
    test: pd.DataFrame | None
    val_loss: float | None
    skipped: bool = False
    evals: list = field(default_factory=list)  # as in done.json


StepHook = Callable[[int, int], None]  # (fold, optimizer step) -> None; may raise to stop


def _fold_rows(fold_ids: np.ndarray, k: int, cfg: RunConfig) -> tuple[np.ndarray, np.ndarray]:
    val = np.flatnonzero(fold_ids == k)
    train = np.flatnonzero((fold_ids != k) & (fold_ids >= 0))
    if cfg.train.max_train_pairs and len(train) > cfg.train.max_train_pairs:
        rng = np.random.default_rng(_epoch_seed(cfg.seed, k, -1))
        train = np.sort(rng.choice(train, cfg.train.max_train_pairs, replace=False))
    return train, val


def run_fold(
    accelerator,
    cfg: RunConfig,
    k: int,
    tokenizer,
    pairs: pd.DataFrame,
    rendered: Rendered,
    fold_ids: np.ndarray,
    test_pairs: pd.DataFrame | None = None,
    test_rendered: Rendered | None = None,
    on_step: StepHook | None = None,
) -> FoldResult:
    from accelerate.utils import DistributedType, set_seed

    from prefkit.models.transformer import build_model, count_parameters, load_weights_into, save_checkpoint
    from prefkit.progress import progress_bar

    tc = cfg.train
    fold_start = time.perf_counter()
    fold_dir = cfg.run_dir / f"fold_{k}"
    state_dir, ckpt_dir = fold_dir / "state", fold_dir / "checkpoint"
    fold_dir.mkdir(parents=True, exist_ok=True)
    train_rows, val_rows = _fold_rows(fold_ids, k, cfg)
    if len(train_rows) == 0 or len(val_rows) == 0:
        raise InputError(f"fold {k} has {len(train_rows)} training and {len(val_rows)} validation rows")
    items = training_items(rendered, train_rows, tc.swap, tc.soft_labels)
    pad_id = tokenizer.pad_token_id
    nproc, rank = accelerator.num_processes, accelerator.process_index

    fsdp = accelerator.distributed_type == DistributedType.FSDP
    if fsdp and accelerator.state.fsdp_plugin.activation_checkpointing and cfg.model.lora.enabled:
        raise ConfigError(
            "FSDP activation checkpointing (fsdp_activation_checkpointing in the accelerate config) hides the LoRA "
            "weights from the checkpoint; turn it off and set model.gradient_checkpointing=true instead"
        )
    set_seed(cfg.seed + k)
    classifier = build_model(cfg.model, tokenizer=tokenizer, device_map=_device_map(accelerator, cfg))
    packed = use_packing(tc, classifier)
    trainable, total = count_parameters(classifier)
    optimizer = torch.optim.AdamW(param_groups(classifier, tc), lr=tc.lr)
    # Packs go through PackedClassifier's forward, so that accelerate's autocast and DDP's
    # gradient hooks (both act on the forward) see them.
    model = packing.PackedClassifier(classifier) if packed else classifier

    epoch_cache: dict[int, list] = {}

    def batches_of(epoch: int) -> list:
        if epoch not in epoch_cache:
            epoch_cache.clear()
            full = epoch_batches(items, tc, tc.swap, _epoch_seed(cfg.seed, k, epoch), packed=packed)
            epoch_cache[epoch] = shard_batches(full, nproc, rank)
        return epoch_cache[epoch]

    micro_per_epoch = len(batches_of(0))
    steps_per_epoch = max(1, math.ceil(micro_per_epoch / tc.grad_accum))
    total_steps = tc.max_steps or max(1, math.ceil(tc.epochs * micro_per_epoch / tc.grad_accum))
    total_micro = total_steps * tc.grad_accum
    eval_every = max(1, steps_per_epoch // tc.evals_per_epoch)

    scheduler = make_scheduler(optimizer, tc, total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    hook_handle = _register_state_hooks(accelerator, model)
    eval_model = model if fsdp else accelerator.unwrap_model(model)
    # static pack shapes for compiled layers: packs padded to the budget, a constant max_seqlen floor
    min_seqlen = cfg.render.max_length if (packed and tc.compile_layers) else None
    if packed:
        attn = packing.enable_packed_attention(classifier)  # after prepare: the varlen probe runs on the device
        if accelerator.device.type == "cuda" and tc.mixed_precision == "fp16":
            packing.probe_varlen(accelerator.device, torch.float16)
        if tc.mixed_precision == "bf16":
            packing.set_adapter_input_casting(classifier, False)  # LoRA matmuls in bf16 under autocast
        how = f"packed batches of <= {tc.max_tokens} tokens (attention {attn}, adapter input casting {'off' if tc.mixed_precision == 'bf16' else 'on'})"
    else:
        how = "padded length batches"
    if tc.compile_layers:
        packing.compile_layers(classifier)
        how += ", compiled layers"
    _say(accelerator, f"fold {k}: {how} (train.packing={tc.packing})")

    def classifier_to_save():
        inner = accelerator.unwrap_model(model)
        return inner.model if isinstance(inner, packing.PackedClassifier) else inner

    progress = Progress(packed=packed, processes=nproc, grad_accum=tc.grad_accum)
    if (state_dir / PROGRESS_FILE).exists():
        _check_resumable(Progress.read(state_dir / PROGRESS_FILE), progress, state_dir)
        progress = load_state(accelerator, state_dir)
        progress.processes, progress.grad_accum = nproc, tc.grad_accum
        _say(accelerator, f"fold {k}: resuming at step {progress.step}/{total_steps} from {state_dir}")
    best_val_path = fold_dir / "best_val.npy"
    best_val = None
    best_sharded = None  # FSDP: the best trainable weights, gathered (full tensors on the main process)
    if fsdp and progress.best_step is not None and (state_dir / BEST_SHARDED_FILE).exists():
        from safetensors.torch import load_file

        best_sharded = load_file(str(state_dir / BEST_SHARDED_FILE)) if accelerator.is_main_process else {}
    if progress.best_step is not None and (state_dir / "best_val.npy").exists():
        best_val = np.load(state_dir / "best_val.npy")

    _say(
        accelerator,
        f"fold {k}: {len(train_rows)} training pairs ({len(items.seqs)} items, swap={tc.swap}), {len(val_rows)} validation; "
        f"{total_steps} steps ({steps_per_epoch}/epoch, {micro_per_epoch} batches/epoch/process, accum {tc.grad_accum}, "
        f"{nproc} process(es)); parameters {trainable:,} trainable of {total:,}",
    )

    since_eval = [0.0, 0]  # training loss sum and micro-batch count since the last evaluation

    def evaluate() -> None:
        nonlocal best_val, best_sharded
        probs = predict_with_tta(accelerator, eval_model, rendered, val_rows, pad_id, tc, packed, min_seqlen)
        loss = soft_log_loss(rendered.targets[val_rows], probs)
        acc = float((probs.argmax(1) == rendered.targets[val_rows].argmax(1)).mean())
        improved = progress.best_loss is None or loss < progress.best_loss - 1e-9
        record = {"step": progress.step, "val_log_loss": loss, "val_accuracy": acc}
        if since_eval[1]:
            record["train_loss"] = since_eval[0] / since_eval[1]
        since_eval[:] = [0.0, 0]
        progress.evals.append(record)
        if improved:
            progress.best_loss, progress.best_step, progress.bad_evals = loss, progress.step, 0
            best_val = probs
            state = accelerator.get_state_dict(model) if fsdp else None
            if state is not None:
                best_sharded = trainable_state(model, state)
            if state is not None and packed:  # the classifier's own names, without PackedClassifier's "model."
                state = {name.removeprefix("model."): v for name, v in state.items()}
            if accelerator.is_main_process:
                np.save(best_val_path, probs)
                save_checkpoint(classifier_to_save(), tokenizer, ckpt_dir, cfg, state_dict=state)
            accelerator.wait_for_everyone()
        else:
            progress.bad_evals += 1
        mark = " *" if improved else ""
        _say(accelerator, f"fold {k} step {progress.step}: val log loss {loss:.4f} accuracy {acc:.3f}{mark}")
        if tc.early_stopping_patience and progress.bad_evals >= tc.early_stopping_patience:
            progress.stopped_early = True
            _say(accelerator, f"fold {k}: early stop after {progress.bad_evals} evaluations without improvement")

    if progress.micro == 0 and accelerator.is_main_process:
        first = items.seqs[batches_of(0)[0][0]]
        _say(accelerator, f"first training example ({len(first)} tokens):\n{tokenizer.decode(first)}\n")

    model.train()
    bar = progress_bar(
        total=total_steps, initial=progress.step, desc=f"fold {k}", unit="step", dynamic_ncols=True, disable=not accelerator.is_main_process
    )
    loss_ema = None
    run_seconds, run_pairs = 0.0, 0  # training time only (no evaluation), since this start or resume
    while progress.micro < total_micro and not progress.stopped_early:
        batches = batches_of(progress.epoch)
        if progress.pos >= len(batches):
            progress.epoch, progress.pos = progress.epoch + 1, 0
            continue
        t0 = time.perf_counter()
        idx = batches[progress.pos]
        progress.pos += 1
        progress.micro += 1
        rows = [{"input_ids": items.seqs[i], "targets": items.targets[i], "weight": items.weights[i], "index": i} for i in idx]
        if packed:
            batch = packing.collate_packed_items(rows, pad_id, pad_to=None if min_seqlen is None else tc.max_tokens)
            batch.max_seqlen = max(batch.max_seqlen, min_seqlen or 0)
            batch = batch.to(accelerator.device)
        else:
            batch = collate(rows, pad_id, tc.pad_to_multiple_of)
            batch = {key: v.to(accelerator.device) for key, v in batch.items()}
        loss, stepped = train_step(accelerator, model, optimizer, scheduler, batch, tc)
        dt = time.perf_counter() - t0
        run_seconds += dt
        run_pairs += len(idx) * nproc
        progress.train_seconds += dt
        progress.pairs_seen += len(idx) * nproc
        loss_ema = loss if loss_ema is None else 0.95 * loss_ema + 0.05 * loss
        since_eval[0] += loss
        since_eval[1] += 1
        if not stepped:
            continue
        progress.step += 1
        rate = run_pairs / max(run_seconds, 1e-9)
        bar.update(1)
        bar.set_postfix(loss=f"{loss_ema:.4f}", pairs_s=f"{rate:.1f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        if progress.step % tc.log_every_steps == 0 and accelerator.is_main_process:
            logger.info(
                f"fold {k} step {progress.step}/{total_steps} epoch {progress.epoch} loss {loss_ema:.4f} "
                f"lr {scheduler.get_last_lr()[0]:.3e} {rate:.1f} pairs/s"
            )
        if progress.step % eval_every == 0 or progress.step == total_steps:
            evaluate()
        if progress.step % tc.state_every_steps == 0 and progress.step < total_steps and not progress.stopped_early:
            save_state(accelerator, state_dir, progress, best_val, best_sharded)
        if on_step is not None:
            on_step(k, progress.step)
    bar.close()
    if progress.best_step is None or (progress.evals and progress.evals[-1]["step"] != progress.step and not progress.stopped_early):
        evaluate()

    # Predictions of the best weights: OOF from its evaluation, test after reloading it.
    if progress.best_step != progress.step:
        accelerator.wait_for_everyone()
        if not fsdp:
            load_weights_into(classifier_to_save(), ckpt_dir)
        elif best_sharded is not None:
            restore_sharded_state(model, best_sharded)  # a sharded model cannot load the checkpoint's full tensors
        else:
            _say(accelerator, f"fold {k}: the best step ({progress.best_step}) came before this resume; "
                 "under FSDP the test predictions use the last weights (the OOF is from the best step)")  # fmt: skip
    oof = make_predictions(pairs["id"].iloc[val_rows], best_val, cfg.name, k)
    test = None
    if test_rendered is not None and test_pairs is not None and len(test_pairs):
        probs = predict_with_tta(accelerator, eval_model, test_rendered, np.arange(len(test_pairs)), pad_id, tc, packed, min_seqlen)
        test = make_predictions(test_pairs["id"], probs, cfg.name, k)
    rate = progress.pairs_seen / max(progress.train_seconds, 1e-9)
    if accelerator.is_main_process:
        write_predictions(oof, fold_dir / "oof.csv")
        if test is not None:
            write_predictions(test, fold_dir / "test.csv")
        done = {
            "fold": k,
            "val_log_loss": progress.best_loss,
            "best_step": progress.best_step,
            "steps": progress.step,
            "total_steps": total_steps,
            "stopped_early": progress.stopped_early,
            "packed": packed,
            "train_pairs": int(len(train_rows)),
            "val_pairs": int(len(val_rows)),
            "pairs_seen": progress.pairs_seen,
            "train_seconds": round(progress.train_seconds, 2),
            "train_pairs_per_second": round(rate, 2),
            # What produced this fold: a resumed run may run under a different config.yaml.
            "device": device_name(accelerator),
            "mixed_precision": tc.mixed_precision,
            "model": cfg.model.name_or_path,
            "max_length": cfg.render.max_length,
            "wall_seconds_since_start": round(time.perf_counter() - fold_start, 1),
            "evals": progress.evals,
        }
        (fold_dir / DONE_FILE).write_text(json.dumps(done, indent=2) + "\n")
        if not tc.keep_state:
            shutil.rmtree(state_dir, ignore_errors=True)
    _say(accelerator, f"fold {k}: done, best val log loss {progress.best_loss:.4f} at step {progress.best_step}; {rate:.1f} training pairs/s")
    accelerator.wait_for_everyone()
    hook_handle.remove()
    accelerator.free_memory()
    accelerator._custom_objects.clear()  # the scheduler registered for checkpointing (free_memory keeps it)
    model = optimizer = eval_model = classifier = None  # free the fold's weights (closures above hold them)
    return FoldResult(k, oof, test, progress.best_loss, evals=progress.evals)


def _device_map(accelerator, cfg: RunConfig):
    if cfg.model.load_in_4bit or cfg.model.load_in_8bit:
        return {"": accelerator.local_process_index}
    return None


# -- the run ---------------------------------------------------------------------------
@dataclass
class TrainResult:
    run_dir: Path
    folds: list[FoldResult]
    oof: pd.DataFrame
    test: pd.DataFrame | None
    oof_log_loss: float | None


def _read_done_fold(fold_dir: Path, k: int) -> FoldResult:
    oof = read_predictions(fold_dir / "oof.csv")
    test = read_predictions(fold_dir / "test.csv") if (fold_dir / "test.csv").exists() else None
    done = json.loads((fold_dir / DONE_FILE).read_text())
    return FoldResult(k, oof, test, done.get("val_log_loss"), skipped=True, evals=done.get("evals", []))


def describe_done_fold(fold_dir: Path) -> str:
    """One line on how a finished fold was produced, from its ``done.json``."""
    done = json.loads((fold_dir / DONE_FILE).read_text())
    parts = [f"val log loss {done['val_log_loss']:.4f}"]
    if "device" in done:
        parts.append(f"{done['device']}, {done['mixed_precision']}, max_length {done['max_length']}")
    parts.append(f"{done['train_seconds']:.0f}s training at {done['train_pairs_per_second']:.0f} pairs/s")
    return "; ".join(parts)


def _plot_run(cfg: RunConfig, results: list[FoldResult], labels: np.ndarray, oof: np.ndarray) -> None:
    """``learning_curves.png`` (each fold's evaluations) and ``reliability.png`` (the OOF)."""
    from prefkit.plots import learning_curves_plot, reliability_diagram

    evals = {r.fold: r.evals for r in results}
    if any(evals.values()):
        learning_curves_plot(evals, cfg.run_dir / "learning_curves.png", title=f"{cfg.name}: learning curves")
    reliability_diagram(labels, oof, cfg.run_dir / "reliability.png", title=f"{cfg.name} OOF")


def combine_folds(cfg: RunConfig, pairs: pd.DataFrame) -> TrainResult:
    """Run-level ``oof.csv`` (every finished fold) and ``test.csv`` (mean over folds)."""
    from prefkit.predictions import OOF_FILE, TEST_FILE

    run_dir = cfg.run_dir
    results = []
    for fold_dir in sorted(run_dir.glob("fold_*"), key=lambda p: int(p.name.split("_")[1]) if p.name.split("_")[1].isdigit() else -1):
        k = fold_dir.name.split("_")[1]
        if k.isdigit() and (fold_dir / DONE_FILE).exists():
            results.append(_read_done_fold(fold_dir, int(k)))
    if not results:
        raise InputError("no finished fold to combine", file=run_dir)
    oof = pd.concat([r.oof for r in results], ignore_index=True)
    write_predictions(oof, run_dir / OOF_FILE)
    from prefkit.metrics import summary

    labels = pairs.set_index(pairs["id"].astype(str)).loc[oof["id"].astype(str)]
    scores = summary(label_matrix(labels), prob_matrix(oof))
    oof_loss = scores["log_loss"]
    logger.info("OOF " + " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in scores.items()))
    _plot_run(cfg, results, label_matrix(labels), prob_matrix(oof))
    test = None
    tests = [r.test for r in results if r.test is not None]
    if tests:
        ids = tests[0]["id"].astype(str).tolist()
        mean = np.mean([prob_matrix(t.set_index(t["id"].astype(str)).loc[ids].reset_index(drop=True)) for t in tests], axis=0)
        test = make_predictions(ids, mean, cfg.name, -1)
        write_predictions(test, run_dir / TEST_FILE)
    return TrainResult(run_dir, results, oof, test, oof_loss)


def train_transformer(
    cfg: RunConfig,
    pairs: pd.DataFrame,
    fold_ids,
    test_pairs: pd.DataFrame | None = None,
    on_step: StepHook | None = None,
    accelerator=None,
) -> TrainResult:
    """Train the folds of ``cfg`` (``train.folds`` or all) on ``pairs``; see module doc.

    ``fold_ids``: the validation fold of each row of ``pairs`` (-1: always training).
    """
    from prefkit.models.transformer import load_tokenizer
    from prefkit.text.render import PairRenderer

    fold_ids = np.asarray(fold_ids, dtype=int)
    if len(fold_ids) != len(pairs):
        raise InputError(f"{len(fold_ids)} fold ids for {len(pairs)} pairs")
    accelerator = accelerator or make_accelerator(cfg.train)
    run_dir = cfg.run_dir
    handler = setup_run_logging(run_dir, accelerator.is_main_process)
    try:
        folds = cfg.train.folds if cfg.train.folds is not None else sorted(int(f) for f in np.unique(fold_ids) if f >= 0)
        unknown = [f for f in folds if f not in set(fold_ids.tolist())]
        if unknown:
            raise ConfigError(f"train.folds: fold(s) {unknown} not in the fold map")
        todo = [k for k in folds if not (run_dir / f"fold_{k}" / DONE_FILE).exists()]
        # A call that only combines finished folds keeps the config they were trained with.
        if accelerator.is_main_process and (todo or not (run_dir / "config.yaml").exists()):
            save_config(cfg, run_dir)
        for k in folds:
            if k not in todo:
                _say(accelerator, f"fold {k}: finished earlier, skipped ({describe_done_fold(run_dir / f'fold_{k}')})")
        _say(
            accelerator,
            f"run {cfg.name}: {len(pairs)} pairs, folds {folds} ({len(todo)} to train), model {cfg.model.name_or_path}, "
            f"device {accelerator.device} x{accelerator.num_processes} ({accelerator.distributed_type.value}), "
            f"mixed precision {cfg.train.mixed_precision}",
        )
        if todo:
            tokenizer = load_tokenizer(cfg.model)
            renderer = PairRenderer(tokenizer, cfg.render)
            need_swapped = cfg.train.swap != "off" or cfg.train.tta_swap
            t0 = time.perf_counter()
            rendered = Rendered.from_pairs(renderer, pairs, swapped=need_swapped)
            test_rendered = None
            if test_pairs is not None and len(test_pairs):
                test_rendered = Rendered.from_pairs(renderer, test_pairs, swapped=cfg.train.tta_swap, labels=False)
            lengths = np.array([len(s) for s in rendered.ids])
            _say(
                accelerator,
                f"rendered {len(pairs)} pairs{'' if test_rendered is None else f' + {len(test_pairs)} test'} "
                f"({renderer.style}/{cfg.render.template}, max_length {cfg.render.max_length}) in {time.perf_counter() - t0:.1f}s; "
                f"tokens mean {lengths.mean():.0f}, at the limit {100 * (lengths >= cfg.render.max_length).mean():.1f}%",
            )
            for k in todo:
                run_fold(accelerator, cfg, k, tokenizer, pairs, rendered, fold_ids, test_pairs, test_rendered, on_step)
                # Mixed precision leaves the fold's model in a reference cycle (its patched forward):
                # collect it now, or the next fold builds its model beside it.
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
        accelerator.wait_for_everyone()
        result = combine_folds(cfg, pairs) if accelerator.is_main_process else None
        if result is not None:
            _say(accelerator, f"run {cfg.name}: OOF log loss {result.oof_log_loss:.4f} over {len(result.oof)} pairs, folds {[r.fold for r in result.folds]}")
        return result
    finally:
        if handler is not None:
            logging.getLogger("prefkit").removeHandler(handler)
            handler.close()
