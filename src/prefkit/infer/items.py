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


def read_text_table(path) -> pd.DataFrame:
    """A table of texts: CSV (plain or compressed), JSONL / JSON list of records, or Parquet;
    every read failure is one line naming the file."""
    from pathlib import Path

    from prefkit.data.fileio import read_csv_text, read_json_or_jsonl, read_parquet_records
    from prefkit.data.report import ReadContext

    ctx = ReadContext(path, "items")
    name = Path(path).name.lower()
    if name.endswith(".parquet"):
        return pd.DataFrame(read_parquet_records(ctx))
    if any(name.endswith(s) for s in (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.xz", ".json.xz")):
        records = [r for _, r in read_json_or_jsonl(ctx)]
        if not all(isinstance(r, dict) for r in records):
            raise InputError("expected JSON records (objects with a text field)", file=path)
        return pd.DataFrame(records)
    return read_csv_text(ctx)


def scored_table(table: pd.DataFrame, scores: np.ndarray, text_column: str, id_column: str | None) -> pd.DataFrame:
    """``id`` (the table's id column, else the row number), ``score``, ``rank`` (1 = best) and the text."""
    ids = table[id_column].astype(str) if id_column and id_column in table else pd.Series(np.arange(len(table)).astype(str))
    out = pd.DataFrame({"id": ids.to_numpy(), "score": scores})
    out["rank"] = out["score"].rank(ascending=False, method="first").astype(int)
    out[text_column] = table[text_column].to_numpy()
    return out
