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


# Pair score losses. ``logits`` columns: the score difference d = s(A) - s(B), then (item
# scorers) the pair's log tie parameter log nu and the two scores s(A), s(B); ``targets``
# (p_a, p_b, p_tie) and optionally a fourth column, the margin by which the winner should win.


def margin_difference(logits, targets):
    """d minus the winner's margin (TRL's ``margin``: -log sigmoid(s_chosen - s_rejected - m)),
    signed by who won (p_a - p_b: a tie asks for none)."""
    d = logits[:, 0].float()
    if targets.shape[1] < 4:
        return d
    return d - targets[:, 3].float() * (targets[:, 0].float() - targets[:, 1].float())


def centring_penalty(logits, weights=None, coefficient: float = 0.0):
    """``coefficient * mean((s_A + s_B)^2)`` (TRL's ``center_rewards_coefficient``): keeps the
    scores centred at 0 without touching their differences."""
    if coefficient <= 0:
        return 0.0
    if logits.shape[1] < 4:
        raise ValueError("reward centring needs both scores (logits columns s_A, s_B)")
    return coefficient * weighted_mean((logits[:, 2].float() + logits[:, 3].float()) ** 2, weights)


def bradley_terry(logits, targets, weights=None, label_smoothing: float = 0.0, center_coefficient: float = 0.0):
    """Logistic loss of a score difference s(A) - s(B) (first output column) against
    P(A beats B) = p_a + p_tie / 2 (targets (p_a, p_b, p_tie): a tie counts half a win;
    soft targets, e.g. vote shares or sigmoid(gamma (y_A - y_B)), as they are)."""
    import torch.nn.functional as F

    win = targets[:, 0].float() + 0.5 * targets[:, 2].float()
    if label_smoothing > 0:
        win = win * (1.0 - label_smoothing) + 0.5 * label_smoothing
    per_row = F.binary_cross_entropy_with_logits(margin_difference(logits, targets), win, reduction="none")
    return weighted_mean(per_row, weights) + centring_penalty(logits, weights, center_coefficient)


def davidson_logits(d, log_nu):
    """Davidson's three outcomes as logits: with pA = e^(d/2), pB = e^(-d/2) (so sqrt(pA pB)
    = 1), P(A) : P(B) : P(tie) = e^(d/2) : e^(-d/2) : nu, i.e. softmax(d/2, -d/2, log nu)."""
    import torch

    return torch.stack([0.5 * d, -0.5 * d, log_nu.expand_as(d)], dim=-1)


def davidson(logits, targets, weights=None, label_smoothing: float = 0.0, center_coefficient: float = 0.0):
    """Negative Davidson log-likelihood of (p_a, p_b, p_tie) targets (soft targets as
    expected log-likelihood): P(tie) = nu sqrt(pA pB) / (pA + pB + nu sqrt(pA pB)), with the
    score difference in column 0 and log nu in column 1 (learned or fixed by the task)."""
    import torch

    z = davidson_logits(margin_difference(logits, targets), logits[:, 1].float())
    t = smooth_targets(targets[:, :3].float(), label_smoothing)
    per_row = -(t * torch.log_softmax(z, dim=-1)).sum(dim=-1)
    return weighted_mean(per_row, weights) + centring_penalty(logits, weights, center_coefficient)


LOSSES = {"soft_cross_entropy": soft_cross_entropy, "mse": mse, "bradley_terry": bradley_terry, "davidson": davidson}

