"""The training engine: every learned transformer model trains here, whatever its task.

One code path for a CPU, one GPU and several (``accelerate launch``: DDP; FSDP through
accelerate's config). The task (:mod:`prefkit.tasks`) says how rows become inputs, which
head and loss, and how outputs become predictions and metrics; the engine owns the rest.
For each fold:

* the fold's training rows (fold ids ``!= k``; ``-1`` rows always train, never validate;
  optionally a random subset, ``train.max_train_pairs``) become items, with their swaps
  (``train.swap``: ``off``, ``double``, or ``paired`` in the same batch), batched by the
  one planner (:mod:`prefkit.train.batches`): length buckets with dynamic padding or, for
  decoders with ``train.packing``, packs of whole rows without padding;
* the task's loss (or ``train.loss``) with label smoothing and sample weights; AdamW
  (``train.head_lr`` for the head), warm-up + cosine/linear/constant schedule, gradient
  accumulation, clipping;
* ``train.evals_per_epoch`` evaluations on the validation rows through the one prediction
  path (:mod:`prefkit.infer.predict`, swap TTA when ``train.tta_swap``), scored by the
  task's weighted metric; early stopping after ``train.early_stopping_patience``
  evaluations without improvement; the best weights are kept in ``fold_<k>/checkpoint``;
* every ``train.state_every_steps`` optimizer steps the training state goes to
  ``fold_<k>/state`` (:mod:`prefkit.train.state`): a killed run started again resumes there;
* finally ``fold_<k>/{oof.csv, test.csv, done.json}``; ``done.json`` records the fold's
  fingerprint (:mod:`prefkit.train.fingerprint`), and a finished fold is reused only when
  it matches (else a one-line error says what differs). The run gets ``oof.csv`` (all
  finished folds), ``test.csv`` (mean over folds), plots and ``train.log``.
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
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from prefkit.atomic import atomic_write_text
from prefkit.config import RunConfig, TrainConfig, save_config
from prefkit.errors import ConfigError, InputError
from prefkit.infer.fixed import fixed_outputs_files
from prefkit.infer.predict import Sharding, inference_plan, predict_encoded, prepare_model, use_packing
from prefkit.models import packing
from prefkit.predictions import OOF_FILE, TEST_FILE
from prefkit.rundir import DONE_FILE, finished_fold_dirs
from prefkit.tasks import Encoded, Task, get_task
from prefkit.text.batching import collate_ids
from prefkit.train import state as fold_state
from prefkit.train.batches import TrainItems, epoch_batches, epoch_seed, shard_batches, training_items
from prefkit.train.fingerprint import fingerprint_changes, fold_fingerprint

logger = logging.getLogger("prefkit.train")

# (fold, optimizer step, the fold's Progress: pairs_seen, tokens_seen, train_seconds) -> None;
# may raise to stop. bench/throughput.py times the steps after warm-up with it.
StepHook = Callable[[int, int, fold_state.Progress], None]


# -- set-up ----------------------------------------------------------------------------
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

    # accelerate keeps one set-up per process and has no public way to start afresh; a second
    # run in the same process (a notebook, the tests) may ask for another mixed precision.
    # The process group, if any, is kept.
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


def say(accelerator, text: str) -> None:
    """Log a line and show it on the console (main process; keeps tqdm bars intact)."""
    if not accelerator.is_main_process:
        return
    logger.info(text)
    from tqdm.auto import tqdm

    tqdm.write(text, file=sys.stderr)


def _distributed(accelerator) -> str:
    """`` (DDP)``, `` (FSDP)``, ...; nothing for a single process."""
    kind = accelerator.distributed_type.value
    return "" if kind == "NO" else f" ({kind})"


def device_name(accelerator) -> str:
    """What ran the fold, for ``done.json``: "cuda:<GPU name> x<processes>" or "cpu x<processes>"."""
    device = accelerator.device
    name = f"cuda:{torch.cuda.get_device_name(device)}" if device.type == "cuda" else device.type
    return f"{name} x{accelerator.num_processes}"


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

    warmup = int(round(train_cfg.warmup_ratio * total_steps))
    return get_scheduler(train_cfg.transformers_scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


def fold_rows(fold_ids: np.ndarray, k: int, cfg: RunConfig) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, validation rows) of fold ``k``; ``-1`` rows always train."""
    from prefkit.data.folds import fold_split

    train, val = fold_split(fold_ids, k)
    if cfg.train.max_train_pairs and len(train) > cfg.train.max_train_pairs:
        rng = np.random.default_rng(epoch_seed(cfg.seed, k, -1))
        train = np.sort(rng.choice(train, cfg.train.max_train_pairs, replace=False))
    return train, val


# -- what every fold shares ------------------------------------------------------------
@dataclass
class RunData:
    """The run's rows, encoded once for every fold."""

    cfg: RunConfig
    task: Task
    tokenizer: object
    table: pd.DataFrame
    encoded: Encoded
    fold_ids: np.ndarray
    test_table: pd.DataFrame | None = None
    test_encoded: Encoded | None = None

    @cached_property
    def ids(self) -> list[str]:
        return self.table["id"].astype(str).tolist()

    def fingerprint(self, k: int, rows: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
        """Fold ``k``'s fingerprint; ``rows``: its (training, validation) rows when at hand."""
        train_rows, val_rows = rows if rows is not None else fold_rows(self.fold_ids, k, self.cfg)
        return fold_fingerprint(self.cfg, self.ids, self.encoded, train_rows, val_rows)


def encode_run(cfg: RunConfig, task: Task, table: pd.DataFrame, fold_ids: np.ndarray, test_table, accelerator) -> RunData:
    from prefkit.models.transformer import load_tokenizer

    tokenizer = load_tokenizer(cfg.model)
    renderer = task.renderer(tokenizer, cfg.render)
    t0 = time.perf_counter()
    encoded = task.encode(renderer, table, labels=True, swapped=cfg.train.swap != "off" or cfg.train.tta_swap)
    test_encoded = None
    if test_table is not None and len(test_table):
        test_encoded = task.encode(renderer, test_table, labels=False, swapped=cfg.train.tta_swap)
    lengths = encoded.lengths
    say(
        accelerator,
        f"rendered {len(table)} rows{'' if test_encoded is None else f' + {len(test_table)} test'} "
        f"({renderer.style}/{cfg.render.template}, max_length {cfg.render.max_length}) in {time.perf_counter() - t0:.1f}s; "
        f"tokens mean {lengths.mean():.0f}, at the limit {100 * (lengths >= cfg.render.max_length).mean():.1f}%",
    )
    return RunData(cfg, task, tokenizer, table, encoded, fold_ids, test_table, test_encoded)


# -- one fold --------------------------------------------------------------------------
@dataclass
class FoldResult:
    fold: int
    oof: pd.DataFrame
    test: pd.DataFrame | None
    val_loss: float | None
    skipped: bool = False
    evals: list = field(default_factory=list)  # as in done.json


class FoldTrainer:
    """One fold, from building the model to ``done.json``: :meth:`run` calls the pieces in order."""

    def __init__(self, accelerator, data: RunData, k: int, on_step: StepHook | None = None):
        self.acc, self.data, self.k, self.on_step = accelerator, data, k, on_step
        self.cfg, self.task, self.tc = data.cfg, data.task, data.cfg.train
        self.fold_dir = self.cfg.run_dir / f"fold_{k}"
        self.state_dir, self.ckpt_dir = self.fold_dir / "state", self.fold_dir / "checkpoint"
        self.train_rows, self.val_rows = fold_rows(data.fold_ids, k, self.cfg)
        if len(self.train_rows) == 0 or len(self.val_rows) == 0:
            raise InputError(f"fold {k} has {len(self.train_rows)} training and {len(self.val_rows)} validation rows")
        self.fingerprint = data.fingerprint(k, (self.train_rows, self.val_rows))
        self.items: TrainItems = training_items(self.task, data.encoded, self.train_rows, self.tc.swap, self.tc.soft_labels)
        self.item_lengths = self.items.lengths
        self.val = data.encoded.subset(self.val_rows)
        self.pad_id = data.tokenizer.pad_token_id
        self.loss_fn = self.task.loss_function(self.tc.loss or self.task.loss)
        self.best_val: np.ndarray | None = None
        self.best_sharded: dict | None = None  # FSDP: the best trainable weights, gathered on the main process
        self._epoch: tuple[int, list] | None = None
        self._since_eval = [0.0, 0]  # training loss sum and micro-batches since the last evaluation
        self.checkpoint_files = fixed_outputs_files(data.table.iloc[self.train_rows])  # saved with each checkpoint

    # -- model, optimizer, schedule ---------------------------------------------------------
    def build(self) -> None:
        from accelerate.utils import DistributedType, set_seed

        from prefkit.models.transformer import build_model, count_parameters

        acc, tc, cfg = self.acc, self.tc, self.cfg
        self.fsdp = acc.distributed_type == DistributedType.FSDP
        if self.fsdp and acc.state.fsdp_plugin.activation_checkpointing and cfg.model.lora.enabled:
            raise ConfigError(
                "FSDP activation checkpointing (fsdp_activation_checkpointing in the accelerate config) hides the LoRA "
                "weights from the checkpoint; turn it off and set model.gradient_checkpointing=true instead"
            )
        set_seed(cfg.seed + self.k)
        device_map = {"": acc.local_process_index} if (cfg.model.load_in_4bit or cfg.model.load_in_8bit) else None
        self.classifier = build_model(cfg.model, head=cfg.model.head or self.task.head, tokenizer=self.data.tokenizer, device_map=device_map)
        self.packed = use_packing(tc, self.classifier)
        self.n_trainable, self.n_total = count_parameters(self.classifier)
        optimizer = torch.optim.AdamW(param_groups(self.classifier, tc), lr=tc.lr)
        # Packs go through PackedClassifier's forward, so that accelerate's autocast and DDP's
        # gradient hooks (both act on the forward) see them.
        model = packing.PackedClassifier(self.classifier) if self.packed else self.classifier
        micro_per_epoch = len(self.batches_of(0))
        self.steps_per_epoch = max(1, math.ceil(micro_per_epoch / tc.grad_accum))
        self.total_steps = tc.max_steps or max(1, math.ceil(tc.epochs * micro_per_epoch / tc.grad_accum))
        self.eval_every = max(1, self.steps_per_epoch // tc.evals_per_epoch)
        scheduler = make_scheduler(optimizer, tc, self.total_steps)
        # A prepared scheduler is saved with the training state and released by free_memory;
        # step_scheduler_with_optimizer=False: it steps once per optimizer step, when we say.
        self.model, self.optimizer, self.scheduler = acc.prepare(model, optimizer, scheduler)
        self.hook = fold_state.register_trainable_only(acc, self.model)
        self.eval_model = self.model if self.fsdp else acc.unwrap_model(self.model)
        # static pack shapes for compiled layers: packs padded to the budget, a constant max_seqlen floor
        self.min_seqlen = cfg.render.max_length if (self.packed and tc.compile_layers) else None
        how = prepare_model(self.classifier, acc.device, tc.mixed_precision, self.packed)  # after prepare: the probe runs on the device
        if self.packed:
            how = how.replace("packed batches", f"packed batches of <= {tc.max_tokens} tokens", 1)
        if tc.compile_layers:
            packing.compile_layers(self.classifier)
            how += ", compiled layers"
        say(acc, f"fold {self.k}: {how} (train.packing={tc.packing})")
        say(
            acc,
            f"fold {self.k}: {len(self.train_rows)} training rows ({len(self.items.seqs)} items, swap={tc.swap}), "
            f"{len(self.val_rows)} validation; {self.total_steps} steps ({self.steps_per_epoch}/epoch, {micro_per_epoch} "
            f"batches/epoch/process, accum {tc.grad_accum}, {acc.num_processes} process(es)); "
            f"parameters {self.n_trainable:,} trainable of {self.n_total:,}",
        )

    def batches_of(self, epoch: int) -> list:
        """This process's batches of ``epoch`` (the last epoch's kept)."""
        if self._epoch is None or self._epoch[0] != epoch:
            seed = epoch_seed(self.cfg.seed, self.k, epoch)
            full = epoch_batches(self.items, self.tc, self.tc.swap, seed, packed=self.packed, lengths=self.item_lengths)
            self._epoch = (epoch, shard_batches(full, self.acc.num_processes, self.acc.process_index))
        return self._epoch[1]

    def saved_classifier(self):
        inner = self.acc.unwrap_model(self.model)
        return inner.model if isinstance(inner, packing.PackedClassifier) else inner

    # -- resume -----------------------------------------------------------------------------
    def start_or_resume(self) -> None:
        self.progress = fold_state.Progress(
            packed=self.packed, processes=self.acc.num_processes, grad_accum=self.tc.grad_accum, fingerprint=self.fingerprint
        )
        if (self.state_dir / fold_state.PROGRESS_FILE).exists():
            fold_state.check_resumable(fold_state.Progress.read(self.state_dir / fold_state.PROGRESS_FILE), self.progress, self.state_dir)
            self.progress, self.best_val, sharded = fold_state.load_state(self.acc, self.state_dir)
            self.best_sharded = sharded if self.fsdp else None
            say(self.acc, f"fold {self.k}: resuming at step {self.progress.step}/{self.total_steps} from {self.state_dir}")

    # -- evaluation -------------------------------------------------------------------------
    def predict(self, encoded: Encoded) -> np.ndarray:
        return predict_encoded(
            self.eval_model,
            self.task,
            encoded,
            self.pad_id,
            inference_plan(self.tc, encoded.lengths, self.packed),
            tta_swap=self.tc.tta_swap,
            device=self.acc.device,
            static_min_seqlen=self.min_seqlen,
            pad_to_multiple_of=self.tc.pad_to_multiple_of,
            sharding=Sharding.of(self.acc),
        )

    def evaluate(self) -> None:
        """Score the validation rows; keep the weights when they improve on the best so far."""
        from prefkit.models.transformer import save_checkpoint

        preds = self.predict(self.val)
        scores = self.task.metrics(self.val.targets, preds, self.val.weights)
        loss = scores[self.task.metric]
        progress = self.progress
        improved = progress.best_loss is None or loss < progress.best_loss - 1e-9
        record = {"step": progress.step, f"val_{self.task.metric}": loss, **{f"val_{k}": v for k, v in scores.items() if k != self.task.metric}}
        if self._since_eval[1]:
            record["train_loss"] = self._since_eval[0] / self._since_eval[1]
        self._since_eval = [0.0, 0]
        progress.evals.append(record)
        if improved:
            progress.best_loss, progress.best_step, progress.bad_evals = loss, progress.step, 0
            self.best_val = preds
            state = self.acc.get_state_dict(self.model) if self.fsdp else None
            if state is not None:
                self.best_sharded = fold_state.trainable_state(self.model, state)
                if self.packed:  # the classifier's own names, without PackedClassifier's "model."
                    state = {name.removeprefix("model."): v for name, v in state.items()}
            if self.acc.is_main_process:
                save_checkpoint(self.saved_classifier(), self.data.tokenizer, self.ckpt_dir, self.cfg, state_dict=state,
                                extra_files=self.checkpoint_files)  # fmt: skip
            self.acc.wait_for_everyone()
        else:
            progress.bad_evals += 1
        shown = " ".join(f"{k.removeprefix('val_').replace('_', ' ')} {v:.4f}" for k, v in record.items() if k.startswith("val_"))
        say(self.acc, f"fold {self.k} step {progress.step}: val {shown}{' *' if improved else ''}")
        if self.tc.early_stopping_patience and progress.bad_evals >= self.tc.early_stopping_patience:
            progress.stopped_early = True
            say(self.acc, f"fold {self.k}: early stop after {progress.bad_evals} evaluations without improvement")

    # -- training ---------------------------------------------------------------------------
    def collate(self, idx: list[int]):
        """The items ``idx`` as one batch on the device: their sequences padded (or packed),
        with one target and weight per item."""
        items, tc = self.items, self.tc
        seqs = items.item_seqs(idx)
        if self.packed:
            pad_to = None if self.min_seqlen is None else tc.max_tokens
            batch = packing.collate_packed(seqs, self.pad_id, pad_to=pad_to, index=idx, targets=items.targets[idx], weights=items.weights[idx])
            batch.max_seqlen = max(batch.max_seqlen, self.min_seqlen or 0)
            return batch.to(self.acc.device)
        batch = collate_ids(seqs, self.pad_id, tc.pad_to_multiple_of)
        batch["targets"] = torch.as_tensor(items.targets[idx], dtype=torch.float32)
        batch["weights"] = torch.as_tensor(items.weights[idx], dtype=torch.float32)
        return {key: v.to(self.acc.device) for key, v in batch.items()}

    def compute_loss(self, batch) -> torch.Tensor:
        if isinstance(batch, packing.PackedBatch):
            outputs, targets, weights = self.model(**packing.PackedClassifier.inputs(batch)), batch.targets, batch.weights
        else:
            outputs = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            targets, weights = batch["targets"], batch["weights"]
        return self.loss_fn(self.task.combine(outputs), targets, weights, self.tc.label_smoothing)

    def train_step(self, batch) -> tuple[float, bool]:
        """One micro-batch: forward, backward and, at the end of an accumulation window,
        clipping, optimizer and scheduler step. Returns (loss, whether the optimizer stepped)."""
        acc = self.acc
        with acc.accumulate(self.model):
            loss = self.compute_loss(batch)
            acc.backward(loss)
            if acc.sync_gradients:
                acc.clip_grad_norm_(self.model.parameters(), self.tc.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        if acc.sync_gradients:
            self.scheduler.step()
        return float(loss.detach()), acc.sync_gradients

    def train(self) -> None:
        from prefkit.progress import progress_bar

        acc, tc, progress = self.acc, self.tc, self.progress
        total_micro = self.total_steps * tc.grad_accum
        if progress.micro == 0 and acc.is_main_process:
            first = self.items.item_seqs([self.batches_of(0)[0][0]])
            text = "\n".join(self.data.tokenizer.decode(s) for s in first)
            say(acc, f"first training example ({sum(map(len, first))} tokens):\n{text}\n")
        self.model.train()
        bar = progress_bar(total=self.total_steps, initial=progress.step, desc=f"fold {self.k}", unit="step",
                           dynamic_ncols=True, disable=not acc.is_main_process)  # fmt: skip
        loss_ema, run_seconds, run_rows = None, 0.0, 0  # rate: training time only, since this start or resume
        while progress.micro < total_micro and not progress.stopped_early:
            batches = self.batches_of(progress.epoch)
            if progress.pos >= len(batches):
                progress.epoch, progress.pos = progress.epoch + 1, 0
                continue
            t0 = time.perf_counter()
            idx = batches[progress.pos]
            progress.pos += 1
            progress.micro += 1
            loss, stepped = self.train_step(self.collate(idx))
            dt = time.perf_counter() - t0
            n_rows = len(idx) * acc.num_processes
            run_seconds, run_rows = run_seconds + dt, run_rows + n_rows
            progress.train_seconds += dt
            progress.pairs_seen += n_rows
            progress.tokens_seen += int(self.item_lengths[idx].sum()) * acc.num_processes
            loss_ema = loss if loss_ema is None else 0.95 * loss_ema + 0.05 * loss
            self._since_eval[0] += loss
            self._since_eval[1] += 1
            if not stepped:
                continue
            progress.step += 1
            rate = run_rows / max(run_seconds, 1e-9)
            lr = self.scheduler.get_last_lr()[0]
            bar.update(1)
            bar.set_postfix(loss=f"{loss_ema:.4f}", rows_s=f"{rate:.1f}", lr=f"{lr:.2e}")
            if progress.step % tc.log_every_steps == 0 and acc.is_main_process:
                logger.info(f"fold {self.k} step {progress.step}/{self.total_steps} epoch {progress.epoch} loss {loss_ema:.4f} "
                            f"lr {lr:.3e} {rate:.1f} rows/s")  # fmt: skip
            if progress.step % self.eval_every == 0 or progress.step == self.total_steps:
                self.evaluate()
            if progress.step % tc.state_every_steps == 0 and progress.step < self.total_steps and not progress.stopped_early:
                fold_state.save_state(acc, self.state_dir, progress, self.best_val, self.best_sharded)
            if self.on_step is not None:
                self.on_step(self.k, progress.step, progress)
        bar.close()
        if progress.best_step is None or (progress.evals and progress.evals[-1]["step"] != progress.step and not progress.stopped_early):
            self.evaluate()

    # -- outputs ----------------------------------------------------------------------------
    def restore_best(self) -> None:
        """Back to the best evaluation's weights (for the test predictions)."""
        from prefkit.models.transformer import load_weights_into

        if self.progress.best_step == self.progress.step:
            return
        self.acc.wait_for_everyone()
        if not self.fsdp:
            load_weights_into(self.saved_classifier(), self.ckpt_dir)
        elif self.best_sharded is not None:
            fold_state.restore_sharded_state(self.model, self.best_sharded)  # a sharded model cannot load full tensors
        else:
            say(self.acc, f"fold {self.k}: the best step ({self.progress.best_step}) came before this resume; "
                "under FSDP the test predictions use the last weights (the OOF is from the best step)")  # fmt: skip

    def finish(self, fold_start: float) -> FoldResult:
        acc, cfg, progress, data = self.acc, self.cfg, self.progress, self.data
        self.restore_best()
        oof = self.task.prediction_frame(data.table["id"].iloc[self.val_rows], self.best_val, cfg.name, self.k)
        test = None
        if data.test_encoded is not None:
            test = self.task.prediction_frame(data.test_table["id"], self.predict(data.test_encoded), cfg.name, self.k)
        rate = progress.pairs_seen / max(progress.train_seconds, 1e-9)
        if acc.is_main_process:
            self.task.write_predictions(oof, self.fold_dir / OOF_FILE)
            if test is not None:
                self.task.write_predictions(test, self.fold_dir / TEST_FILE)
            done = {
                "fold": self.k,
                "task": self.task.name,
                f"val_{self.task.metric}": progress.best_loss,
                "best_step": progress.best_step,
                "steps": progress.step,
                "total_steps": self.total_steps,
                "stopped_early": progress.stopped_early,
                "packed": self.packed,
                "train_pairs": int(len(self.train_rows)),
                "val_pairs": int(len(self.val_rows)),
                "pairs_seen": progress.pairs_seen,
                "tokens_seen": progress.tokens_seen,
                "train_seconds": round(progress.train_seconds, 2),
                "train_pairs_per_second": round(rate, 2),
                "train_tokens_per_second": round(progress.tokens_seen / max(progress.train_seconds, 1e-9), 1),
                "parameters": {"trainable": self.n_trainable, "total": self.n_total},
                "device": device_name(acc),
                "mixed_precision": self.tc.mixed_precision,
                "model": cfg.model.name_or_path,
                "max_length": cfg.render.max_length,
                "wall_seconds_since_start": round(time.perf_counter() - fold_start, 1),
                "fingerprint": self.fingerprint,
                "evals": progress.evals,
            }
            atomic_write_text(self.fold_dir / DONE_FILE, json.dumps(done, indent=2) + "\n")  # written last: the fold is finished
            if not self.tc.keep_state:
                shutil.rmtree(self.state_dir, ignore_errors=True)
        say(acc, f"fold {self.k}: done, best val {self.task.metric.replace('_', ' ')} {progress.best_loss:.4f} at step {progress.best_step}; "
            f"{rate:.1f} training rows/s")  # fmt: skip
        acc.wait_for_everyone()
        return FoldResult(self.k, oof, test, progress.best_loss, evals=progress.evals)

    def release(self) -> None:
        """Free the fold's model, optimizer and scheduler before the next fold builds its own."""
        self.hook.remove()
        self.acc.free_memory()
        self.model = self.optimizer = self.scheduler = self.eval_model = self.classifier = None

    def run(self) -> FoldResult:
        from prefkit.rundir import RunLock

        fold_start = time.perf_counter()
        self.fold_dir.mkdir(parents=True, exist_ok=True)
        # one process trains a fold at a time (parallel fold processes share the run folder)
        lock = RunLock(self.fold_dir).acquire() if self.acc.is_main_process else None
        try:
            self.build()
            try:
                self.start_or_resume()
                self.train()
                return self.finish(fold_start)
            finally:
                self.release()
        finally:
            if lock is not None:
                lock.release()


# -- the run ---------------------------------------------------------------------------
@dataclass
class TrainResult:
    run_dir: Path
    folds: list[FoldResult]
    oof: pd.DataFrame
    test: pd.DataFrame | None
    oof_metric: float | None  # the task's metric over the run's OOF (log loss for pair3)


def read_done(fold_dir: Path) -> dict:
    return json.loads((fold_dir / DONE_FILE).read_text())


def describe_done_fold(done: dict) -> str:
    """One line on how a finished fold was produced, from its ``done.json``."""
    metric = next((k for k in done if k.startswith("val_")), None)
    parts = [f"{metric.replace('_', ' ')} {done[metric]:.4f}"] if metric and done[metric] is not None else []
    if "device" in done:
        parts.append(f"{done['device']}, {done['mixed_precision']}, max_length {done['max_length']}")
    parts.append(f"{done['train_seconds']:.0f}s training at {done['train_pairs_per_second']:.0f} rows/s")
    return "; ".join(parts)


def finished_folds(run_dir: Path) -> list[int]:
    return [k for k, _ in finished_fold_dirs(run_dir)]


def check_finished_fold(data: RunData, k: int) -> dict:
    """``done.json`` of a finished fold, refused (one line) when it was made under other settings."""
    fold_dir = data.cfg.run_dir / f"fold_{k}"
    done = read_done(fold_dir)
    changes = fingerprint_changes(done.get("fingerprint"), data.fingerprint(k))
    if changes:
        raise ConfigError(
            f"fold {k} in {data.cfg.run_dir} was trained with {'; '.join(changes[:4])}"
            f"{f' (and {len(changes) - 4} more)' if len(changes) > 4 else ''}: delete {fold_dir} to retrain it "
            f"(or every fold_* folder), or choose another run name (name=...)"
        )
    return done


def _plot_run(cfg: RunConfig, results: list[FoldResult], task: Task, targets: np.ndarray, preds: np.ndarray) -> None:
    """``learning_curves.png`` (each fold's evaluations) and the task's OOF picture (``reliability.png``)."""
    from prefkit.plots import learning_curves_plot

    evals = {r.fold: r.evals for r in results}
    if any(evals.values()):
        learning_curves_plot(evals, cfg.run_dir / "learning_curves.png", title=f"{cfg.name}: learning curves", metric=task.metric)
    task.plot_oof(targets, preds, cfg.run_dir / "reliability.png", title=f"{cfg.name} OOF")


def combine_folds(data: RunData, checked: dict[int, dict] | None = None) -> TrainResult:
    """Run-level ``oof.csv`` (every finished fold) and ``test.csv`` (mean over folds).
    ``checked``: ``done.json`` of folds whose fingerprint was already checked."""
    cfg, task, run_dir = data.cfg, data.task, data.cfg.run_dir
    checked = checked or {}
    results = []
    for k in finished_folds(run_dir):
        done = checked[k] if k in checked else check_finished_fold(data, k)
        fold_dir = run_dir / f"fold_{k}"
        test = task.read_predictions(fold_dir / TEST_FILE) if (fold_dir / TEST_FILE).exists() else None
        results.append(FoldResult(k, task.read_predictions(fold_dir / OOF_FILE), test, done.get(f"val_{task.metric}"), True, done.get("evals", [])))
    if not results:
        raise InputError("no finished fold to combine", file=run_dir)
    oof = pd.concat([r.oof for r in results], ignore_index=True)
    task.write_predictions(oof, run_dir / OOF_FILE)
    rows = pd.Series(np.arange(len(data.table)), index=data.ids).loc[oof["id"].astype(str)].to_numpy()
    targets, weights, preds = data.encoded.targets[rows], data.encoded.weights[rows], task.read_prediction_frame(oof)
    scores = task.metrics(targets, preds, weights)
    logger.info("OOF " + " ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    _plot_run(cfg, results, task, targets, preds)
    test = None
    tests = [r.test for r in results if r.test is not None]
    if tests:
        ids = tests[0]["id"].astype(str).tolist()
        mean = np.mean([task.read_prediction_frame(t.set_index(t["id"].astype(str)).loc[ids].reset_index(drop=True)) for t in tests], axis=0)
        test = task.prediction_frame(ids, mean, cfg.name, -1)
        task.write_predictions(test, run_dir / TEST_FILE)
    return TrainResult(run_dir, results, oof, test, scores[task.metric])


def train_folds(
    cfg: RunConfig,
    table: pd.DataFrame,
    fold_ids,
    test_table: pd.DataFrame | None = None,
    on_step: StepHook | None = None,
    accelerator=None,
) -> TrainResult | None:
    """Train the folds of ``cfg`` (``train.folds`` or all) on ``table``; see module doc.

    ``fold_ids``: the validation fold of each row (``-1``: always training). Returns the
    combined result on the main process (None on the others)."""
    fold_ids = np.asarray(fold_ids, dtype=int)
    if len(fold_ids) != len(table):
        raise InputError(f"{len(fold_ids)} fold ids for {len(table)} rows")
    from prefkit.models.transformer import check_model_sources

    task = get_task(cfg.task, cfg)
    check_model_sources(cfg.model)
    accelerator = accelerator or make_accelerator(cfg.train)
    run_dir = cfg.run_dir
    folder = None
    if accelerator.is_main_process:
        from prefkit.rundir import RunFolder

        # In place (folds resume where they stopped); a lock shared by processes that each
        # train some folds (train.folds), exclusive otherwise; run.json says "running" until
        # every fold is combined.
        folder = RunFolder(run_dir, kind="transformer", staged=False, shared_lock=cfg.train.folds is not None).begin()
    handler = setup_run_logging(run_dir, accelerator.is_main_process)
    try:
        from prefkit.data.folds import save_fold_map, validation_folds

        folds = cfg.train.folds if cfg.train.folds is not None else validation_folds(fold_ids)
        unknown = [f for f in folds if f not in set(validation_folds(fold_ids))]
        if unknown:
            raise ConfigError(f"train.folds: fold(s) {unknown} not in the fold map")
        say(
            accelerator,
            f"run {cfg.name}: task {task.name}, {len(table)} rows, folds {folds}, model {cfg.model.name_or_path}, "
            f"device {accelerator.device} x{accelerator.num_processes}{_distributed(accelerator)}, "
            f"mixed precision {cfg.train.mixed_precision}",
        )
        data = encode_run(cfg, task, table, fold_ids, test_table, accelerator)
        # Every finished fold is checked before anything trains: a mismatch stops the run at once.
        finished = {k: check_finished_fold(data, k) for k in finished_folds(run_dir)}
        todo = [k for k in folds if k not in finished]
        for k in folds:
            if k in finished:
                say(accelerator, f"fold {k}: finished earlier, skipped ({describe_done_fold(finished[k])})")
        if accelerator.is_main_process and (todo or not (run_dir / "config.yaml").exists()):
            save_config(cfg, run_dir)
            save_fold_map(table["id"], fold_ids, run_dir / "folds.csv")  # the stacker checks OOF coverage against it
        if folder is not None and todo:  # no combined outputs of an earlier call beside this call's folds
            folder.discard([OOF_FILE, TEST_FILE, "reliability.png", "learning_curves.png"])
        for k in todo:
            FoldTrainer(accelerator, data, k, on_step).run()
            # Mixed precision leaves the fold's model in a reference cycle (its patched forward):
            # collect it now, or the next fold builds its model beside it.
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        accelerator.wait_for_everyone()
        result = combine_folds(data, finished) if accelerator.is_main_process else None
        if result is not None:
            say(accelerator, f"run {cfg.name}: OOF {task.metric.replace('_', ' ')} {result.oof_metric:.4f} over {len(result.oof)} rows, "
                f"folds {[r.fold for r in result.folds]}")  # fmt: skip
            if {r.fold for r in result.folds} >= set(validation_folds(fold_ids)):
                folder.commit()  # every fold is in the run's oof.csv: the folder is complete
        return result
    finally:
        if handler is not None:
            logging.getLogger("prefkit").removeHandler(handler)
            handler.close()
        if folder is not None:
            folder.close()
