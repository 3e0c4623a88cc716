"""Soft Bradley-Terry pairs from absolute scores (Raina et al.): items with known scores
become comparisons with probability targets.

Each item is paired with ``k`` partners drawn at random from the same pool (no self-pairs;
a partner may repeat only when the pool is smaller than ``k + 1``), and the pair (i, j)
gets the target P(i beats j) = sigmoid(gamma * (y_i - y_j)). ``gamma`` sets how sure a
score gap makes the comparison: gamma -> inf gives hard labels (1 when y_i > y_j, 0 when
lower, 0.5 on equal scores), gamma -> 0 gives 0.5 everywhere. Several score columns give
one target per column, so one set of pairs trains a scorer of every trait at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit


@dataclass
class SoftPairs:
    """Item positions ``i``, ``j`` (into the scored items) and targets ``(n_pairs, n_targets)``."""

    i: np.ndarray
    j: np.ndarray
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.i)


def soft_targets(y_i, y_j, gamma: float) -> np.ndarray:
    """sigmoid(gamma * (y_i - y_j)); ``gamma=inf`` gives the hard labels 1 / 0.5 / 0."""
    diff = np.asarray(y_i, dtype=float) - np.asarray(y_j, dtype=float)
    if np.isinf(gamma):
        return 0.5 * (1.0 + np.sign(diff))
    return expit(gamma * diff)


def sample_partners(n_items: int, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``k`` partners per item: (i, j) with i repeated k times, j != i, distinct while the pool allows."""
    if n_items < 2:
        raise ValueError(f"soft-BT pairs need at least 2 items, got {n_items}")
    if k < 1:
        raise ValueError(f"k (partners per item) must be at least 1, got {k}")
    i = np.repeat(np.arange(n_items), k)
    if k < n_items:
        # a random draw without replacement from the other n-1 items: offsets 1..n-1 mod n
        offsets = np.stack([rng.choice(n_items - 1, size=k, replace=False) for _ in range(n_items)]) + 1
    else:
        offsets = rng.integers(1, n_items, size=(n_items, k))
    j = (i + offsets.ravel()) % n_items
    return i, j


def soft_bt_pairs(items, scores, k: int = 8, gamma: float = 1.0, seed: int = 0) -> SoftPairs:
    """Pairs among ``items`` (a sequence, or the item count) with known ``scores``
    (``(n,)`` or ``(n, targets)``): ``k`` partners per item, targets sigmoid(gamma (y_i - y_j))."""
    n_items = items if isinstance(items, (int, np.integer)) else len(items)
    y = np.asarray(scores, dtype=float).reshape(n_items, -1)
    if not np.isfinite(y).all():
        raise ValueError("soft-BT pairs need finite scores for every item")
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    i, j = sample_partners(n_items, k, np.random.default_rng(seed))
    return SoftPairs(i, j, soft_targets(y[i], y[j], gamma))


def soft_bce(logits, targets, weights=None):
    """Soft binary cross-entropy of score differences against P(i beats j), through
    ``prefkit.train.losses.bradley_terry`` (targets as (p_a, p_b, p_tie) = (t, 1 - t, 0));
    ``logits`` and ``targets`` of any matching shape, every cell one comparison."""
    import torch

    from prefkit.train.losses import bradley_terry

    t = targets.reshape(-1, 1).float()
    as_pair3 = torch.cat([t, 1.0 - t, torch.zeros_like(t)], dim=1)
    w = None
    if weights is not None:
        w = weights.reshape(-1, 1).expand(-1, targets.reshape(len(targets), -1).shape[1]).reshape(-1)
    return bradley_terry(logits.reshape(-1, 1), as_pair3, w)
