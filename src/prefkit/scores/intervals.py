"""Intervals for fitted scores, and the comparison graph's connectivity.

* **Sandwich** (robust): cov = H^+ M H^+ with H the information of the fit (on the
  mean-zero subspace) and M the sum of outer products of per-comparison score
  contributions -- or of per-cluster sums (worker, prompt), scaled by K / (K - 1).
* **Bootstrap**: refits on comparisons resampled with replacement (as weights), or on
  resampled clusters; percentile intervals, se = the replicates' standard deviation.
* **Connectivity**: scores in different connected components of the comparison graph are
  not comparable; :func:`components_or_refuse` reports them instead of merging them, and
  (without a prior) refuses a graph whose wins do not connect every item both ways, where
  maximum-likelihood scores do not exist (an item that never loses has score +inf).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from prefkit.errors import InputError
from prefkit.scores.data import Comparisons

SWAP = np.array([1, 0, 2])


def graph_components(comp: Comparisons) -> tuple[int, np.ndarray]:
    """(number of connected components, component label per item) of the comparison graph."""
    n = comp.n_items
    adj = sp.coo_matrix((np.ones(len(comp)), (comp.i, comp.j)), shape=(n, n))
    return connected_components(adj, directed=False)


def describe_components(comp: Comparisons, labels: np.ndarray, limit: int = 5) -> str:
    sizes = np.bincount(labels)
    order = np.argsort(-sizes, kind="stable")
    shown = ", ".join(str(int(sizes[k])) for k in order[:limit]) + (", ..." if len(sizes) > limit else "")
    smallest = order[-1]
    names = [comp.items[k] for k in np.flatnonzero(labels == smallest)[:3]]
    return f"{len(sizes)} components of sizes {shown} (smallest holds {', '.join(repr(x) for x in names)})"


def components_or_refuse(comp: Comparisons, *, allow: bool, need_strong: bool) -> np.ndarray:
    """Component label per item; refuses (InputError, one line) a disconnected graph unless
    ``allow``, and with ``need_strong`` a graph where the MLE does not exist."""
    n_comp, labels = graph_components(comp)
    if n_comp > 1 and not allow:
        raise InputError(
            f"the comparison graph is disconnected: {describe_components(comp, labels)}; scores of different "
            "components are not comparable: fit them per component (--per-component) or add comparisons linking them"
        )
    if need_strong:
        wy = comp.y * comp.weight[:, None]
        beat = wy[:, 0] + wy[:, 2] > 0  # i won or tied: an edge j -> i
        lost = wy[:, 1] + wy[:, 2] > 0
        src = np.concatenate([comp.j[beat], comp.i[lost]])
        dst = np.concatenate([comp.i[beat], comp.j[lost]])
        n = comp.n_items
        adj = sp.coo_matrix((np.ones(len(src)), (src, dst)), shape=(n, n))
        n_strong, strong = connected_components(adj, directed=True, connection="strong")
        if n_strong > n_comp:
            sizes = np.bincount(strong)
            k = int(np.argmin(sizes))
            names = ", ".join(repr(comp.items[x]) for x in np.flatnonzero(strong == k)[:3])
            raise InputError(
                "maximum-likelihood scores do not exist: some items never lose (or never win) against the rest "
                f"of their component ({n_strong} groups, e.g. {names}); add a prior with --l2 (a number or cv)"
            )
    return labels


# --------------------------------------------------------------------------- sandwich


def _row_gradients(comp: Comparisons, result, home: bool, use_covariates: bool):
    """Per comparison and class: (sparse gradient rows G (n x p) per class, class weights
    w * y (n x 3)) of log p_c with respect to the fit's parameters."""
    from prefkit.scores.bt import _row_terms, fit_problem

    problem, design = fit_problem(comp, result, home, use_covariates)
    lin, t = problem.split(result.theta)
    _, dd, dt = _row_terms(design.link, problem.D @ lin, t)
    rows = problem.D[design.row_of]
    y = np.where(design.swapped[:, None], comp.y[:, SWAP], comp.y)
    if design.link == "half":
        y = np.stack([y[:, 0] + y[:, 2] / 2, y[:, 1] + y[:, 2] / 2, np.zeros(len(y))], axis=1)
    grads = []
    for c in range(3):
        g = rows.multiply(dd[design.row_of, c][:, None]).tocsr()
        if design.fit_tie:
            g = sp.hstack([g, sp.csr_matrix(dt[design.row_of, c][:, None])]).tocsr()
        grads.append(g)
    return problem, grads, y * comp.weight[:, None]


def sandwich_cov(comp: Comparisons, result, home: bool = False, use_covariates: bool = False, cluster: bool = False) -> np.ndarray:
    """The robust covariance of all parameters (scores first); clustered by ``comp.cluster``
    when ``cluster``."""
    from prefkit.scores.bt import information_inverse

    problem, grads, wy = _row_gradients(comp, result, home, use_covariates)
    if cluster:
        if comp.cluster is None:
            raise InputError("clustered intervals need a cluster per comparison (--cluster worker|prompt)")
        total = sum(g.multiply(wy[:, c][:, None]) for c, g in enumerate(grads)).tocsr()
        k = int(comp.cluster.max()) + 1
        member = sp.csr_matrix((np.ones(len(comp)), (comp.cluster, np.arange(len(comp)))), shape=(k, len(comp)))
        scores = (member @ total).toarray()
        meat = scores.T @ scores * (k / max(k - 1, 1))
    else:
        meat = sum((g.T @ g.multiply(wy[:, c][:, None])).toarray() for c, g in enumerate(grads))
    bread = information_inverse(problem, result.theta)
    return bread @ meat @ bread


def sandwich(comp: Comparisons, result, home: bool = False, use_covariates: bool = False, cluster: bool = False, level: float = 0.95):
    """Set robust standard errors and normal intervals on ``result`` (in place; returned)."""
    cov = sandwich_cov(comp, result, home, use_covariates, cluster)
    n = comp.n_items
    result.se = np.sqrt(np.clip(np.diag(cov)[:n], 0, None))
    result.intervals_from_se(level, "sandwich clustered" if cluster else "sandwich")
    return result


# --------------------------------------------------------------------------- bootstrap


def bootstrap_weights(comp: Comparisons, rng: np.random.Generator, cluster: bool) -> np.ndarray:
    """One replicate's weights: comparisons (or whole clusters) drawn with replacement."""
    n = len(comp)
    if cluster:
        if comp.cluster is None:
            raise InputError("clustered bootstrap needs a cluster per comparison (--cluster worker|prompt)")
        k = int(comp.cluster.max()) + 1
        times = np.bincount(rng.integers(0, k, k), minlength=k)
        return comp.weight * times[comp.cluster]
    return comp.weight * np.bincount(rng.integers(0, n, n), minlength=n)


def bootstrap(
    comp: Comparisons,
    result,
    n_boot: int = 200,
    *,
    home: bool = False,
    use_covariates: bool = False,
    cluster: bool = False,
    level: float = 0.95,
    seed: int = 0,
    progress: bool = False,
):
    """Set bootstrap standard errors and percentile intervals on ``result`` (in place;
    returned). Replicates refit from the full fit's parameters with its prior and tie model."""
    from prefkit.progress import progress_bar
    from prefkit.scores.bt import fit

    rng = np.random.default_rng(seed)
    draws = np.empty((n_boot, comp.n_items))
    for b in progress_bar(range(n_boot), desc="bootstrap", disable=not progress):
        replicate = comp.reweighted(bootstrap_weights(comp, rng, cluster))
        refit = fit(
            replicate, result.model, result.l2, home, use_covariates,
            se=False, init=result, component=result.component, max_iter=50,
        )
        draws[b] = refit.scores
    tail = (1 - level) / 2
    result.se = draws.std(axis=0, ddof=1)
    result.lower, result.upper = np.quantile(draws, [tail, 1 - tail], axis=0)
    result.level = level
    result.interval = f"bootstrap{' clustered' if cluster else ''} percentile ({n_boot})"
    return result
