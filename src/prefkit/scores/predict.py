"""Predictions of a saved fit for pairs of its items (``prefkit scores predict``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

PAIR_COLUMNS = (("item_a", "item_b"), ("doc_a", "doc_b"), ("model_a", "model_b"), ("left", "right"))
WINNERS = {"a": 0, "left": 0, "model_a": 0, "b": 1, "right": 1, "model_b": 1, "tie": 2, "draw": 2}


def predict_pairs(scores_dir: str | Path, pairs_file: str | Path) -> tuple[pd.DataFrame, float | None]:
    """(table of item_a, item_b, p_a, p_b, p_tie [, winner], held-out log loss or None).
    Covariates are not in a pairs file, so style-controlled fits predict style-neutral."""
    from prefkit.data.fileio import read_csv_text
    from prefkit.data.report import ReadContext
    from prefkit.scores.report import load_fit

    result = load_fit(scores_dir)
    ctx = ReadContext(pairs_file, "pairs")
    raw = read_csv_text(ctx, allow_skip_lines=False)
    cols = next((c for c in PAIR_COLUMNS if c[0] in raw.columns and c[1] in raw.columns), None)
    if cols is None:
        raise ctx.error("no pair columns: expected item_a/item_b (or doc_a/doc_b, model_a/model_b, left/right)", column="item_a")
    index = pd.Index(result.items)
    sides = []
    for col in cols:
        names = raw[col].astype(str).str.strip()
        pos = index.get_indexer(names)
        if (pos < 0).any():
            row = int(np.flatnonzero(pos < 0)[0])
            raise ctx.error(f"item {names.iloc[row][:60]!r} is not among the fitted items", row=row + 1, column=col)
        sides.append(pos)
    probs = result.predict(sides[0], sides[1])
    out = pd.DataFrame({"item_a": raw[cols[0]].str.strip(), "item_b": raw[cols[1]].str.strip(),
                        "p_a": probs[:, 0], "p_b": probs[:, 1], "p_tie": probs[:, 2]})
    if "winner" not in raw.columns:
        return out, None
    winner = raw["winner"].astype(str).str.strip().str.lower()
    cls = winner.map(WINNERS)
    bad = cls.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ctx.error(f"winner {winner.iloc[row][:40]!r} is not a, b or tie", row=row + 1, column="winner")
    cls = cls.to_numpy(dtype=int)
    out["winner"] = winner
    loss = float(-np.log(np.clip(probs[np.arange(len(cls)), cls], 1e-15, 1)).mean())
    return out, loss
