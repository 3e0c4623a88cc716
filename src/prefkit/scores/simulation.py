"""Score accuracy against the comparison budget, per design, on simulated outcomes.

For each repetition, true scores are drawn (normal, ``score_sd``); each design chooses its
pairs under each budget; Davidson outcomes are simulated for those pairs; a Davidson
Bradley-Terry model is fitted (L2 prior matching the true spread, ``l2 = 1 / score_sd^2``);
the fitted scores are compared with the truth (Spearman correlation, and RMSE of the
centred scores). The same true scores serve every design and budget within a repetition,
so designs are compared on equal footing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from prefkit.scores.data import Comparisons, simulate_comparisons
from prefkit.scores.design import DESIGNS, adaptive_design, anchor_design, random_regular_design

TABLE_COLUMNS = ("design", "budget", "comparisons", "spearman", "spearman_sd", "rmse", "rmse_sd", "reps")


def accuracy(fitted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Spearman correlation and RMSE of centred fitted against centred true scores.

    Fitted scores are rounded to 1e-6 first (far below any standard error): items with the
    same comparisons and outcomes (common in anchor designs) then tie exactly, not by
    solver noise."""
    rho = float(spearmanr(np.round(fitted, 6), truth).statistic)
    rmse = float(np.sqrt(np.mean(((fitted - fitted.mean()) - (truth - truth.mean())) ** 2)))
    return rho, rmse


def concat(parts: Sequence[Comparisons]) -> Comparisons:
    """Simulated comparisons of the same items, one after another."""
    return Comparisons(
        parts[0].items,
        np.concatenate([p.i for p in parts]),
        np.concatenate([p.j for p in parts]),
        np.concatenate([p.y for p in parts]),
        np.concatenate([p.weight for p in parts]),
    )


def design_comparisons(design: str, n_items: int, budget: int, outcomes, l2: float, rng: np.random.Generator) -> Comparisons:
    """Choose pairs by ``design`` under ``budget`` and return their outcomes.

    ``outcomes(i, j)`` makes the comparisons (a simulator, or a judge) and returns them.
    """
    from prefkit.scores.bt import fit

    if design == "anchor":
        return outcomes(*anchor_design(n_items, budget=budget, rng=rng))
    if design == "random":
        return outcomes(*random_regular_design(n_items, budget, rng=rng))
    if design != "adaptive":
        raise ValueError(f"unknown design {design!r}: expected one of {', '.join(DESIGNS)}")
    made: list[Comparisons] = []

    def compare(i, j):
        made.append(outcomes(i, j))
        return made

    def fit_scores(parts):
        result = fit(concat(parts), ties="davidson", l2=l2, se=False)
        return result.scores, result.tie_param

    adaptive_design(n_items, budget, compare, fit_scores, prior_precision=l2, rng=rng)
    return concat(made)


def simulate_design(
    n_items: int = 200,
    budgets: Sequence[int] = (200, 400, 800, 1600),
    designs: Sequence[str] = DESIGNS,
    n_reps: int = 5,
    seed: int = 0,
    nu: float = 0.5,
    score_sd: float = 1.0,
    progress: bool = False,
) -> pd.DataFrame:
    """Mean score accuracy over ``n_reps`` repetitions, one row per (design, budget).

    Columns: design, budget, comparisons (made, mean over repetitions: the anchor design
    stops at 4N), spearman and rmse (means) with their standard deviations, reps.
    """
    from prefkit.scores.bt import fit

    unknown = sorted(set(designs) - set(DESIGNS))
    if unknown:
        raise ValueError(f"unknown design(s) {', '.join(unknown)}: expected {', '.join(DESIGNS)}")
    l2 = 1.0 / score_sd**2
    truths = [np.random.default_rng([seed, rep]).normal(0.0, score_sd, n_items) for rep in range(n_reps)]
    cells = [(rep, design, int(b)) for rep in range(n_reps) for design in designs for b in budgets]
    bar = None
    if progress:
        from prefkit.progress import progress_bar

        bar = progress_bar(total=len(cells), desc="simulate", unit="fit")
    records = []
    for rep, design, budget in cells:
        truth = truths[rep]
        rng = np.random.default_rng([seed, rep, DESIGNS.index(design), budget])

        def outcomes(i, j, truth=truth, rng=rng):
            return simulate_comparisons(truth, i, j, nu=nu, rng=rng)

        comparisons = design_comparisons(design, n_items, budget, outcomes, l2, rng)
        rho, rmse = accuracy(fit(comparisons, ties="davidson", l2=l2, se=False).scores, truth)
        records.append({"design": design, "budget": budget, "comparisons": len(comparisons), "rep": rep, "spearman": rho, "rmse": rmse})
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    table = (
        pd.DataFrame(records)
        .groupby(["design", "budget"], sort=False)
        .agg(
            comparisons=("comparisons", "mean"),
            spearman=("spearman", "mean"),
            spearman_sd=("spearman", "std"),
            rmse=("rmse", "mean"),
            rmse_sd=("rmse", "std"),
            reps=("rep", "count"),
        )
        .reset_index()
    )
    return table[list(TABLE_COLUMNS)]


def simulation_plot(table: pd.DataFrame, path: str | Path, n_items: int | None = None) -> Path:
    """Spearman and RMSE against the budget, one line per design (budget on a log axis)."""
    from prefkit.plots import _figure, _save

    fig = _figure(11.0, 4.2)
    axes = fig.subplots(1, 2)
    budgets = sorted(int(b) for b in table["budget"].unique())
    for design, rows in table.groupby("design", sort=False):
        rows = rows.sort_values("budget")
        for ax, metric in zip(axes, ("spearman", "rmse")):
            label = f"{design} (at most 4N)" if design == "anchor" else design
            ax.errorbar(rows["budget"], rows[metric], yerr=rows[f"{metric}_sd"].fillna(0.0), marker="o", capsize=3, label=label)
    for ax, label in zip(axes, ("Spearman, fitted vs true", "RMSE of centred scores")):
        ax.set_xscale("log")
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.minorticks_off()
        ax.set_xlabel("budget (comparisons)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    items = f", {n_items} items" if n_items else ""
    fig.suptitle(f"Score accuracy against budget per design{items} (bars: sd over repetitions)")
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.14, top=0.87, wspace=0.25)
    return _save(fig, path)
