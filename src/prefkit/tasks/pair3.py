"""The 3-way pair classifier: P(A wins), P(B wins), P(tie) from one rendered pair."""

from __future__ import annotations

import numpy as np
import pandas as pd

from prefkit.schema import LABELS, SWAP_ORDER, label_matrix
from prefkit.tasks.base import Encoded, Task


class PairClassification(Task):
    name = "pair3"
    head = "pair3"
    loss = "soft_cross_entropy"
    metric = "log_loss"
    output_columns = LABELS

    def encode(self, renderer, table: pd.DataFrame, labels: bool = True, swapped: bool = False) -> Encoded:
        ids, ids_swapped = renderer.render_pairs(table, swapped=swapped)
        if not labels:
            return Encoded(ids, ids_swapped)
        weights = table["weight"].to_numpy(dtype=float) if "weight" in table else np.ones(len(table))
        return Encoded(ids, ids_swapped, label_matrix(table), weights)

    def swap_targets(self, targets: np.ndarray) -> np.ndarray:
        return targets[:, SWAP_ORDER]

    def hard_targets(self, targets: np.ndarray) -> np.ndarray:
        return np.eye(3, dtype=targets.dtype)[targets.argmax(axis=1)]

    def predictions(self, outputs: np.ndarray) -> np.ndarray:
        z = np.asarray(outputs, dtype=np.float64)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def unswap(self, predictions: np.ndarray) -> np.ndarray:
        return np.asarray(predictions)[:, SWAP_ORDER]

    def metrics(self, targets: np.ndarray, predictions: np.ndarray, weights: np.ndarray | None = None) -> dict:
        from prefkit.metrics import accuracy, log_loss

        return {"log_loss": log_loss(targets, predictions, weights), "accuracy": accuracy(targets, predictions, weights)}

    def prediction_frame(self, ids, predictions: np.ndarray, model: str, fold) -> pd.DataFrame:
        from prefkit.predictions import make_predictions

        return make_predictions(ids, predictions, model, fold)

    def plot_oof(self, targets: np.ndarray, predictions: np.ndarray, path, title: str) -> None:
        from prefkit.plots import reliability_diagram

        reliability_diagram(targets, predictions, path, title=title)

    def write_predictions(self, frame: pd.DataFrame, path) -> None:
        from prefkit.predictions import write_predictions

        write_predictions(frame, path)  # validated: the stacker's input format

    def read_predictions(self, path) -> pd.DataFrame:
        from prefkit.predictions import read_predictions

        return read_predictions(path)
