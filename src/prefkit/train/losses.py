"""Training losses by name (``train.loss``, or a task's default).

A loss takes the model's float logits (n, outputs), the batch's targets (n, outputs) and
optional sample weights (n,) and returns the weighted mean ``sum w_i l_i / sum w_i``. A new
loss is one function and one line in :data:`LOSSES`. torch is imported inside the losses,
so that configs validate loss names without loading it.
"""

from __future__ import annotations


def weighted_mean(per_row, weights=None):
    if weights is None:
        return per_row.mean()
    weights = weights.float()
    return (per_row * weights).sum() / weights.sum().clamp_min(1e-12)


def smooth_targets(targets, label_smoothing: float = 0.0):
    """``(1 - eps) * targets + eps / K``, as ``torch.nn.functional.cross_entropy`` smooths."""
    if label_smoothing <= 0:
        return targets
    return targets * (1.0 - label_smoothing) + label_smoothing / targets.shape[-1]


def soft_cross_entropy(logits, targets, weights=None, label_smoothing: float = 0.0):
    """``-sum_k t_k log softmax(logits)_k`` per row: probability targets (p_a, p_b, p_tie);
    equals ordinary cross-entropy for one-hot targets."""
    import torch

    logp = torch.log_softmax(logits.float(), dim=-1)
    per_row = -(smooth_targets(targets.float(), label_smoothing) * logp).sum(dim=-1)
    return weighted_mean(per_row, weights)


def mse(logits, targets, weights=None, label_smoothing: float = 0.0):
    """Squared error per row, summed over outputs (regression heads)."""
    per_row = ((logits.float() - targets.float()) ** 2).sum(dim=-1)
    return weighted_mean(per_row, weights)


def bradley_terry(logits, targets, weights=None, label_smoothing: float = 0.0):
    """Logistic loss of a score difference s(A) - s(B) (one output per row) against
    P(A beats B) = p_a + p_tie / 2 (targets (p_a, p_b, p_tie): a tie counts half a win)."""
    import torch.nn.functional as F

    win = targets[:, 0].float() + 0.5 * targets[:, 2].float()
    if label_smoothing > 0:
        win = win * (1.0 - label_smoothing) + 0.5 * label_smoothing
    per_row = F.binary_cross_entropy_with_logits(logits.float().reshape(-1), win, reduction="none")
    return weighted_mean(per_row, weights)


LOSSES = {"soft_cross_entropy": soft_cross_entropy, "mse": mse, "bradley_terry": bradley_terry}

