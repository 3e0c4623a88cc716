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

``collate(items, pad_id)`` right-pads ``input_ids`` to the longest row of the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

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
    batches: list[list[int]] = []
    for start in range(0, n, chunk):
        part = perm[start : start + chunk]
        part = part[np.argsort(-lengths[part], kind="stable")]
        batches.extend(_cut_sorted(part, lengths, batch_size, max_tokens))
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


class PairDataset(torch.utils.data.Dataset):
    """Rendered pairs (token id lists) with optional targets (n, 3) and weights (n,)."""

    def __init__(self, input_ids: Sequence[Sequence[int]], targets=None, weights=None):
        self.input_ids = input_ids
        self.targets = None if targets is None else np.asarray(targets, dtype=np.float32)
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.input_ids)

    def lengths(self) -> list[int]:
        return [len(x) for x in self.input_ids]

    def __getitem__(self, i: int) -> dict:
        item = {"input_ids": self.input_ids[i], "index": i}
        if self.targets is not None:
            item["targets"] = self.targets[i]
        if self.weights is not None:
            item["weight"] = self.weights[i]
        return item


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
