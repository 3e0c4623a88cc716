"""The task interface (see :mod:`prefkit.tasks`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class Encoded:
    """Rows of a table as model inputs: one token id sequence per row, optionally the
    sequence of the row's swapped version (A and B exchanged), targets and weights."""

    seqs: list[list[int]]
    seqs_swapped: list[list[int]] | None = None
    targets: np.ndarray | None = None  # (n, task.num_outputs) what the loss compares with
    weights: np.ndarray | None = None  # (n,) sample weights

    def __len__(self) -> int:
        return len(self.seqs)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(s) for s in self.seqs), dtype=np.int64, count=len(self.seqs))

    def subset(self, rows) -> "Encoded":
        rows = np.asarray(rows, dtype=int)
        return Encoded(
            [self.seqs[i] for i in rows],
            None if self.seqs_swapped is None else [self.seqs_swapped[i] for i in rows],
            None if self.targets is None else self.targets[rows],
            None if self.weights is None else self.weights[rows],
        )


class Task:
    """What a learned model predicts; subclasses fill in the class attributes and methods.

    ``head``: the default head (:mod:`prefkit.models.heads`); ``loss``: the default loss
    (:data:`prefkit.train.losses.LOSSES`); ``metric``: the key of :meth:`metrics` that
    early stopping minimises; ``output_columns``: the prediction columns."""

    name: str = ""
    head: str = ""
    loss: str = ""
    metric: str = ""
    output_columns: tuple[str, ...] = ()

    # -- inputs ----------------------------------------------------------------------------
    def renderer(self, tokenizer, render_cfg):
        """What turns rows into token ids under ``render.*`` (pairs by default)."""
        from prefkit.text.render import PairRenderer

        return PairRenderer(tokenizer, render_cfg)

    def encode(self, renderer, table: pd.DataFrame, labels: bool = True, swapped: bool = False) -> Encoded:
        """Token ids (and the swapped version's, when ``swapped``) of every row, with
        targets and weights when ``labels``."""
        raise NotImplementedError

    def swap_targets(self, targets: np.ndarray) -> np.ndarray:
        """Targets of the swapped rows (swap augmentation)."""
        raise NotImplementedError

    def hard_targets(self, targets: np.ndarray) -> np.ndarray:
        """Targets reduced to hard labels (``train.soft_labels=false``); as given by default."""
        return targets

    # -- outputs ---------------------------------------------------------------------------
    def predictions(self, outputs: np.ndarray) -> np.ndarray:
        """Raw model outputs (n, num_outputs) -> predictions (n, len(output_columns))."""
        raise NotImplementedError

    def unswap(self, predictions: np.ndarray) -> np.ndarray:
        """Predictions of swapped inputs, expressed for the original order (swap TTA)."""
        raise NotImplementedError

    def metrics(self, targets: np.ndarray, predictions: np.ndarray, weights: np.ndarray | None = None) -> dict:
        """Scores of predictions against targets, weighted; holds :attr:`metric`."""
        raise NotImplementedError

    def prediction_frame(self, ids, predictions: np.ndarray, model: str, fold) -> pd.DataFrame:
        """Rows of ``oof.csv`` / ``test.csv``."""
        raise NotImplementedError

    def plot_oof(self, targets: np.ndarray, predictions: np.ndarray, path, title: str) -> None:
        """A picture of the OOF predictions against their targets (none by default)."""

    def read_prediction_frame(self, frame: pd.DataFrame) -> np.ndarray:
        return frame[list(self.output_columns)].to_numpy(dtype=float)
