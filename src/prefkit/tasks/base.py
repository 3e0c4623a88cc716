"""The task interface (see :mod:`prefkit.tasks`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


def row_lengths(seqs, per_row: int = 1) -> np.ndarray:
    """Tokens per row of ``seqs`` holding ``per_row`` adjacent sequences per row."""
    seq_lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    return seq_lengths.reshape(-1, per_row).sum(axis=1)


def rows_seqs(seqs, rows, per_row: int = 1) -> list[list[int]]:
    """The sequences of ``rows`` in order, ``per_row`` each."""
    return [seqs[i * per_row + j] for i in rows for j in range(per_row)]


@dataclass
class Encoded:
    """Rows of a table as model inputs: ``per_row`` token id sequences per row (adjacent in
    ``seqs``: one rendered pair for the pair classifier, the two items of a pair for a
    Siamese scorer), optionally those of the row's swapped version (A and B exchanged),
    targets and weights. A row's sequences always share a batch; its length is their sum."""

    seqs: list[list[int]]
    seqs_swapped: list[list[int]] | None = None
    targets: np.ndarray | None = None  # (rows, task outputs) what the loss compares with
    weights: np.ndarray | None = None  # (rows,) sample weights
    per_row: int = 1

    def __len__(self) -> int:
        return len(self.seqs) // self.per_row

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per row."""
        return row_lengths(self.seqs, self.per_row)

    def row_seqs(self, rows, swapped: bool = False) -> list[list[int]]:
        """The sequences of ``rows`` in order, ``per_row`` each (of the swapped rows when ``swapped``)."""
        return rows_seqs(self.seqs_swapped if swapped else self.seqs, rows, self.per_row)

    def subset(self, rows) -> "Encoded":
        rows = np.asarray(rows, dtype=int)
        return Encoded(
            self.row_seqs(rows),
            None if self.seqs_swapped is None else self.row_seqs(rows, swapped=True),
            None if self.targets is None else self.targets[rows],
            None if self.weights is None else self.weights[rows],
            self.per_row,
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
    config_section: str | None = None  # the run config's section of this task's own settings (in the fingerprint)

    def __init__(self, cfg=None):
        self.cfg = cfg  # the run's RunConfig (None: the task's defaults)

    def loss_function(self, name: str):
        """The training loss called ``name`` (:data:`prefkit.train.losses.LOSSES`), with the
        task's settings bound."""
        from prefkit.train.losses import LOSSES

        return LOSSES[name]

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
    def combine(self, outputs):
        """The model's outputs per sequence (rows * per_row, head outputs) -> outputs per row
        (what the loss and :meth:`predictions` take); a torch tensor in training, a numpy
        array in prediction. One sequence per row: as they are."""
        return outputs

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

    def write_predictions(self, frame: pd.DataFrame, path) -> None:
        """Write ``oof.csv`` / ``test.csv`` (atomically)."""
        from prefkit.predictions import atomic_write_csv

        atomic_write_csv(frame, path)

    def read_predictions(self, path) -> pd.DataFrame:
        return pd.read_csv(path, dtype={"id": str})
