"""Text regression: one text -> one or several absolute scores (essay traits, readability).

The input is an item table: ``id``, the text (``regression.text_column``), the target columns
(``regression.targets``) and optionally ``weight``. Each text is one sequence (head-tail
truncated to ``render.max_length``, never dropped), the head has one output per target, the
loss is the squared error summed over targets, and the engine early-stops on MCRMSE (the
mean over targets of each target's RMSE). Metrics (:func:`prefkit.metrics.absolute_summary`):
RMSE, MCRMSE, Spearman and Pearson per target, and QWK after rounding to the label grid
``regression.label_step`` when set. Texts have no sides: there is no swap augmentation.
Prediction files: ``id, <targets...>, model, fold``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from prefkit.errors import InputError
from prefkit.tasks.base import Encoded, Task


class TextRegression(Task):
    name = "regression"
    loss = "mse"
    metric = "mcrmse"
    config_section = "regression"

    def __init__(self, cfg=None):
        super().__init__(cfg)
        from prefkit.config import RegressionConfig

        self.settings = cfg.regression if cfg is not None else RegressionConfig()
        self.output_columns = tuple(self.settings.targets)
        self.head = f"regression:{len(self.output_columns)}"

    def renderer(self, tokenizer, render_cfg):
        from prefkit.tasks.item_scorer import ItemRenderer

        return ItemRenderer(tokenizer, render_cfg, with_prompt=False)

    def encode(self, renderer, table: pd.DataFrame, labels: bool = True, swapped: bool = False) -> Encoded:
        column = self.settings.text_column
        if column not in table:
            raise InputError(f"no text column {column!r} (regression.text_column); columns: {list(table.columns)}")
        seqs = renderer.render_items([""] * len(table), ["" if pd.isna(t) else str(t) for t in table[column]])
        if not labels:
            return Encoded(seqs)
        missing = [c for c in self.output_columns if c not in table]
        if missing:
            raise InputError(f"no target column(s) {missing} (regression.targets); columns: {list(table.columns)}")
        targets = table[list(self.output_columns)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(targets)
        if bad.any():
            row, col = (int(v[0]) for v in np.nonzero(bad))
            raise InputError("expected a number", row=row + 1, column=self.output_columns[col])
        weights = table["weight"].to_numpy(dtype=float) if "weight" in table else np.ones(len(table))
        return Encoded(seqs, None, targets, weights)

    def swap_targets(self, targets: np.ndarray) -> np.ndarray:
        return targets

    def predictions(self, outputs: np.ndarray) -> np.ndarray:
        return np.asarray(outputs, dtype=np.float64)

    def unswap(self, predictions: np.ndarray) -> np.ndarray:
        return predictions

    def metrics(self, targets: np.ndarray, predictions: np.ndarray, weights: np.ndarray | None = None) -> dict:
        from prefkit.metrics import absolute_summary

        summary = absolute_summary(targets, predictions, self.output_columns, self.settings.label_step)
        return {k: v for k, v in summary.items() if k != "n"}

    def prediction_frame(self, ids, predictions: np.ndarray, model: str, fold) -> pd.DataFrame:
        frame = pd.DataFrame({"id": [str(i) for i in ids]})
        for k, column in enumerate(self.output_columns):
            frame[column] = predictions[:, k]
        frame["model"], frame["fold"] = model, fold
        return frame
