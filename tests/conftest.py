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


def tiny_feature_project(root, n_train: int, n_test: int, seed: int):
    """A synthetic arena in ``root/data`` and ``root/tiny.yaml``, a config that trains the
    feature model and the stack on it in seconds; returns the config's path."""
    from prefkit.data.synthetic import write_synthetic_arena

    write_synthetic_arena(root / "data", n_train=n_train, n_test=n_test, seed=seed)
    config = root / "tiny.yaml"
    config.write_text(
        f"name: feat\noutput_dir: {root / 'runs'}\ndata:\n  dir: {root / 'data'}\nfolds:\n  n_folds: 3\n"
        "features:\n  num_threads: 1\n  learning_rate: 0.1\n  early_stopping_rounds: 20\n"
        f"stack:\n  inner_folds: 3\n  submission: {root / 'submission.csv'}\n"
    )
    return config


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """A tiny random BERT checkpoint (prefkit.testing.tiny), written once per session."""
    import transformers

    from prefkit.testing.tiny import write_tiny_checkpoint

    transformers.logging.set_verbosity_error()
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_bert") / "bert", "bert")
