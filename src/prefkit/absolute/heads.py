"""Small torch heads on frozen embeddings, and how they are trained.

:class:`ScorerHead` is a projection (Linear + GELU + dropout) followed by one scalar per
target. Trained on pairs (stage 1) it is a Siamese scorer: the pair logit is
s(i) - s(j), antisymmetric by construction, with the losses of
:mod:`prefkit.train.losses` (``bradley_terry`` through :func:`~prefkit.absolute.softbt.soft_bce`);
trained on labels it is a regressor (``mse``). Stage 2 builds on a trained stage-1 head:

* ``warm``: a copy of the whole head (projection and output) trained further on the labels;
* ``stack``: stage 1's projection frozen, a new projection + output stacked on it;
* ``fusion``: a fresh head on the raw embedding concatenated with stage 1's projection and scores.

:class:`PairHead` scores a pair directly from both embeddings (not through one scalar per
item): g(i, j) = h(e_i, e_j) - h(e_j, e_i), antisymmetric by construction; the pair model of
comparative scoring.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from prefkit.absolute.config import FitConfig
from prefkit.absolute.softbt import SoftPairs, soft_bce
from prefkit.train.losses import mse


class ScorerHead(nn.Module):
    def __init__(self, dim: int, hidden: int, n_targets: int, dropout: float = 0.1):
        super().__init__()
        self.projection = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout))
        self.out = nn.Linear(hidden, n_targets)

    def forward(self, x):
        return self.out(self.projection(x))


class StackedHead(nn.Module):
    """A new projection + output on a frozen stage-1 projection."""

    def __init__(self, base: ScorerHead, hidden: int, n_targets: int, dropout: float = 0.1):
        super().__init__()
        self.base = copy.deepcopy(base.projection).requires_grad_(False)
        width = base.out.in_features
        self.top = ScorerHead(width, hidden, n_targets, dropout)

    def forward(self, x):
        self.base.eval()  # frozen: no dropout in the stage-1 layers either
        return self.top(self.base(x))


class PairHead(nn.Module):
    """g(i, j) = h([e_i, e_j, e_i * e_j]) - h([e_j, e_i, e_j * e_i]) per target."""

    def __init__(self, dim: int, hidden: int, n_targets: int, dropout: float = 0.1):
        super().__init__()
        self.h = ScorerHead(3 * dim, hidden, n_targets, dropout)

    def forward(self, a, b):
        ab = torch.cat([a, b, a * b], dim=1)
        ba = torch.cat([b, a, a * b], dim=1)
        return self.h(ab) - self.h(ba)


def warm_head(stage1: ScorerHead) -> ScorerHead:
    """Stage 2 ``warm``: stage 1's weights, every one trainable."""
    head = copy.deepcopy(stage1)
    head.requires_grad_(True)
    return head


def fusion_features(stage1: ScorerHead, x: np.ndarray) -> np.ndarray:
    """Raw embedding, stage 1's projection and its scores side by side (stage 2 ``fusion``)."""
    stage1.eval()
    with torch.no_grad():
        t = torch.as_tensor(x, dtype=torch.float32)
        z = stage1.projection(t)
        s = stage1.out(z)
    return np.concatenate([x, z.numpy(), s.numpy()], axis=1).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Training


@dataclass
class FitResult:
    best_epoch: int
    best_valid_loss: float
    epochs_run: int


def _split_valid(n: int, share: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(training, held-back) rows; the same seed holds back the same items in stage 1 and
    stage 2, so stage 2 never early-stops on items stage 1 trained on."""
    order = rng.permutation(n)
    n_valid = max(1, int(round(share * n))) if n >= 10 else 0
    return order[n_valid:], order[:n_valid]


def _loop(model: nn.Module, batch_loss, n_rows: int, valid_loss, cfg: FitConfig, seed: int) -> FitResult:
    """Mini-batch AdamW over ``n_rows`` rows (``batch_loss(idx) -> loss``) with early stopping on
    ``valid_loss()``; the best state is restored."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    best, best_epoch, best_state, epoch = float("inf"), -1, copy.deepcopy(model.state_dict()), 0
    for epoch in range(cfg.epochs):
        model.train()
        order = rng.permutation(n_rows)
        for start in range(0, n_rows, cfg.batch_size):
            loss = batch_loss(order[start : start + cfg.batch_size])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            current = float(valid_loss())
        if current < best - 1e-6:
            best, best_epoch, best_state = current, epoch, copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= cfg.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    return FitResult(best_epoch, best, epoch + 1)


def fit_regressor(model: nn.Module, x: np.ndarray, y: np.ndarray, cfg: FitConfig, seed: int = 0) -> FitResult:
    """MSE on (standardised) targets ``y`` (n, targets); early stopping on a held-back share."""
    rng = np.random.default_rng(seed)
    train, valid = _split_valid(len(x), cfg.valid_share, rng)
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
    check = valid if len(valid) else train
    return _loop(
        model,
        lambda idx: mse(model(xt[train[idx]]), yt[train[idx]]) / yt.shape[1],
        len(train),
        lambda: mse(model(xt[check]), yt[check]) / yt.shape[1],
        cfg,
        seed,
    )


def _pair_split(pairs: SoftPairs, n_items: int, share: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """Validation pairs: those whose first item is in a held-back item set (no item leaks)."""
    _, held = _split_valid(n_items, share, rng)
    is_valid = np.isin(pairs.i, held) & np.isin(pairs.j, held) if len(held) else np.zeros(len(pairs), bool)
    if is_valid.sum() < 10:  # too few items to hold back whole pairs: hold back first items only
        is_valid = np.isin(pairs.i, held)
    train = np.flatnonzero(~np.isin(pairs.i, held) & ~np.isin(pairs.j, held))
    return (train if len(train) else np.arange(len(pairs))), np.flatnonzero(is_valid)


def fit_on_pairs(model: nn.Module, x: np.ndarray, pairs: SoftPairs, cfg: FitConfig, seed: int = 0) -> FitResult:
    """Soft-BT training of a :class:`ScorerHead` (logit s(i) - s(j)) or :class:`PairHead`
    (logit g(i, j)) on embeddings ``x`` of the items the pairs index."""
    rng = np.random.default_rng(seed)
    train, valid = _pair_split(pairs, len(x), cfg.valid_share, rng)
    xt = torch.as_tensor(x, dtype=torch.float32)
    it, jt = torch.as_tensor(pairs.i), torch.as_tensor(pairs.j)
    tt = torch.as_tensor(pairs.targets, dtype=torch.float32)

    def logits(rows):
        a, b = xt[it[rows]], xt[jt[rows]]
        return model(a, b) if isinstance(model, PairHead) else model(a) - model(b)

    check = valid if len(valid) else train
    return _loop(
        model,
        lambda idx: soft_bce(logits(train[idx]), tt[train[idx]]),
        len(train),
        lambda: soft_bce(logits(check), tt[check]),
        cfg,
        seed,
    )


def predict(model: nn.Module, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            out.append(model(torch.as_tensor(x[start : start + batch_size], dtype=torch.float32)).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def pair_probabilities(model: PairHead, xa: np.ndarray, xb: np.ndarray, target: int = 0) -> np.ndarray:
    """P(a beats b) per row from a :class:`PairHead` (one target column)."""
    model.eval()
    with torch.no_grad():
        g = model(torch.as_tensor(xa, dtype=torch.float32), torch.as_tensor(xb, dtype=torch.float32))
    return torch.sigmoid(g[:, target]).numpy().astype(float)
