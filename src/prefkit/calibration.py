"""Temperature scaling of 3-way predictions.

One temperature ``T`` divides the logits (log-probabilities) before the softmax; it is
fitted by minimising the log loss on out-of-fold predictions, and never returned where it
would score worse than ``T = 1`` on them.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from prefkit.metrics import log_loss

T_BOUNDS = (0.05, 20.0)


def to_logits(probs: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Log-probabilities (row-normalised, clipped away from 0): logits up to a constant."""
    p = np.clip(np.asarray(probs, dtype=float), eps, None)
    return np.log(p / p.sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return np.exp(log_softmax(np.asarray(logits, dtype=float) / temperature, axis=1))


def fit_temperature(logits: np.ndarray, labels, weights=None) -> float:
    """The temperature minimising the log loss of ``softmax(logits / T)`` on ``labels``
    (hard classes or ``(n, 3)`` probability targets); 1.0 unless that is beaten."""
    logits = np.asarray(logits, dtype=float)

    def loss(log_t: float) -> float:
        return log_loss(labels, softmax(logits, float(np.exp(log_t))), weights)

    result = minimize_scalar(loss, bounds=tuple(np.log(T_BOUNDS)), method="bounded", options={"xatol": 1e-4})
    best = float(np.exp(result.x))
    return best if loss(float(result.x)) < loss(0.0) else 1.0


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities recalibrated with ``temperature``."""
    return softmax(to_logits(probs), temperature)
