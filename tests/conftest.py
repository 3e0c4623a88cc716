"""Fixtures shared by the transformer training tests."""

import numpy as np
import pytest

from prefkit.models.tiny import toy_pairs
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
