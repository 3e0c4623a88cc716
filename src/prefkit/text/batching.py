"""Length-aware batches with dynamic padding.

``make_length_batches(lengths, batch_size=..., max_tokens=..., shuffle=...)`` groups
row indices into batches of similar length:

* inference (``shuffle=False``): all rows sorted by length, longest first (so memory
  trouble shows at once), cut into batches;
* training (``shuffle=True``): a random permutation cut into chunks of
  ``bucket_batches`` batches, each chunk sorted by length and cut into batches, and the
  batch order shuffled: little padding, yet random batches.

A batch holds at most ``batch_size`` rows and, when ``max_tokens`` is given, at most
``max_tokens`` padded tokens (rows x longest row); a single row longer than
``max_tokens`` still forms a batch of its own.

``pack_batches(lengths, max_tokens)`` groups rows into packs whose lengths *sum* to at
most ``max_tokens`` (decoders trained and predicted without padding, see
:mod:`prefkit.models.packing`). :class:`BatchPlan` picks one of the two from a config, for
training and inference alike.

``collate(items, pad_id)`` right-pads ``input_ids`` to the longest row of the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch


def _cut_sorted(order: np.ndarray, lengths: np.ndarray, batch_size: int | None, max_tokens: int | None) -> list[list[int]]:
    """Cut ``order`` (sorted by length, either direction) into consecutive batches."""
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for idx in order.tolist():
        n = int(lengths[idx])
        new_longest = max(longest, n)
        too_many = batch_size is not None and len(current) >= batch_size
        too_long = max_tokens is not None and current and new_longest * (len(current) + 1) > max_tokens
        if current and (too_many or too_long):
            batches.append(current)
            current, new_longest = [], n
        current.append(idx)
        longest = new_longest
    if current:
        batches.append(current)
    return batches


def make_length_batches(
    lengths: Sequence[int],
    batch_size: int | None = None,
    max_tokens: int | None = None,
    shuffle: bool = False,
    seed: int = 0,
    bucket_batches: int = 50,
    sort: bool = True,
) -> list[list[int]]:
    """Batches of row indices (see module doc). ``sort=False``: plain (shuffled) order."""
    if batch_size is None and max_tokens is None:
        raise ValueError("give batch_size or max_tokens (or both)")
    lengths = np.asarray(lengths, dtype=np.int64)
    n = len(lengths)
    if n == 0:
        return []
    if not shuffle:
        order = np.argsort(-lengths, kind="stable") if sort else np.arange(n)
        return _cut_sorted(order, lengths, batch_size, max_tokens)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    if not sort:
        return _cut_sorted(perm, lengths, batch_size, max_tokens)
    if batch_size is not None:
        chunk = batch_size * bucket_batches
    else:
        mean_len = max(1.0, float(lengths.mean()))
        chunk = max(1, int(max_tokens / mean_len)) * bucket_batches

    def cut(part: np.ndarray) -> list[list[int]]:
        return _cut_sorted(part[np.argsort(-lengths[part], kind="stable")], lengths, batch_size, max_tokens)

    return _by_chunks(perm, chunk, cut, rng)


def _by_chunks(perm: np.ndarray, chunk: int, group, rng: np.random.Generator) -> list[list[int]]:
    """Training batches: ``group`` each chunk of the random permutation ``perm`` (similar
    lengths meet within a chunk), then shuffle the order of all batches."""
    batches: list[list[int]] = []
    for start in range(0, len(perm), chunk):
        batches.extend(group(perm[start : start + chunk]))
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def _first_fit_decreasing(rows: np.ndarray, lengths: np.ndarray, max_tokens: int, max_pairs: int | None) -> list[list[int]]:
    """Bins of ``rows`` (longest first into the first bin with room); sum of lengths <= max_tokens."""
    order = rows[np.argsort(-lengths[rows], kind="stable")]
    bins: list[list[int]] = []
    room = np.zeros(0, dtype=np.int64)
    count = np.zeros(0, dtype=np.int64)
    for idx in order.tolist():
        n = int(lengths[idx])
        fits = room >= n
        if max_pairs is not None:
            fits &= count < max_pairs
        hit = int(np.argmax(fits)) if fits.size and fits.any() else -1
        if hit < 0:  # open a new bin (a row longer than max_tokens gets one of its own)
            bins.append([idx])
            room = np.append(room, max(0, max_tokens - n))
            count = np.append(count, 1)
        else:
            bins[hit].append(idx)
            room[hit] -= n
            count[hit] += 1
    return bins


def pack_batches(
    lengths: Sequence[int],
    max_tokens: int,
    shuffle: bool = False,
    seed: int = 0,
    bucket_batches: int = 50,
    max_pairs: int | None = None,
) -> list[list[int]]:
    """Row indices grouped into packs whose lengths *sum* to at most ``max_tokens``.

    * inference (``shuffle=False``): all rows packed first-fit decreasing (packs of the
      longest rows first, so memory trouble shows at once);
    * training (``shuffle=True``): a random permutation cut into chunks of about
      ``bucket_batches`` packs, each chunk packed first-fit decreasing, and the pack order
      shuffled: packs are nearly full (few percent of the budget unused) and random.

    ``max_pairs`` caps the pairs in one pack. A row longer than ``max_tokens`` forms a pack
    of its own (truncate rows to the model's max length before packing).
    """
    if max_tokens < 1:
        raise ValueError("max_tokens must be >= 1")
    lengths = np.asarray(lengths, dtype=np.int64)
    n = len(lengths)
    if n == 0:
        return []
    if not shuffle:
        return _first_fit_decreasing(np.arange(n), lengths, max_tokens, max_pairs)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    mean_len = max(1.0, float(lengths.mean()))
    chunk = max(1, int(max_tokens / mean_len)) * max(1, bucket_batches)
    return _by_chunks(perm, chunk, lambda part: _first_fit_decreasing(part, lengths, max_tokens, max_pairs), rng)


@dataclass(frozen=True)
class BatchPlan:
    """How rows become batches: padded batches of at most ``batch_size`` rows and, when set,
    ``max_tokens`` padded tokens; or (``packed``) packs of whole rows whose lengths sum to at
    most ``max_tokens``. The one planner for training and inference batches."""

    batch_size: int | None = None
    max_tokens: int | None = None
    packed: bool = False
    sort: bool = True  # padded batches: group similar lengths
    bucket_batches: int = 50

    def batches(self, lengths, shuffle: bool = False, seed: int = 0) -> list[list[int]]:
        if self.packed:
            if not self.max_tokens:
                raise ValueError("packed batches need max_tokens")
            return pack_batches(lengths, self.max_tokens, shuffle=shuffle, seed=seed, bucket_batches=self.bucket_batches)
        return make_length_batches(
            lengths, self.batch_size, self.max_tokens, shuffle=shuffle, seed=seed, bucket_batches=self.bucket_batches, sort=self.sort
        )

    def shared(self, share: int) -> "BatchPlan":
        """The plan for a batch that holds ``share`` rows per planned row (pairs and their swaps)."""
        return replace(
            self,
            batch_size=None if self.batch_size is None else max(1, self.batch_size // share),
            max_tokens=None if self.max_tokens is None else max(1, self.max_tokens // share),
        )


def collate(items: list[dict], pad_id: int, pad_to_multiple_of: int = 1) -> dict[str, torch.Tensor]:
    """Right-pad to the batch's longest row: input_ids, attention_mask (+ targets, weights, index)."""
    longest = max(len(it["input_ids"]) for it in items)
    if pad_to_multiple_of > 1:
        longest = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
    ids = torch.full((len(items), longest), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(items), longest), dtype=torch.long)
    for row, it in enumerate(items):
        seq = it["input_ids"]
        ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    out = {"input_ids": ids, "attention_mask": mask, "index": torch.as_tensor([it["index"] for it in items], dtype=torch.long)}
    if "targets" in items[0]:
        out["targets"] = torch.as_tensor(np.stack([it["targets"] for it in items]), dtype=torch.float32)
    if "weight" in items[0]:
        out["weights"] = torch.as_tensor(np.asarray([it["weight"] for it in items]), dtype=torch.float32)
    return out


def collate_ids(seqs: Sequence[Sequence[int]], pad_id: int, pad_to_multiple_of: int = 1) -> dict[str, torch.Tensor]:
    """``collate`` for bare id lists (inference)."""
    return collate([{"input_ids": s, "index": i} for i, s in enumerate(seqs)], pad_id, pad_to_multiple_of)
