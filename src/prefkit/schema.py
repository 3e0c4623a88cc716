"""The internal schema: one table of *pairs* and one of *items*.

Pairs (a pandas DataFrame, one row per comparison):

==============  ===========  ==========================================================
column          dtype        meaning
==============  ===========  ==========================================================
id              str          unique row id (the competition's id where there is one)
group           str          grouping key for folds: a hash of the normalised prompt
prompt          list[str]    user turns, in order
response_a      list[str]    assistant turns of side A, aligned with ``prompt``
response_b      list[str]    assistant turns of side B
p_a, p_b, p_tie float        label as probabilities over A wins / B wins / tie (hard
                             labels are one-hot, soft labels any distribution); NaN
                             in all three for unlabelled rows (a test set)
weight          float        sample weight (e.g. number of votes), default 1
==============  ===========  ==========================================================

Optional pair columns kept when a reader has them: ``model_a``, ``model_b``,
``item_a``, ``item_b`` (ids into an item table), ``n_votes``, ``preference_strength``
(RM-Gallery: the source's strength, NaN where a record has none), ``margin`` (how much
the winner should win by, as TRL's reward data give it).

Items (documents or essays with optional absolute scores): ``id`` (str), ``text`` (str)
and any number of float score columns.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pandas as pd

from prefkit.errors import InputError

LABELS = ("p_a", "p_b", "p_tie")
PAIR_COLUMNS = ("id", "group", "prompt", "response_a", "response_b", *LABELS, "weight")
OPTIONAL_PAIR_COLUMNS = ("model_a", "model_b", "item_a", "item_b", "n_votes", "preference_strength", "margin")
ITEM_COLUMNS = ("id", "text")
# Class index (A, B, tie) after an A/B swap: A and B exchange, ties stay ties. Indexing a
# label or probability matrix with it undoes (or applies) a swap.
SWAP_ORDER = np.array([1, 0, 2])

_WS = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """Lower-case and collapse white space, so trivially different prompts share a group."""
    return _WS.sub(" ", text).strip().lower()


def prompt_group(turns: list[str]) -> str:
    """Stable group key of a (multi-turn) prompt: a short hash of its normalised text."""
    joined = "\x1e".join(normalise_text(t) for t in turns)
    return hashlib.sha1(joined.encode("utf-8", "surrogatepass")).hexdigest()[:16]



def make_pairs(
    ids,
    prompts: list[list[str]],
    responses_a: list[list[str]],
    responses_b: list[list[str]],
    labels: np.ndarray | None = None,
    weights=None,
    groups=None,
    **optional,
) -> pd.DataFrame:
    """Build a pair table in the internal schema (labels: (n, 3) array or None)."""
    n = len(prompts)
    if labels is None:
        labels = np.full((n, 3), np.nan)
    labels = np.asarray(labels, dtype=float).reshape(n, 3)
    df = pd.DataFrame(
        {
            "id": [str(i) for i in ids],
            "group": list(groups) if groups is not None else [prompt_group(p) for p in prompts],
            "prompt": list(prompts),
            "response_a": list(responses_a),
            "response_b": list(responses_b),
            "p_a": labels[:, 0],
            "p_b": labels[:, 1],
            "p_tie": labels[:, 2],
            "weight": np.ones(n) if weights is None else np.asarray(weights, dtype=float),
        }
    )
    for name, values in optional.items():
        if name not in OPTIONAL_PAIR_COLUMNS:
            raise ValueError(f"unknown optional pair column {name!r}")
        df[name] = list(values)
    return df


def has_labels(pairs: pd.DataFrame) -> bool:
    return bool(len(pairs)) and not pairs[list(LABELS)].isna().all(axis=None)


def label_matrix(pairs: pd.DataFrame) -> np.ndarray:
    return pairs[list(LABELS)].to_numpy(dtype=float)


def check_id_table(table: pd.DataFrame, columns: tuple[str, ...], source: str) -> None:
    """``columns`` present, at least one row, ``id`` unique; else an :class:`InputError`
    naming the first problem (pair, item and prediction tables all start so)."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(f"missing column(s) {missing}; expected {list(columns)}", file=source)
    if len(table) == 0:
        raise InputError("no rows", file=source)
    ids = table["id"].astype(str)
    dup = ids.duplicated()
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        raise InputError(f"duplicate id {ids.iloc[row]!r}", file=source, row=row + 1, column="id")


def validate_pairs(pairs: pd.DataFrame, source: str = "pairs", require_labels: bool = False) -> pd.DataFrame:
    """Check a pair table against the schema; raise :class:`InputError` at the first problem."""
    check_id_table(pairs, PAIR_COLUMNS, source)
    for col in ("prompt", "response_a", "response_b"):
        for row, turns in enumerate(pairs[col]):
            if not isinstance(turns, list) or not all(isinstance(t, str) for t in turns):
                raise InputError("expected a list of strings (turns)", file=source, row=row + 1, column=col)
    labels = label_matrix(pairs)
    unlabelled = np.isnan(labels).all(axis=1)
    if require_labels and unlabelled.any():
        row = int(np.flatnonzero(unlabelled)[0])
        raise InputError("label missing", file=source, row=row + 1, column="p_a")
    labelled = ~unlabelled
    bad = labelled & (
        np.isnan(labels).any(axis=1)
        | (labels < 0).any(axis=1)
        | ~np.isclose(np.nan_to_num(labels).sum(axis=1), 1.0, atol=1e-6)
    )
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"label {labels[row].tolist()} is not a probability vector over (A, B, tie)",
            file=source,
            row=row + 1,
            column="p_a",
        )
    w = pairs["weight"].to_numpy(dtype=float)
    if not np.isfinite(w).all() or (w < 0).any():
        row = int(np.flatnonzero(~np.isfinite(w) | (w < 0))[0])
        raise InputError("weight must be a finite number >= 0", file=source, row=row + 1, column="weight")
    return pairs


def validate_items(items: pd.DataFrame, source: str = "items") -> pd.DataFrame:
    check_id_table(items, ITEM_COLUMNS, source)
    for row, text in enumerate(items["text"]):
        if not isinstance(text, str):
            raise InputError("expected text (a string)", file=source, row=row + 1, column="text")
    return items


def turns_text(turns: list[str]) -> str:
    """All turns joined, for features that read a side as one text."""
    return "\n".join(turns)
