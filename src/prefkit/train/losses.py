"""Soft-label cross-entropy (equals ordinary cross-entropy for one-hot targets)."""

from __future__ import annotations

import numpy as np
import torch


def smooth_targets(targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """``(1 - eps) * targets + eps / K``, as ``torch.nn.functional.cross_entropy`` smooths."""
    if label_smoothing <= 0:
        return targets
    return targets * (1.0 - label_smoothing) + label_smoothing / targets.shape[-1]


def soft_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Mean over rows of ``-sum_k t_k log softmax(logits)_k``, weighted by ``weights``
    (``sum w_i l_i / sum w_i``). Targets are probability vectors (p_a, p_b, p_tie)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    per_row = -(smooth_targets(targets.float(), label_smoothing) * logp).sum(dim=-1)
    if weights is None:
        return per_row.mean()
    weights = weights.float()
    return (per_row * weights).sum() / weights.sum().clamp_min(1e-12)


def soft_log_loss(targets: np.ndarray, probs: np.ndarray, eps: float = 1e-15) -> float:
    """Mean cross-entropy of predicted ``probs`` against probability ``targets`` (numpy);
    for one-hot targets this is the competition's log loss."""
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1.0)
    p = p / p.sum(axis=1, keepdims=True)
    return float(-(np.asarray(targets, dtype=np.float64) * np.log(p)).sum(axis=1).mean())
