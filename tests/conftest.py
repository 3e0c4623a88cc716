"""Fixtures shared by the transformer training tests."""

import numpy as np
import pytest

from prefkit.testing.tiny import toy_pairs
from prefkit.schema import LABELS


@pytest.fixture(scope="module")
def data():
    """36 labelled toy pairs in 3 folds, and 6 unlabelled test pairs."""
    pairs = toy_pairs(36, seed=5)
    folds = np.arange(len(pairs)) % 3
    test = toy_pairs(6, seed=9)
    test[list(LABELS)] = np.nan
    test["id"] = [f"t{i}" for i in range(len(test))]
    return pairs, folds, test


class Killed(Exception):
    """Stands for a run killed mid-training (raised by :func:`kill_at`'s hook)."""


def kill_at(step: int):
    """An ``on_step`` hook for ``train_transformer`` that stops the run at ``step``."""

    def hook(fold, current, progress):
        if current == step:
            raise Killed

    return hook
