"""Fixed outputs for pairs a model need not judge: identical responses and an empty response.

The LMSYS winners overwrote the model's output for such pairs with constants; here the
constants are the training data's own label rates for pairs of the same kind, stored with
each checkpoint (``fixed_outputs.json``, written at training time from the fold's training
rows) and applied after prediction (``infer.fixed_outputs``):

* ``identical``: both responses equal after stripping whitespace (two empty ones included);
  the rate is symmetrised (P(A) = P(B)), as the pair and its swap are the same pair;
* ``empty_a`` / ``empty_b``: one response empty, the other not; both kinds are pooled as
  "the empty side" and mirrored, so ``empty_b`` is ``empty_a`` with A and B exchanged.

A kind is fixed only when the training data held at least ``MIN_PAIRS`` pairs of it (below
that, the model's own prediction is kept and the file records the count).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

FIXED_OUTPUTS_FILE = "fixed_outputs.json"
MIN_PAIRS = 10
KINDS = ("identical", "empty_a", "empty_b")


def _text(turns) -> str:
    if turns is None:
        return ""
    if isinstance(turns, str):
        return turns.strip()
    return "\n".join("" if t is None else str(t) for t in turns).strip()


def pair_kinds(table: pd.DataFrame) -> np.ndarray:
    """Per row ``identical``, ``empty_a``, ``empty_b`` or ``""`` (an ordinary pair)."""
    a = [_text(t) for t in table["response_a"]]
    b = [_text(t) for t in table["response_b"]]
    kinds = np.full(len(table), "", dtype=object)
    for i, (x, y) in enumerate(zip(a, b)):
        if x == y:
            kinds[i] = "identical"
        elif not x:
            kinds[i] = "empty_a"
        elif not y:
            kinds[i] = "empty_b"
    return kinds


@dataclass
class FixedOutputs:
    """Label rates ``[p_a, p_b, p_tie]`` per kind (only kinds with enough training pairs) and
    the training pairs counted per kind."""

    rates: dict[str, list[float]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_table(cls, table: pd.DataFrame, min_pairs: int = MIN_PAIRS) -> "FixedOutputs":
        """The rates of a labelled pair table (``p_a, p_b, p_tie``, optional ``weight``)."""
        kinds = pair_kinds(table)
        labels = table[["p_a", "p_b", "p_tie"]].to_numpy(dtype=float)
        weights = table["weight"].to_numpy(dtype=float) if "weight" in table else np.ones(len(table))
        same = kinds == "identical"
        # the empty side's view: rows with an empty B mirrored into "A is empty"
        empty = np.concatenate([labels[kinds == "empty_a"], labels[kinds == "empty_b"][:, [1, 0, 2]]])
        empty_w = np.concatenate([weights[kinds == "empty_a"], weights[kinds == "empty_b"]])
        out = cls(counts={"identical": int(same.sum()), "empty_a": int((kinds == "empty_a").sum()), "empty_b": int((kinds == "empty_b").sum())})
        if same.sum() >= min_pairs:
            p = np.average(labels[same], axis=0, weights=weights[same])
            side = (p[0] + p[1]) / 2
            out.rates["identical"] = [side, side, p[2]]
        if len(empty) >= min_pairs:
            p = np.average(empty, axis=0, weights=empty_w)
            out.rates["empty_a"] = p.tolist()
            out.rates["empty_b"] = p[[1, 0, 2]].tolist()
        return out

    def apply(self, table: pd.DataFrame, predictions: np.ndarray) -> tuple[np.ndarray, int]:
        """``predictions`` with the fixed rows replaced, and how many rows were replaced."""
        if not self.rates:
            return predictions, 0
        out = np.array(predictions, dtype=np.float64, copy=True)
        kinds = pair_kinds(table)
        replaced = 0
        for kind, rate in self.rates.items():
            rows = kinds == kind
            out[rows] = rate
            replaced += int(rows.sum())
        return out, replaced

    def to_json(self) -> str:
        return json.dumps({"rates": self.rates, "counts": self.counts, "min_pairs": MIN_PAIRS}, indent=2) + "\n"

    @classmethod
    def read(cls, path: str | Path) -> "FixedOutputs | None":
        """The fixed outputs stored at ``path`` (a checkpoint folder or the file); None when absent."""
        path = Path(path)
        if path.is_dir():
            path = path / FIXED_OUTPUTS_FILE
        if not path.exists():
            return None
        from prefkit.models.checks import read_json

        data = read_json(path)
        return cls({k: [float(x) for x in v] for k, v in data.get("rates", {}).items() if k in KINDS}, dict(data.get("counts", {})))

    def support(self, kind: str) -> int:
        """The training pairs behind ``kind``'s rate (both empty kinds share theirs)."""
        if kind == "identical":
            return self.counts.get("identical", 0)
        return self.counts.get("empty_a", 0) + self.counts.get("empty_b", 0)

    @classmethod
    def mean(cls, members: list["FixedOutputs"]) -> "FixedOutputs":
        """Several folds' fixed outputs as one (fold-averaged checkpoints): each kind's rates
        averaged, weighted by the pairs behind them; counts summed."""
        counts = {k: sum(m.counts.get(k, 0) for m in members) for k in KINDS}
        rates = {}
        for kind in KINDS:
            have = [m for m in members if kind in m.rates]
            if have:
                w = np.array([max(m.support(kind), 1) for m in have], dtype=float)
                rates[kind] = np.average(np.array([m.rates[kind] for m in have]), axis=0, weights=w).tolist()
        return cls(rates, counts)


def fixed_outputs_files(train_table: pd.DataFrame) -> dict[str, str]:
    """``{fixed_outputs.json: text}`` for a fold's checkpoint: the label rates of its training
    pairs with identical or empty responses; nothing for tables without pair labels."""
    if not {"response_a", "response_b", "p_a", "p_b", "p_tie"} <= set(train_table.columns):
        return {}
    return {FIXED_OUTPUTS_FILE: FixedOutputs.from_table(train_table).to_json()}
