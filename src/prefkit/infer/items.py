"""One score per text from an item scorer's checkpoint (``prefkit score-items``).

The texts go through the one prediction path (:meth:`prefkit.infer.predict.Predictor.outputs`:
length-sorted batches, or packs for decoders), rendered as in training (the prompt beside
the text when the scorer was trained with prompts and the table has a prompt column)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from prefkit.errors import InputError


def score_items(predictor, table: pd.DataFrame, text_column: str = "text", prompt_column: str | None = "prompt",
                progress: bool = False) -> np.ndarray:  # fmt: skip
    """s(prompt, text) of every row of ``table`` with a loaded ``predictor`` (an item scorer's)."""
    task = predictor.task
    if not hasattr(task, "encode_items"):
        raise InputError(f"the checkpoint's task is {task.name!r}: scoring single texts needs task item_scorer", file=predictor.ckpt_dir)
    if text_column not in table:
        raise InputError(f"no text column {text_column!r}; columns: {list(table.columns)}")
    encoded = task.encode_items(predictor.renderer, table, text_column, prompt_column)
    return predictor.outputs(encoded.seqs, progress=progress, desc="score")[:, 0]
