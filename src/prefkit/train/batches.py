"""Training batches of one fold: the items (rows and their swaps), each epoch's batch order
(a function of seed, fold and epoch only, so a resumed run repeats an uninterrupted one),
and each process's share. Batches themselves come from the one planner,
:class:`prefkit.text.batching.BatchPlan`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prefkit.config import TrainConfig
from prefkit.errors import ConfigError, InputError
from prefkit.tasks import Encoded, Task
from prefkit.tasks.base import row_lengths, rows_seqs
from prefkit.text.batching import BatchPlan


def epoch_seed(seed: int, fold: int, epoch: int) -> int:
    """Seed of one epoch's batch order (epoch -1: the training-row subset)."""
    return int(np.random.SeedSequence([seed, fold + 1, epoch + 1]).generate_state(1)[0])


@dataclass
class TrainItems:
    """What one fold trains on: ``per_row`` sequences per item (adjacent), targets, weights;
    swapped copies after the ``n_orig`` originals (item ``i + n_orig`` is the swap of item ``i``)."""

    seqs: list[list[int]]
    targets: np.ndarray
    weights: np.ndarray
    n_orig: int
    per_row: int = 1

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per item."""
        return row_lengths(self.seqs, self.per_row)

    def item_seqs(self, idx) -> list[list[int]]:
        """The sequences of items ``idx``, in order (``per_row`` each)."""
        return rows_seqs(self.seqs, idx, self.per_row)


def training_items(task: Task, encoded: Encoded, rows: np.ndarray, swap: str, soft_labels: bool = True) -> TrainItems:
    targets = encoded.targets[rows].astype(np.float32)
    if not soft_labels:
        targets = task.hard_targets(targets)
    weights = encoded.weights[rows].astype(np.float32)
    seqs = encoded.row_seqs(rows)
    if swap != "off":
        if encoded.seqs_swapped is None:
            raise ValueError("swap augmentation needs the swapped renderings")
        seqs = seqs + encoded.row_seqs(rows, swapped=True)
        targets = np.concatenate([targets, task.swap_targets(targets)])
        weights = np.concatenate([weights, weights])
    return TrainItems(seqs, targets, weights, len(rows), encoded.per_row)


def training_plan(train_cfg: TrainConfig, packed: bool = False) -> BatchPlan:
    """``train.max_tokens`` set: batches of that many padded tokens (``batch_size`` unused);
    ``packed``: packs of that many real tokens."""
    if packed and train_cfg.max_tokens is None:
        raise ConfigError("packed batches need train.max_tokens")
    return BatchPlan(
        batch_size=None if train_cfg.max_tokens else train_cfg.batch_size,
        max_tokens=train_cfg.max_tokens,
        packed=packed,
        sort=train_cfg.length_batching,
        bucket_batches=train_cfg.bucket_batches,
    )


def epoch_batches(items: TrainItems, train_cfg: TrainConfig, swap: str, seed: int, packed: bool = False, lengths=None) -> list[list[int]]:
    """Training batches of one epoch (indices into ``items``), a function of ``seed`` only;
    ``paired``: half a batch of pairs, each followed by its swap. ``lengths``: ``items.lengths``
    when already at hand."""
    plan = training_plan(train_cfg, packed)
    lengths = items.lengths if lengths is None else lengths
    if swap == "paired":
        halves = plan.shared(2).batches(lengths[: items.n_orig], shuffle=True, seed=seed)
        return [b + [i + items.n_orig for i in b] for b in halves]
    return plan.batches(lengths if swap == "double" else lengths[: items.n_orig], shuffle=True, seed=seed)


def shard_batches(batches: list, num_processes: int, process_index: int) -> list:
    """This process's share; every process gets the same number (leftovers dropped)."""
    if num_processes == 1:
        return batches
    per = len(batches) // num_processes
    if per == 0:
        raise InputError(f"{len(batches)} training batch(es) cannot be shared by {num_processes} processes")
    return batches[process_index::num_processes][:per]
