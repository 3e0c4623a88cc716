"""Bradley-Terry scores by maximum likelihood, with ties, weights, an L2 prior, covariates
and a first-shown advantage; Elo and smoothed win-rate baselines.

The model: comparison r between items i (shown first) and j has the linear predictor

    d_r = s_i - s_j + h + beta . x_r

(``h`` only with ``home=True``, ``x_r`` only with ``use_covariates=True``) and outcome
probabilities by the tie model:

* ``davidson``: P(i) : P(j) : P(tie) = e^{d/2} : e^{-d/2} : nu (Davidson 1970; in score
  terms nu sqrt(pi_i pi_j) / (pi_i + pi_j + nu sqrt(pi_i pi_j)) for a tie).
* ``rao_kupper``: P(i) = sigmoid(d - eta), P(j) = sigmoid(-d - eta), P(tie) the rest,
  theta = e^eta >= 1 (Rao & Kupper 1967: P(i) = pi_i / (pi_i + theta pi_j)).
* ``half``: the arena convention, a tie counts as half a win for each side (logistic
  likelihood); predictions put the training tie rate on ties and split the rest by
  sigmoid(d).

Identifiability: scores have mean zero (within each connected component when components
are fitted together), on the natural-log odds scale: s_i - s_j = log odds of i beating j
under Bradley-Terry. The tie parameter is fitted (``log nu`` / ``log eta``).

Solver: Newton (Fisher scoring for Rao-Kupper, where the expected information replaces
the Hessian) with a backtracking line search on the penalised negative log-likelihood.
Comparisons between the same ordered pair collapse to one row of summed outcome counts
first (unordered pairs when there is no position term), so 1M comparisons cost what their
distinct pairs cost. The Newton system is solved densely for up to
:data:`DENSE_LIMIT` parameters and by Jacobi-preconditioned conjugate gradients on the
sparse incidence matrix beyond.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator, cg
from scipy.special import expit, log_expit
from scipy.stats import norm

from prefkit.errors import InputError
from prefkit.scores.data import Comparisons

TIES = ("davidson", "rao_kupper", "half")
DENSE_LIMIT = 200
DENSE_SE_LIMIT = 6000  # parameters for which a dense inverse information is affordable
CONVENTION = "mean zero (natural-log odds scale: s_i - s_j = log odds of i beating j)"
EPS = 1e-300


# --------------------------------------------------------------------------- result


@dataclass
class ScoreFit:
    """Fitted scores. ``scores[k]`` belongs to ``items[k]``; ``predict`` gives
    (P(i wins), P(j wins), P(tie)) for index arrays ``i`` (shown first) and ``j``."""

    items: list[str]
    scores: np.ndarray
    se: np.ndarray
    tie_param: float
    home: float
    beta: np.ndarray
    loglik: float
    n_iter: int
    converged: bool
    model: str
    convention: str = CONVENTION
    link: str = "davidson"  # the tie model used by predict (baselines predict as "half")
    covariate_names: list[str] = field(default_factory=list)
    l2: float = 0.0
    interval: str = "none"
    level: float = 0.95
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    counts: pd.DataFrame | None = None
    component: np.ndarray | None = None
    n_comparisons: float = 0.0
    texts: dict[str, str] | None = None
    theta: np.ndarray | None = field(default=None, repr=False)  # solver parameters (warm starts)

    def predict(self, i, j, x=None) -> np.ndarray:
        """(n, 3) probabilities (i wins, j wins, tie); ``x`` = covariates (i minus j),
        zero (style-neutral) when omitted."""
        i, j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
        d = self.scores[i] - self.scores[j] + self.home
        if x is not None and len(self.beta):
            d = d + np.asarray(x, dtype=float).reshape(len(d), -1) @ self.beta
        return link_probabilities(self.link, d, self.tie_param)

    def log_loss(self, comp: Comparisons, use_covariates: bool = True) -> float:
        """Weighted mean 3-way log loss of these scores on ``comp`` (same item order)."""
        x = comp.covariates if use_covariates and len(self.beta) else None
        p = np.clip(self.predict(comp.i, comp.j, x), 1e-15, 1.0)
        loss = -(comp.y * np.log(p)).sum(axis=1)
        return float(np.average(loss, weights=comp.weight))

    def intervals_from_se(self, level: float = 0.95, method: str = "hessian") -> None:
        """Normal intervals score +- z se."""
        z = norm.ppf(0.5 + level / 2)
        self.level, self.interval = level, method
        self.lower, self.upper = self.scores - z * self.se, self.scores + z * self.se

    def table(self) -> pd.DataFrame:
        """One row per item, best first: score, se, interval, wins/losses/ties, comparisons."""
        lower = self.lower if self.lower is not None else np.full(len(self.items), np.nan)
        upper = self.upper if self.upper is not None else np.full(len(self.items), np.nan)
        df = pd.DataFrame({"item": self.items, "score": self.scores, "se": self.se, "lower": lower, "upper": upper})
        if self.counts is not None:
            df = pd.concat([df, self.counts.reset_index(drop=True)], axis=1)
        df["interval"] = f"{self.interval} {self.level:.0%}" if self.interval != "none" else "none"
        if self.component is not None and len(np.unique(self.component)) > 1:
            df["component"] = self.component
        df.insert(0, "rank", df["score"].rank(ascending=False, method="min").astype(int))
        return df.sort_values(["score", "item"], ascending=[False, True], kind="stable").reset_index(drop=True)

    def summary(self) -> dict:
        """The fit's scalars, JSON-ready (what ``fit.json`` records)."""
        tie_name = {"davidson": "nu", "rao_kupper": "theta", "half": "tie_rate"}[self.link]
        return {
            "model": self.model,
            "link": self.link,
            "tie_parameter": {tie_name: float(self.tie_param)},
            "home": float(self.home),
            "beta": {n: float(b) for n, b in zip(self.covariate_names, self.beta)},
            "l2": float(self.l2),
            "loglik": float(self.loglik),
            "n_comparisons": float(self.n_comparisons),
            "n_items": len(self.items),
            "n_iter": int(self.n_iter),
            "converged": bool(self.converged),
            "convention": self.convention,
            "interval": self.interval,
            "level": float(self.level),
        }


def link_probabilities(link: str, d: np.ndarray, tie_param: float) -> np.ndarray:
    """(n, 3) outcome probabilities for linear predictors ``d`` under a tie model."""
    if link == "davidson":
        logp = _davidson_logp(d, np.log(max(tie_param, EPS)))
        return np.exp(logp)
    if link == "rao_kupper":
        eta = np.log(max(tie_param, 1.0))
        a, b = expit(d - eta), expit(-d - eta)
        return np.stack([a, b, np.clip(1.0 - a - b, 0.0, 1.0)], axis=1)
    if link == "half":
        p = expit(d)
        return np.stack([(1 - tie_param) * p, (1 - tie_param) * (1 - p), np.full_like(p, tie_param)], axis=1)
    raise InputError(f"ties must be one of {', '.join(TIES)}, got {link!r}")


def _davidson_logp(d: np.ndarray, t: float) -> np.ndarray:
    half = np.asarray(d, dtype=float) / 2.0
    log_z = np.logaddexp(np.logaddexp(half, -half), t)
    return np.maximum(np.stack([half - log_z, -half - log_z, np.full_like(half, t) - log_z], axis=1), np.log(EPS))


# --------------------------------------------------------------------------- per-row terms


def _row_terms(link: str, d: np.ndarray, t: float, need_derivatives: bool = True):
    """log p (m, 3) and, if asked, d log p / d d and d log p / d t (each (m, 3), or None
    for the tie derivative when the model has no fitted tie parameter)."""
    if link == "half":
        lp = np.stack([log_expit(d), log_expit(-d), np.zeros_like(d)], axis=1)
        if not need_derivatives:
            return lp, None, None
        p = expit(d)
        dd = np.stack([1 - p, -p, np.zeros_like(d)], axis=1)
        return lp, dd, None
    if link == "davidson":
        lp = _davidson_logp(d, t)
        if not need_derivatives:
            return lp, None, None
        p = np.exp(lp)
        u = (p[:, 0] - p[:, 1]) / 2
        dd = np.stack([0.5 - u, -0.5 - u, -u], axis=1)
        dt = np.stack([-p[:, 2], -p[:, 2], 1 - p[:, 2]], axis=1)
        return lp, dd, dt
    # Rao-Kupper with eta = exp(t) > 0
    eta = np.exp(t)
    a, b = expit(d - eta), expit(-d - eta)
    p_tie = np.maximum(expit(eta - d) - b, EPS)
    lp = np.stack([log_expit(d - eta), log_expit(-d - eta), np.log(p_tie)], axis=1)
    if not need_derivatives:
        return lp, None, None
    a1, b1 = a * (1 - a), b * (1 - b)
    dd = np.stack([1 - a, -(1 - b), -(a1 - b1) / p_tie], axis=1)
    deta = np.stack([-(1 - a), -(1 - b), (a1 + b1) / p_tie], axis=1)
    return lp, dd, deta * eta


# --------------------------------------------------------------------------- design


@dataclass
class _Design:
    """Aggregated rows: items (i, j), summed outcome counts, extra d-columns."""

    i: np.ndarray
    j: np.ndarray
    counts: np.ndarray  # (m, 3) weighted counts (win_i, win_j, tie)
    extra: np.ndarray  # (m, q): home column then covariates
    n_items: int
    link: str
    fit_tie: bool
    row_of: np.ndarray  # original comparison -> aggregated row
    swapped: np.ndarray  # original comparison stored as (j, i)
    home: bool = False

    @property
    def n_params(self) -> int:
        return self.n_items + self.extra.shape[1] + int(self.fit_tie)

    def incidence(self) -> sp.csr_matrix:
        """d = D theta[:-1 or all] as a sparse matrix (m x (n_items + q))."""
        m, n, q = len(self.i), self.n_items, self.extra.shape[1]
        cols = [self.i[:, None], self.j[:, None]] + [np.full((m, 1), n + k) for k in range(q)]
        vals = [np.ones((m, 1)), -np.ones((m, 1))] + [self.extra[:, k : k + 1] for k in range(q)]
        indices = np.hstack(cols).ravel()
        data = np.hstack(vals).ravel()
        indptr = np.arange(0, (2 + q) * m + 1, 2 + q)
        return sp.csr_matrix((data, indices, indptr), shape=(m, n + q))


def _design(comp: Comparisons, link: str, home: bool, use_covariates: bool) -> _Design:
    n = comp.n_items
    wy = comp.y * comp.weight[:, None]
    if link == "half":  # a tie is half a win for each side
        wy = np.stack([wy[:, 0] + wy[:, 2] / 2, wy[:, 1] + wy[:, 2] / 2, np.zeros(len(wy))], axis=1)
    fit_tie = link != "half" and wy[:, 2].sum() > 0
    i, j = comp.i, comp.j
    x = comp.covariates if use_covariates and comp.covariates is not None else None
    if x is not None:  # every comparison keeps its own covariates: no aggregation
        extra = np.hstack([np.ones((len(i), 1)), x]) if home else x
        return _Design(i, j, wy, extra, n, link, fit_tie, np.arange(len(i)), np.zeros(len(i), bool), home)
    swapped = (i > j) if not home else np.zeros(len(i), bool)
    lo, hi = np.where(swapped, j, i), np.where(swapped, i, j)
    wy = np.where(swapped[:, None], wy[:, [1, 0, 2]], wy)
    keys, row_of = np.unique(lo * n + hi, return_inverse=True)
    counts = np.stack([np.bincount(row_of, wy[:, c], len(keys)) for c in range(3)], axis=1)
    extra = np.ones((len(keys), 1)) if home else np.zeros((len(keys), 0))
    return _Design(keys // n, keys % n, counts, extra, n, link, fit_tie, row_of, swapped, home)


# --------------------------------------------------------------------------- objective


class _Problem:
    """Penalised negative log-likelihood over theta = [s (n), home/beta (q), tie (0/1)]."""

    def __init__(self, design: _Design, l2: float, component: np.ndarray):
        self.des = design
        self.l2 = float(l2)
        self.D = design.incidence()
        self.DT = self.D.T.tocsr()
        self.DT_squared = self.DT.copy()
        self.DT_squared.data **= 2
        self._d = None
        self.N = design.counts.sum(axis=1)
        self.n = design.n_items
        self.component = component
        self.comp_size = np.bincount(component).astype(float)

    def split(self, theta):
        # Without ties in the data the tie parameter's MLE is at its boundary (nu = 0, eta = 0).
        t = theta[-1] if self.des.fit_tie else (0.0 if self.des.link == "half" else -np.inf)
        return theta[: self.D.shape[1]], t

    def value(self, theta) -> float:
        """The objective; keeps the linear predictors for :meth:`derivatives` (which may
        reuse them after centring, as d does not change when scores shift together)."""
        lin, t = self.split(theta)
        self._d = d = self.D @ lin
        s = lin[: self.n]
        c = self.des.counts
        if not self.des.fit_tie:  # plain Bradley-Terry: two classes
            self._le = le = log_expit(d)
            ll = c[:, 0] @ le + c[:, 1] @ (le - d)
        else:
            lp, _, _ = _row_terms(self.des.link, d, t, need_derivatives=False)
            ll = (c * lp).sum()
        return float(-ll + 0.5 * self.l2 * s @ s)

    def derivatives(self, theta, reuse_d: bool = False):
        """(f, gradient, Fisher pieces) at theta."""
        lin, t = self.split(theta)
        d = self._d if reuse_d else self.D @ lin
        c = self.des.counts
        s = lin[: self.n]
        pieces = {}
        if not self.des.fit_tie:
            le = self._le if reuse_d else log_expit(d)
            p = np.exp(le)
            ll = c[:, 0] @ le + c[:, 1] @ (le - d)
            grad_d = c[:, 0] - self.N * p
            pieces["w_dd"] = self.N * p * (1 - p)
        else:
            lp, dd, dt = _row_terms(self.des.link, d, t)
            ll = (c * lp).sum()
            p = np.exp(lp)
            grad_d = (c * dd).sum(axis=1)
            pieces["w_dd"] = self.N * (p * dd * dd).sum(axis=1)
            pieces["h_lt"] = self.DT @ (self.N * (p * dd * dt).sum(axis=1))
            pieces["h_tt"] = float((self.N * (p * dt * dt).sum(axis=1)).sum())
        f = float(-ll + 0.5 * self.l2 * s @ s)
        grad = -(self.DT @ grad_d)
        grad[: self.n] += self.l2 * s
        if self.des.fit_tie:
            grad = np.append(grad, -(c * dt).sum())
        return f, grad, pieces

    # The Hessian (Fisher information) plus the null-space term sum_k u_k u_k^T, with u_k the
    # indicator of component k scaled by 1/sqrt(size): positive definite, and the Newton step
    # it gives is orthogonal to every u_k (the gradient is).
    def _null_term(self, v_s):
        sums = np.bincount(self.component, v_s, len(self.comp_size)) / self.comp_size
        return sums[self.component] if self.l2 == 0 else 0.0

    def dense_hessian(self, pieces) -> np.ndarray:
        Dw = self.D.multiply(pieces["w_dd"][:, None]).tocsr()
        H = (self.DT @ Dw).toarray()
        H[: self.n, : self.n] += self.l2 * np.eye(self.n)
        if self.l2 == 0:
            same = self.component[:, None] == self.component[None, :]
            H[: self.n, : self.n] += same / self.comp_size[self.component][:, None]
        if self.des.fit_tie:
            H = np.block([[H, pieces["h_lt"][:, None]], [pieces["h_lt"][None, :], np.array([[pieces["h_tt"]]])]])
        return H

    def solve(self, grad, pieces, rtol: float):
        p = len(grad)
        if p <= DENSE_LIMIT:
            H = self.dense_hessian(pieces)
            try:
                return -np.linalg.solve(H, grad)
            except np.linalg.LinAlgError:
                return -np.linalg.lstsq(H, grad, rcond=None)[0]
        w = pieces["w_dd"]
        n_lin = self.D.shape[1]
        diag = self.DT_squared @ w  # diag(D^T W D)
        diag[: self.n] += self.l2 + (1.0 / self.comp_size[self.component] if self.l2 == 0 else 0.0)
        if self.des.fit_tie:
            diag = np.append(diag, pieces["h_tt"])

        def matvec(v):
            v_lin = v[:n_lin]
            out = self.DT @ (w * (self.D @ v_lin))
            out[: self.n] += self.l2 * v_lin[: self.n] + self._null_term(v_lin[: self.n])
            if self.des.fit_tie:
                out = out + pieces["h_lt"] * v[-1]
                out = np.append(out, pieces["h_lt"] @ v_lin + pieces["h_tt"] * v[-1])
            return out

        op = LinearOperator((p, p), matvec=matvec, dtype=float)
        pre = LinearOperator((p, p), matvec=lambda v: v / np.maximum(diag, 1e-12), dtype=float)
        step, _ = cg(op, -grad, rtol=rtol, maxiter=500, M=pre)
        return step


def _center(theta, n, component):
    s = theta[:n]
    means = np.bincount(component, s) / np.bincount(component)
    theta[:n] = s - means[component]
    return theta


def _newton(problem: _Problem, theta: np.ndarray, max_iter: int, tol: float):
    f, grad, pieces = problem.derivatives(theta)
    scale = max(problem.N.sum(), 1.0)
    for it in range(1, max_iter + 1):
        gnorm = np.linalg.norm(grad)
        step = problem.solve(grad, pieces, rtol=min(0.1, max(np.sqrt(gnorm / scale), 1e-10)))
        decrement = -grad @ step
        if decrement <= 0:  # not a descent direction (inexact solve): steepest descent
            step, decrement = -grad, grad @ grad
        if decrement / 2 < tol * scale:  # converged: this last (tiny, accurate) step is free
            theta = _center(theta + step, problem.n, problem.component)
            return theta, problem.value(theta), it, True
        alpha = 1.0
        while True:
            trial = theta + alpha * step
            f_trial = problem.value(trial)
            if f_trial <= f - 1e-4 * alpha * decrement or alpha < 1e-10:
                break
            alpha /= 2
        if alpha < 1e-10:
            return theta, f, it, False
        theta = _center(trial, problem.n, problem.component)
        f, grad, pieces = problem.derivatives(theta, reuse_d=True)
    return theta, f, max_iter, False


# --------------------------------------------------------------------------- fit


def _initial_tie(link: str, design: _Design) -> float:
    rate = design.counts[:, 2].sum() / max(design.counts.sum(), 1e-12)
    rate = min(max(rate, 1e-6), 1 - 1e-6)
    if link == "davidson":  # P(tie) = nu / (2 + nu) at equal scores
        return float(np.log(2 * rate / (1 - rate)))
    return float(np.log(2 * np.arctanh(rate)))  # Rao-Kupper: P(tie) = tanh(eta / 2)


def fit(
    comp: Comparisons,
    ties: str = "davidson",
    l2: float | str = 0.0,
    home: bool = False,
    use_covariates: bool = False,
    *,
    per_component: bool = False,
    se: bool = True,
    level: float = 0.95,
    max_iter: int = 100,
    tol: float = 1e-12,
    init: ScoreFit | None = None,
    cv_folds: int = 5,
    seed: int = 0,
    component: np.ndarray | None = None,
) -> ScoreFit:
    """Maximum-likelihood (or L2-penalised, MAP) Bradley-Terry scores; see the module notes.

    ``l2``: the prior strength lambda (penalty lambda/2 * sum s^2), or ``"cv"`` to choose it
    by ``cv_folds``-fold cross-validation over comparisons (:func:`choose_l2`).
    ``per_component``: fit a disconnected comparison graph (mean zero within each component)
    instead of refusing it. ``se``: model-based standard errors (inverse information).
    ``component``: the component of each item, given by a caller that checked the graph
    already (bootstrap replicates, whose resampled graph may be thinner).
    """
    from prefkit.scores.intervals import components_or_refuse

    if ties not in TIES:
        raise InputError(f"ties must be one of {', '.join(TIES)}, got {ties!r}")
    if len(comp) == 0 or comp.weight.sum() <= 0:
        raise InputError("no comparisons to fit")
    if use_covariates and comp.covariates is None:
        raise InputError("use_covariates: these comparisons have no covariates")
    if isinstance(l2, str):
        if l2 != "cv":
            raise InputError(f"l2 must be a number or 'cv', got {l2!r}")
        l2 = choose_l2(comp, ties=ties, home=home, use_covariates=use_covariates, folds=cv_folds, seed=seed)[0]
    if l2 < 0:
        raise InputError(f"l2 must be >= 0, got {l2}")
    if component is None:
        component = components_or_refuse(comp, allow=per_component or l2 > 0, need_strong=l2 == 0)
    design = _design(comp, ties, home, use_covariates)
    problem = _Problem(design, l2, component)
    theta = np.zeros(design.n_params)
    if init is not None and init.theta is not None and len(init.theta) == len(theta):
        theta = init.theta.copy()
    else:  # log-odds of smoothed win rates: close to the MLE on most designs (fewer Newton steps)
        theta[: comp.n_items] = _center(win_rate(comp).scores.copy(), comp.n_items, component)
        if design.fit_tie:
            theta[-1] = _initial_tie(ties, design)
    theta, f, n_iter, converged = _newton(problem, theta, max_iter, tol)
    return _result(comp, design, problem, theta, f, n_iter, converged, ties, l2, component, se, level)


def _result(comp, design, problem, theta, f, n_iter, converged, ties, l2, component, se, level) -> ScoreFit:
    n, has_home = comp.n_items, design.home
    lin, t = problem.split(theta)
    home_value = float(lin[n]) if has_home else 0.0
    beta = lin[n + int(has_home) :].copy()
    if ties == "davidson":
        tie_param = float(np.exp(t)) if design.fit_tie else 0.0
    elif ties == "rao_kupper":
        tie_param = float(np.exp(np.exp(t))) if design.fit_tie else 1.0
    else:
        tie_param = float((comp.y[:, 2] * comp.weight).sum() / comp.weight.sum())
    penalty = 0.5 * l2 * float(lin[:n] @ lin[:n])
    result = ScoreFit(
        items=list(comp.items),
        scores=lin[:n].copy(),
        se=np.full(n, np.nan),
        tie_param=tie_param,
        home=home_value,
        beta=beta,
        loglik=-(f - penalty),
        n_iter=n_iter,
        converged=converged,
        model=ties,
        link=ties,
        covariate_names=list(comp.covariate_names) if len(beta) else [],
        l2=float(l2),
        counts=comp.item_counts(),
        component=component,
        n_comparisons=float(comp.weight.sum()),
        texts=comp.texts,
        theta=theta,
    )
    if se and design.n_params <= DENSE_SE_LIMIT:
        cov = information_inverse(problem, theta)
        result.se = np.sqrt(np.clip(np.diag(cov)[:n], 0, None))
        result.intervals_from_se(level, "hessian")
    return result


def information_inverse(problem: _Problem, theta: np.ndarray) -> np.ndarray:
    """The inverse information (penalised Hessian) on the mean-zero subspace: dense, so for
    up to :data:`DENSE_SE_LIMIT` parameters (beyond, use bootstrap intervals)."""
    if len(theta) > DENSE_SE_LIMIT:
        raise InputError(
            f"{len(theta)} parameters: too many for model-based or sandwich intervals (at most {DENSE_SE_LIMIT}); "
            "use --interval bootstrap or none"
        )
    _, _, pieces = problem.derivatives(theta)
    H = problem.dense_hessian(pieces)
    inv = np.linalg.inv(H)
    # Scores are reported with mean zero per component: their covariance is that of the centred
    # scores (without a prior this also removes the null-space term; with one, the level's).
    P = np.eye(len(theta))
    n = problem.n
    same = problem.component[:, None] == problem.component[None, :]
    P[:n, :n] -= same / problem.comp_size[problem.component][None, :]
    return P @ inv @ P.T


def fit_problem(comp: Comparisons, result: ScoreFit, home: bool, use_covariates: bool) -> tuple[_Problem, _Design]:
    """The objective a fit solved (for sandwich intervals)."""
    design = _design(comp, result.model, home, use_covariates)
    return _Problem(design, result.l2, result.component), design


# --------------------------------------------------------------------------- L2 by CV

L2_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)


def fold_labels(n: int, folds: int, seed: int = 0, cluster: np.ndarray | None = None) -> np.ndarray:
    """Random fold per comparison (per cluster when given, so a cluster stays in one fold)."""
    rng = np.random.default_rng(seed)
    if cluster is not None:
        uniq, inverse = np.unique(cluster, return_inverse=True)
        return rng.permutation(np.arange(len(uniq)) % folds)[inverse]
    return rng.permutation(np.arange(n) % folds)


def choose_l2(
    comp: Comparisons,
    ties: str = "davidson",
    home: bool = False,
    use_covariates: bool = False,
    grid=L2_GRID,
    folds: int = 5,
    seed: int = 0,
) -> tuple[float, dict[float, float]]:
    """(best lambda, {lambda: held-out log loss}) by K-fold CV over comparisons."""
    fold = fold_labels(len(comp), folds, seed)
    losses = {}
    warm: dict[int, ScoreFit] = {}
    for lam in sorted(grid, reverse=True):  # strong to weak prior: warm starts stay close
        total, weight = 0.0, 0.0
        for k in range(folds):
            train, test = comp.subset(fold != k), comp.subset(fold == k)
            f = fit(train, ties, lam, home, use_covariates, se=False, init=warm.get(k))
            warm[k] = f
            total += f.log_loss(test) * test.weight.sum()
            weight += test.weight.sum()
        losses[float(lam)] = total / weight
    best = min(losses, key=losses.get)
    return best, losses


# --------------------------------------------------------------------------- baselines


def _baseline_fit(comp: Comparisons, scores: np.ndarray, model: str) -> ScoreFit:
    s = scores - scores.mean()
    tie_rate = float((comp.y[:, 2] * comp.weight).sum() / comp.weight.sum())
    n = comp.n_items
    return ScoreFit(
        items=list(comp.items), scores=s, se=np.full(n, np.nan), tie_param=tie_rate, home=0.0,
        beta=np.zeros(0), loglik=np.nan, n_iter=1, converged=True, model=model, link="half",
        counts=comp.item_counts(), n_comparisons=float(comp.weight.sum()), texts=comp.texts,
    )


def win_rate(comp: Comparisons, alpha: float = 1.0) -> ScoreFit:
    """Smoothed win rates r = (wins + ties/2 + alpha) / (comparisons + 2 alpha); predicts
    logit P(i beats j) = logit r_i - logit r_j (the log5 rule), ties at the training rate."""
    c = comp.item_counts()
    r = (c["wins"] + c["ties"] / 2 + alpha) / (c["comparisons"] + 2 * alpha)
    r = r.to_numpy()
    return _baseline_fit(comp, np.log(r) - np.log1p(-r), "win_rate")


def elo(comp: Comparisons, k: float = 4.0, scale: float = 400.0, initial: float = 1000.0) -> ScoreFit:
    """Online Elo in row order (a tie scores half); ratings converted to the log-odds scale.
    A baseline: sequential by nature, so a plain loop over comparisons."""
    rating = np.full(comp.n_items, float(initial))
    outcome = comp.y[:, 0] + comp.y[:, 2] / 2
    factor = np.log(10.0) / scale
    for i, j, o, w in zip(comp.i.tolist(), comp.j.tolist(), outcome.tolist(), comp.weight.tolist()):
        expected = 1.0 / (1.0 + 10.0 ** ((rating[j] - rating[i]) / scale))
        delta = k * w * (o - expected)
        rating[i] += delta
        rating[j] -= delta
    return _baseline_fit(comp, rating * factor, "elo")
