"""Comparisons between items as arrays, built from any prefkit reader.

A :class:`Comparisons` holds one row per comparison (or per aggregated set of votes):
item indices ``i`` (the first-shown side) and ``j``, the outcome ``y`` as probabilities
(win_i, win_j, tie) -- one-hot for single judgments, vote shares for aggregated votes --
and a frequency ``weight`` (weight w counts like the row repeated w times).

Builders (:func:`load_comparisons` dispatches by the format names of ``prefkit read``):

* ``comparisons``: document comparisons (``doc_a``, ``doc_b``, ``winner``, optional
  ``worker_id``) with a document table; items are documents, texts kept for snippets.
* ``votes``: crowd votes (LLMFAO layout); items are the ``left``/``right`` model names.
* ``jsonl``: pairwise JSON lines; items are ``id1``/``id2``, texts ``text1``/``text2``.
* ``kaggle`` (and ``alpaca_eval``, ``rm_gallery`` where they carry model names): items are
  ``model_a``/``model_b``; style covariates from the two responses.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from prefkit.errors import InputError

# Style covariates (side A minus side B), LMArena-like: length and markdown structure,
# each as log1p(a) - log1p(b) so that they are antisymmetric under a swap and unit-free.
STYLE_FEATURES = ("chars", "headers", "list_items", "bold")
CLUSTERS = ("worker", "prompt")


@dataclass
class Comparisons:
    """Pairwise outcomes over ``items`` (see the module notes).

    ``cluster`` (optional, (n,) int): worker or prompt id per row, for clustered intervals.
    ``covariates`` (optional, (n, k) float): features of side i minus side j (style control).
    """

    items: list[str]
    i: np.ndarray
    j: np.ndarray
    y: np.ndarray
    weight: np.ndarray | None = None
    cluster: np.ndarray | None = None
    covariates: np.ndarray | None = None
    covariate_names: list[str] = field(default_factory=list)
    texts: dict[str, str] | None = None

    def __post_init__(self) -> None:
        self.items = [str(x) for x in self.items]
        self.i = np.asarray(self.i, dtype=np.int64).ravel()
        self.j = np.asarray(self.j, dtype=np.int64).ravel()
        n = len(self.i)
        self.y = np.asarray(self.y, dtype=float).reshape(n, 3)
        self.weight = np.ones(n) if self.weight is None else np.asarray(self.weight, dtype=float).ravel()
        if len(self.j) != n or len(self.weight) != n:
            raise InputError(f"comparisons: i, j, y and weight need one row each (got {n}, {len(self.j)}, {len(self.weight)})")
        m = len(self.items)
        if n and (min(self.i.min(), self.j.min()) < 0 or max(self.i.max(), self.j.max()) >= m):
            raise InputError(f"comparisons: item index outside 0..{m - 1}")
        if np.any(self.i == self.j):
            row = int(np.flatnonzero(self.i == self.j)[0]) + 1
            raise InputError(f"comparisons: row {row} compares item {self.items[self.i[row - 1]]!r} with itself")
        if not np.all(np.isfinite(self.y)) or np.any(self.y < 0) or not np.allclose(self.y.sum(axis=1), 1.0, atol=1e-6):
            raise InputError("comparisons: every outcome needs finite (win_i, win_j, tie) probabilities summing to 1")
        if not np.all(np.isfinite(self.weight)) or np.any(self.weight < 0):
            raise InputError("comparisons: weights must be finite and non-negative")
        if self.cluster is not None:
            self.cluster = np.asarray(self.cluster, dtype=np.int64).ravel()
            if len(self.cluster) != n:
                raise InputError("comparisons: cluster needs one entry per row")
        if self.covariates is not None:
            self.covariates = np.asarray(self.covariates, dtype=float).reshape(n, -1)
            if len(self.covariate_names) != self.covariates.shape[1]:
                self.covariate_names = [f"x{k}" for k in range(self.covariates.shape[1])]
        else:
            self.covariate_names = []

    def __len__(self) -> int:
        return len(self.i)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def subset(self, rows) -> Comparisons:
        """The comparisons at ``rows`` (an index or boolean array), same items."""
        rows = np.asarray(rows)
        return replace(
            self,
            i=self.i[rows],
            j=self.j[rows],
            y=self.y[rows],
            weight=self.weight[rows],
            cluster=None if self.cluster is None else self.cluster[rows],
            covariates=None if self.covariates is None else self.covariates[rows],
            covariate_names=list(self.covariate_names),
        )

    def reweighted(self, weight: np.ndarray) -> Comparisons:
        """The same rows with new weights (bootstrap replicates)."""
        return replace(self, weight=np.asarray(weight, dtype=float), covariate_names=list(self.covariate_names))

    def item_counts(self) -> pd.DataFrame:
        """Weighted wins, losses, ties and comparisons per item (vote shares count fractionally)."""
        m, w = self.n_items, self.weight
        wy = self.y * w[:, None]
        wins = np.bincount(self.i, wy[:, 0], m) + np.bincount(self.j, wy[:, 1], m)
        losses = np.bincount(self.i, wy[:, 1], m) + np.bincount(self.j, wy[:, 0], m)
        ties = np.bincount(self.i, wy[:, 2], m) + np.bincount(self.j, wy[:, 2], m)
        return pd.DataFrame({"wins": wins, "losses": losses, "ties": ties, "comparisons": wins + losses + ties})

    def data_hash(self) -> str:
        """A short hash of the items and outcomes (recorded with a fit)."""
        h = hashlib.sha1()
        h.update("\x1f".join(self.items).encode("utf-8", "surrogatepass"))
        for arr in (self.i, self.j, self.y, self.weight, self.covariates):
            if arr is not None:
                h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()[:16]


def from_names(
    first,
    second,
    y,
    weight=None,
    *,
    items: list[str] | None = None,
    cluster=None,
    covariates=None,
    covariate_names=None,
    texts=None,
) -> Comparisons:
    """Comparisons from item names per row (``items`` fixes the order; default: sorted names)."""
    first = pd.Series(first, dtype=object).astype(str).to_numpy()
    second = pd.Series(second, dtype=object).astype(str).to_numpy()
    if items is None:
        items = sorted(set(first) | set(second))
    index = pd.Index(items)
    i, j = index.get_indexer(first), index.get_indexer(second)
    if (i < 0).any() or (j < 0).any():
        bad = first[i < 0][0] if (i < 0).any() else second[j < 0][0]
        raise InputError(f"comparisons: item {bad!r} is not among the fitted items")
    if cluster is not None:
        cluster = pd.factorize(pd.Series(cluster, dtype=object).astype(str))[0]
    return Comparisons(
        list(items), i, j, y, weight, cluster=cluster, covariates=covariates,
        covariate_names=list(covariate_names or []), texts=texts,
    )


def style_covariates(pairs: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Style covariates per pair (side A minus side B, see :data:`STYLE_FEATURES`)."""
    from prefkit.features.pair_features import pair_features

    feats = pair_features(pairs)
    names = [f"logratio_{f}" for f in STYLE_FEATURES]
    return feats[names].to_numpy(dtype=float), names


def from_pair_table(
    pairs: pd.DataFrame,
    *,
    texts: dict[str, str] | None = None,
    cluster: np.ndarray | None = None,
    style: bool = False,
    source: str = "pairs",
) -> Comparisons:
    """Comparisons from a labelled pair table: items from ``item_a``/``item_b`` when
    present, else ``model_a``/``model_b``; unlabelled rows are refused."""
    if "item_a" in pairs.columns and "item_b" in pairs.columns:
        cols = ("item_a", "item_b")
    elif "model_a" in pairs.columns and "model_b" in pairs.columns:
        cols = ("model_a", "model_b")
    else:
        raise InputError("no item names: scores need item_a/item_b or model_a/model_b columns", file=source)
    y = pairs[["p_a", "p_b", "p_tie"]].to_numpy(dtype=float)
    unlabelled = np.isnan(y).any(axis=1)
    if unlabelled.any():
        row = int(np.flatnonzero(unlabelled)[0]) + 1
        raise InputError("unlabelled comparison: scores need an outcome on every row", file=source, row=row)
    same = (pairs[cols[0]].to_numpy() == pairs[cols[1]].to_numpy())
    if same.any():
        row = int(np.flatnonzero(same)[0]) + 1
        raise InputError(f"compares {pairs[cols[0]].iloc[row - 1]!r} with itself", file=source, row=row, column=cols[1])
    cov, names = style_covariates(pairs) if style else (None, None)
    return from_names(
        pairs[cols[0]], pairs[cols[1]], y, pairs["weight"].to_numpy(dtype=float),
        cluster=cluster, covariates=cov, covariate_names=names, texts=texts,
    )


def _raw_column(path: str | Path, fmt: str, column: str, ids: pd.Series, id_column: str | None) -> np.ndarray:
    """One raw CSV column aligned with a pair table's ``id`` (comparison ids or row numbers)."""
    from prefkit.data.fileio import read_csv_text
    from prefkit.data.report import ReadContext

    ctx = ReadContext(path, fmt)
    raw = read_csv_text(ctx)
    if column not in raw.columns:
        raise ctx.error(f"--cluster worker needs a {column!r} column", column=column)
    keys = raw[id_column].str.strip() if id_column and id_column in raw.columns else pd.Series(np.arange(1, len(raw) + 1)).astype(str)
    lookup = pd.Series(raw[column].to_numpy(), index=keys.to_numpy())
    return lookup.reindex(ids.astype(str).to_numpy()).fillna("").to_numpy()


def load_comparisons(
    fmt: str,
    path: str | Path,
    *,
    docs: str | Path | None = None,
    cluster: str | None = None,
    style: bool = False,
    on_bad_row: str = "error",
) -> Comparisons:
    """Read ``path`` in format ``fmt`` (the names of ``prefkit read``) as comparisons.

    ``cluster``: ``"worker"`` (comparisons: ``worker_id``; votes: ``worker``, one row per
    vote) or ``"prompt"`` (the pair table's ``group``: the prompt for chat formats, the
    unordered item pair otherwise). ``style``: style covariates from the response texts.
    """
    from prefkit.data import read_comparisons, read_pairs
    from prefkit.data.kaggle import find_file

    if cluster is not None and cluster not in CLUSTERS:
        raise InputError(f"cluster must be one of {', '.join(CLUSTERS)}, got {cluster!r}")
    path = str(path)
    texts = None
    if fmt == "comparisons":
        if docs is None:
            found = find_file(Path(path).parent, "docs")
            if found is None:
                raise InputError("no document table: pass --docs (looked for docs.csv* beside it)", file=path)
            docs = found
        pairs, items = read_comparisons(path, docs, on_bad_row=on_bad_row)
        texts = dict(zip(items["id"], items["text"]))
        worker = ("worker_id", "comparison_id")
    elif fmt in ("kaggle", "jsonl", "rm_gallery", "alpaca_eval", "votes"):
        kwargs = {"aggregate": cluster != "worker"} if fmt == "votes" else {}
        pairs = read_pairs(path, fmt, on_bad_row=on_bad_row, **kwargs)
        if fmt == "jsonl":
            texts = {}
            for side, col in (("item_a", "response_a"), ("item_b", "response_b")):
                texts.update(zip(pairs[side], (t[0] for t in pairs[col])))
        worker = ("worker", None) if fmt == "votes" else None
    elif fmt == "parquet":  # a pair table written by `prefkit read --out`
        from prefkit.data import read_pairs_parquet

        pairs, worker = read_pairs_parquet(path), None
    else:
        raise InputError(f"scores read comparisons, votes, jsonl, kaggle, alpaca_eval, rm_gallery or parquet, not {fmt!r}")
    groups = None
    if cluster == "prompt":
        groups = pairs["group"].to_numpy()
    elif cluster == "worker":
        if worker is None:
            raise InputError(f"--cluster worker: format {fmt!r} has no worker column", file=path)
        groups = _raw_column(path, fmt, worker[0], pairs["id"], worker[1])
    return from_pair_table(pairs, texts=texts, cluster=groups, style=style, source=path)


# --------------------------------------------------------------------------- simulation


def outcome_probabilities(diff: np.ndarray, nu: float = 0.0) -> np.ndarray:
    """Davidson probabilities (win_i, win_j, tie) for score differences ``diff`` (s_i - s_j);
    ``nu = 0`` is plain Bradley-Terry (no ties)."""
    half = np.asarray(diff, dtype=float) / 2.0
    # Divide through by exp(|d|/2) so that nothing overflows.
    top = np.abs(half)
    a, b, t = np.exp(half - top), np.exp(-half - top), nu * np.exp(-top)
    z = a + b + t
    return np.stack([a / z, b / z, t / z], axis=1)


def simulate_comparisons(
    true_scores,
    i,
    j,
    nu: float = 0.0,
    *,
    home: float = 0.0,
    covariates: np.ndarray | None = None,
    beta=None,
    rng: np.random.Generator | int | None = None,
    items: list[str] | None = None,
) -> Comparisons:
    """Synthetic one-hot outcomes for the pairs (i, j) under Bradley-Terry with Davidson ties
    (tie parameter ``nu``; 0 = no ties), an optional first-shown advantage ``home`` and
    covariate effects ``covariates @ beta`` added to s_i - s_j."""
    rng = np.random.default_rng(rng)
    s = np.asarray(true_scores, dtype=float)
    i, j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
    diff = s[i] - s[j] + home
    names = None
    if covariates is not None:
        covariates = np.asarray(covariates, dtype=float).reshape(len(i), -1)
        diff = diff + covariates @ np.asarray(beta, dtype=float).reshape(-1)
        names = [f"x{k}" for k in range(covariates.shape[1])]
    p = outcome_probabilities(diff, nu)
    u = rng.random(len(i))
    cls = (u[:, None] > np.cumsum(p, axis=1)[:, :2]).sum(axis=1)
    return Comparisons(
        items if items is not None else [f"item{k}" for k in range(len(s))],
        i, j, np.eye(3)[cls], covariates=covariates, covariate_names=names or [],
    )


def random_pairs(n_items: int, n_comparisons: int, rng: np.random.Generator | int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Uniformly random ordered pairs of distinct items."""
    rng = np.random.default_rng(rng)
    i = rng.integers(0, n_items, n_comparisons)
    j = (i + rng.integers(1, n_items, n_comparisons)) % n_items
    return i, j
