"""Comparison design: which pairs to compare, given the items and a budget.

Three designs, each returning ``(i, j)`` int arrays of item positions:

* :func:`anchor_design` — every item against a few anchor items (at most 4N comparisons,
  after Liusie, Raina et al., "Efficient LLM comparative assessment: a product of experts
  framework for pairwise comparisons", 2024); anchors also meet each other.
* :func:`random_regular_design` — a random near-regular graph: a union of random
  Hamiltonian cycles (each adds degree 2 to every item and keeps the graph connected), the
  remainder as a random matching, so degrees differ by at most 2.
* :func:`adaptive_pairs` — the most informative next batch given a current fit: the greedy
  D-optimal step, which maximises ``I(d_ij) * Var(s_i - s_j)`` (the Fisher information of one
  Davidson outcome about the score difference, times the current uncertainty of that
  difference; adding pair a = e_i - e_j raises log det of the information by
  log(1 + I * a' Cov a)). :func:`adaptive_design` runs it in batches against an oracle.

Every design is connected when the budget allows it (``budget >= n_items - 1``); a smaller
budget cannot connect the items and is refused.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

ANCHOR_MAX_PER_ITEM = 4  # the design's promise: at most 4N comparisons
# Full covariance (a pseudo-inverse of the N x N information matrix) up to this many items;
# above it the adaptive rule uses the marginal variances only.
DENSE_COVARIANCE_MAX_ITEMS = 3000


def _check_budget(n_items: int, budget: int) -> None:
    if n_items < 2:
        raise ValueError(f"a design needs at least 2 items, got {n_items}")
    if budget < n_items - 1:
        raise ValueError(f"budget {budget} cannot connect {n_items} items: at least {n_items - 1} comparisons are needed")


def n_components(n_items: int, i: np.ndarray, j: np.ndarray) -> int:
    """Number of connected components of the comparison graph (isolated items count)."""
    graph = sparse.coo_matrix((np.ones(len(i)), (np.asarray(i), np.asarray(j))), shape=(n_items, n_items))
    return int(connected_components(graph, directed=False)[0])


def degrees(n_items: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Comparisons per item."""
    return np.bincount(np.asarray(i), minlength=n_items) + np.bincount(np.asarray(j), minlength=n_items)


def _ordered(i: np.ndarray, j: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random shown order (left/right) so a position advantage is spread evenly."""
    swap = rng.random(len(i)) < 0.5
    return np.where(swap, j, i).astype(np.int64), np.where(swap, i, j).astype(np.int64)


# ---------------------------------------------------------------------------------------
# Anchor design
# ---------------------------------------------------------------------------------------


def anchor_design(
    n_items: int,
    anchors_per_item: int = 4,
    n_anchors: int | None = None,
    budget: int | None = None,
    rng: np.random.Generator | int | None = None,
    anchors: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each non-anchor item against ``anchors_per_item`` anchors; anchors in a cycle.

    ``n_anchors`` (default ``2 * anchors_per_item``) anchors are drawn at random; each other
    item meets ``anchors_per_item`` distinct anchors taken round-robin, so every anchor is
    used about equally. The anchors meet each other in a cycle, which keeps the graph
    connected even with one anchor per item. ``budget`` lowers ``anchors_per_item`` to
    ``budget // n_items``. ``anchors``: the anchor positions, when they are given (e.g. items
    with known scores). Uses at most ``anchors_per_item * n_items <= 4N`` comparisons.
    """
    rng = np.random.default_rng(rng)
    if budget is not None:
        _check_budget(n_items, budget)
        anchors_per_item = min(anchors_per_item, max(1, budget // n_items))
    if not 1 <= anchors_per_item <= ANCHOR_MAX_PER_ITEM:
        raise ValueError(f"anchors_per_item must be in 1..{ANCHOR_MAX_PER_ITEM} (the design uses at most 4N comparisons)")
    n_anchors = len(anchors) if anchors is not None else min(n_items - 1, n_anchors or 2 * anchors_per_item)
    anchors_per_item = min(anchors_per_item, n_anchors)
    order = rng.permutation(n_items)
    if anchors is not None:  # given anchors (e.g. items with known scores) first, the others shuffled
        order = np.concatenate([np.asarray(anchors, dtype=np.int64), order[~np.isin(order, anchors)]])
    anchors, others = order[:n_anchors], order[n_anchors:]
    # Row k of others meets anchors k*a, k*a+1, ... (mod n_anchors): distinct while a <= n_anchors.
    slots = (np.arange(len(others))[:, None] * anchors_per_item + np.arange(anchors_per_item)[None, :]) % n_anchors
    i = np.repeat(others, anchors_per_item)
    j = anchors[slots.ravel()]
    if n_anchors > 1:  # a cycle through the anchors (one edge when there are two)
        ring = anchors if n_anchors > 2 else anchors[:1]
        i = np.concatenate([i, ring])
        j = np.concatenate([j, np.roll(anchors, -1)[: len(ring)]])
    assert len(i) <= ANCHOR_MAX_PER_ITEM * n_items, "anchor design over 4N comparisons"
    if budget is not None and len(i) > budget:  # budget N-1 with one anchor each: the ring becomes a path
        i, j = i[:-1], j[:-1]
    return _ordered(i, j, rng)


# ---------------------------------------------------------------------------------------
# Random regular design
# ---------------------------------------------------------------------------------------


def _cycle(perm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return perm, np.roll(perm, -1)


def _pair_keys(i: np.ndarray, j: np.ndarray, n_items: int) -> np.ndarray:
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    return lo.astype(np.int64) * n_items + hi


def random_regular_design(
    n_items: int,
    budget: int,
    rng: np.random.Generator | int | None = None,
    tries: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """``budget`` comparisons, each item in about ``2 * budget / n_items`` of them; connected.

    ``budget // n_items`` random Hamiltonian cycles (the first alone connects the graph;
    each of ``tries`` candidate cycles is drawn and the one repeating fewest pairs kept),
    then the remainder as disjoint pairs of a random matching (or, below N comparisons, a
    random spanning path). Degrees differ by at most 2.
    """
    rng = np.random.default_rng(rng)
    _check_budget(n_items, budget)
    if budget < n_items:  # N-1: a random spanning path
        perm = rng.permutation(n_items)
        return _ordered(perm[:-1], perm[1:], rng)
    n_cycles, remainder = divmod(budget, n_items)
    if n_items == 2:  # a "cycle" of two items is one pair twice
        i, j = np.zeros(budget, dtype=np.int64), np.ones(budget, dtype=np.int64)
        return _ordered(i, j, rng)
    parts_i, parts_j = [], []
    used = np.zeros(0, dtype=np.int64)
    for _ in range(n_cycles):
        best = None
        for _ in range(tries):
            ci, cj = _cycle(rng.permutation(n_items))
            repeats = int(np.isin(_pair_keys(ci, cj, n_items), used).sum())
            if best is None or repeats < best[0]:
                best = (repeats, ci, cj)
            if repeats == 0:
                break
        _, ci, cj = best
        parts_i.append(ci)
        parts_j.append(cj)
        used = np.concatenate([used, _pair_keys(ci, cj, n_items)])
    if remainder:
        # Disjoint pairs (+1 degree each); a second matching when one cannot hold them all.
        need = remainder
        while need:
            perm = rng.permutation(n_items)
            take = min(need, n_items // 2)
            parts_i.append(perm[0 : 2 * take : 2])
            parts_j.append(perm[1 : 2 * take : 2])
            need -= take
    return _ordered(np.concatenate(parts_i), np.concatenate(parts_j), rng)


# ---------------------------------------------------------------------------------------
# Adaptive design
# ---------------------------------------------------------------------------------------


def davidson_information(d: np.ndarray, nu: float = 0.0) -> np.ndarray:
    """Fisher information about the score difference ``d`` of one Davidson outcome.

    P(win) = e^{d/2} / D, P(loss) = e^{-d/2} / D, P(tie) = nu / D with D = e^{d/2} + e^{-d/2} + nu;
    the information is sum_k (dP_k/dd)^2 / P_k, which is p(1 - p) for ``nu = 0``.
    """
    half = np.clip(np.asarray(d, dtype=float) / 2, -350, 350)
    a, b = np.exp(half), np.exp(-half)
    denom = a + b + nu
    # (dP_k/dd)^2 / P_k, with the common 1 / (4 D^3) taken out
    win = a * (2 * b + nu) ** 2
    loss = b * (2 * a + nu) ** 2
    tie = nu * (a - b) ** 2
    return (win + loss + tie) / (4 * denom**3)


def score_covariance(
    n_items: int,
    i: np.ndarray,
    j: np.ndarray,
    scores: np.ndarray,
    nu: float = 0.0,
    weight: np.ndarray | None = None,
    prior_precision: float = 1.0,
) -> np.ndarray:
    """Posterior covariance of the scores: the inverse of (Fisher information + prior).

    The information is a weighted graph Laplacian, singular along the all-ones direction
    (only differences are identified); a Gaussian prior on the scores (precision
    ``prior_precision``: the ``l2`` of :func:`prefkit.scores.bt.fit`, whose penalty is
    l2/2 * sum s^2) makes it invertible and keeps items with few or one-sided comparisons
    uncertain rather than infinitely so.
    """
    i, j = np.asarray(i), np.asarray(j)
    info = davidson_information(scores[i] - scores[j], nu)
    if weight is not None:
        info = info * weight
    lap = sparse.coo_matrix(
        (np.concatenate([info, info, -info, -info]), (np.concatenate([i, j, i, j]), np.concatenate([i, j, j, i]))),
        shape=(n_items, n_items),
    ).toarray()
    lap[np.diag_indices(n_items)] += prior_precision
    return np.linalg.inv(lap)


def candidate_pairs(scores: np.ndarray, neighbours: int = 10, n_random: int = 0, rng=None) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs: every pair for small N, else score-order neighbours plus random pairs.

    Pairs far apart in score carry little information, so for large N only items within
    ``neighbours`` places of each other in the current ranking (and ``n_random`` random
    pairs, for exploration) are scored.
    """
    n = len(scores)
    if n * (n - 1) // 2 <= 50 * n * max(1, neighbours):
        i, j = np.triu_indices(n, k=1)
        return i.astype(np.int64), j.astype(np.int64)
    rng = np.random.default_rng(rng)
    order = np.argsort(scores)
    offsets = np.arange(1, neighbours + 1)
    a = np.repeat(np.arange(n), neighbours)
    b = a + np.tile(offsets, n)
    ok = b < n
    i, j = order[a[ok]], order[b[ok]]
    if n_random:
        ri, rj = rng.integers(0, n, n_random), rng.integers(0, n, n_random)
        ok = ri != rj
        i, j = np.concatenate([i, ri[ok]]), np.concatenate([j, rj[ok]])
    keys = np.unique(_pair_keys(i, j, n))
    return (keys // n).astype(np.int64), (keys % n).astype(np.int64)


def _first_occurrence(endpoints: np.ndarray) -> np.ndarray:
    """True where an item id occurs for the first time in the sequence."""
    first = np.zeros(len(endpoints), dtype=bool)
    first[np.unique(endpoints, return_index=True)[1]] = True
    return first


def _spread_top(ci: np.ndarray, cj: np.ndarray, batch: int, per_item: int, n_items: int) -> np.ndarray:
    """Positions of the best pairs (``ci, cj`` sorted best first), each item at most ``per_item`` times.

    Rounds of a vectorised greedy: a pair is taken when neither of its items appears in a
    better remaining pair (so each round takes a matching, always including the best pair);
    saturated items then leave the pool. Pairs past the cap fill a batch the cap cannot.
    """
    uses = np.zeros(n_items, dtype=np.int64)
    remaining = np.arange(len(ci))
    taken: list[np.ndarray] = []
    n_taken = 0
    while n_taken < batch and len(remaining):
        ends = np.stack([ci[remaining], cj[remaining]], axis=1).ravel()
        free = _first_occurrence(ends).reshape(-1, 2).all(axis=1)
        pick = remaining[free][: batch - n_taken]
        taken.append(pick)
        n_taken += len(pick)
        np.add.at(uses, ci[pick], 1)
        np.add.at(uses, cj[pick], 1)
        remaining = remaining[~free]
        remaining = remaining[(uses[ci[remaining]] < per_item) & (uses[cj[remaining]] < per_item)]
    chosen = np.concatenate(taken) if taken else np.zeros(0, dtype=np.int64)
    if n_taken < batch:
        chosen = np.r_[chosen, np.setdiff1d(np.arange(len(ci)), chosen)[: batch - n_taken]]
    return np.sort(chosen)


def adaptive_pairs(
    scores: np.ndarray,
    batch: int,
    i: np.ndarray | None = None,
    j: np.ndarray | None = None,
    se: np.ndarray | None = None,
    nu: float = 0.0,
    per_item: int = 1,
    neighbours: int = 10,
    prior_precision: float = 1.0,
    rng: np.random.Generator | int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``batch`` most informative next pairs given current ``scores``.

    Each candidate pair is scored by ``I(s_i - s_j) * Var(s_i - s_j)`` (see the module
    docstring). The variance comes from the comparisons made so far (``i``, ``j``: the full
    covariance up to :data:`DENSE_COVARIANCE_MAX_ITEMS` items) or, without them, from the
    standard errors ``se``. Within a batch each item appears at most ``per_item`` times, so a
    batch is spread over items rather than spent on one uncertain item before a refit.
    Ties between equal criteria are broken at random.
    """
    rng = np.random.default_rng(rng)
    scores = np.asarray(scores, dtype=float)
    n = len(scores)
    ci, cj = candidate_pairs(scores, neighbours=neighbours, n_random=10 * batch, rng=rng)
    if i is not None and j is not None and len(i) and n <= DENSE_COVARIANCE_MAX_ITEMS:
        cov = score_covariance(n, i, j, scores, nu=nu, prior_precision=prior_precision)
        var_diff = cov[ci, ci] + cov[cj, cj] - 2 * cov[ci, cj]
    elif se is not None:
        var = np.asarray(se, dtype=float) ** 2
        var_diff = var[ci] + var[cj]
    else:
        raise ValueError("adaptive_pairs needs the comparisons so far (i, j) or standard errors (se)")
    gain = np.log1p(davidson_information(scores[ci] - scores[cj], nu) * var_diff)
    order = np.lexsort((rng.random(len(gain)), -gain))
    ci, cj = ci[order], cj[order]
    chosen = _spread_top(ci, cj, batch, per_item, n)
    return _ordered(ci[chosen], cj[chosen], rng)


def adaptive_design(
    n_items: int,
    budget: int,
    compare: Callable[[np.ndarray, np.ndarray], object],
    fit_scores: Callable[[object], tuple[np.ndarray, float]],
    n_batches: int = 8,
    start: int | None = None,
    prior_precision: float = 1.0,
    rng: np.random.Generator | int | None = None,
) -> tuple[np.ndarray, np.ndarray, object]:
    """Spend ``budget`` comparisons in batches, each chosen by :func:`adaptive_pairs`.

    Starts from a random spanning cycle (``start`` comparisons, default N; a path when the
    budget is below N) so the first fit is connected, then splits the rest into
    ``n_batches`` batches. ``compare(i, j)`` makes the comparisons and returns the
    comparisons made so far (any object); ``fit_scores(that)`` returns (scores, tie
    parameter nu); fit it with ``l2 = prior_precision`` so the design's uncertainty
    matches the fit's. Returns the pairs and the last object ``compare`` returned.
    """
    rng = np.random.default_rng(rng)
    _check_budget(n_items, budget)
    start = min(budget, start or n_items)
    i, j = random_regular_design(n_items, start, rng=rng)
    made = compare(i, j)
    remaining = budget - len(i)
    n_batches = max(1, min(n_batches, remaining))
    sizes = np.diff(np.linspace(0, remaining, n_batches + 1).round().astype(int))
    for size in sizes[sizes > 0]:
        scores, nu = fit_scores(made)
        per_item = max(1, int(np.ceil(2 * size / n_items)))
        bi, bj = adaptive_pairs(
            scores, int(size), i=i, j=j, nu=nu, per_item=per_item, prior_precision=prior_precision, rng=rng
        )
        made = compare(bi, bj)
        i, j = np.concatenate([i, bi]), np.concatenate([j, bj])
    return i, j, made


DESIGNS = ("anchor", "random", "adaptive")
