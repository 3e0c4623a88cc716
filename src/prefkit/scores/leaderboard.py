"""A model leaderboard beside known true strengths (synthetic arenas know them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from prefkit.scores.bt import ScoreFit


def truth_leaderboard(fitted: ScoreFit, truth: dict[str, float]) -> tuple[pd.DataFrame, float]:
    """Fitted scores and intervals beside the true strengths (both centred), best first,
    and the Spearman correlation between them. Items without a true strength are refused."""
    missing = [m for m in fitted.items if m not in truth]
    if missing:
        raise ValueError(f"no true strength for {', '.join(missing[:5])}")
    true = np.array([truth[m] for m in fitted.items], dtype=float)
    table = pd.DataFrame(
        {
            "model": fitted.items,
            "score": fitted.scores,
            "lower": fitted.lower if fitted.lower is not None else np.nan,
            "upper": fitted.upper if fitted.upper is not None else np.nan,
            "true": true - true.mean(),
        }
    )
    table["true_rank"] = table["true"].rank(ascending=False, method="min").astype(int)
    table = table.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table, float(spearmanr(fitted.scores, true).statistic)


def arena_leaderboard(train_csv: str | Path, truth: dict[str, float], l2: float = 0.01) -> tuple[pd.DataFrame, float, ScoreFit]:
    """Davidson Bradley-Terry over the arena's ``model_a``/``model_b`` battles, beside ``truth``.

    A weak prior (``l2``) keeps the fit finite when a small arena has a model that never
    lost or never won; with hundreds of battles per model it moves no score visibly.
    Intervals: sandwich (robust), which measures the spread of the mean-zero scores."""
    from prefkit.scores.bt import fit
    from prefkit.scores.data import load_comparisons
    from prefkit.scores.intervals import sandwich

    comparisons = load_comparisons("kaggle", train_csv)
    fitted = sandwich(comparisons, fit(comparisons, ties="davidson", l2=l2, se=False))
    table, rho = truth_leaderboard(fitted, truth)
    return table, rho, fitted


def leaderboard_lines(table: pd.DataFrame, rho: float, fitted: ScoreFit) -> list[str]:
    """The leaderboard as aligned text lines, with how the intervals were made."""
    width = max(5, table["model"].str.len().max())
    level = f"{fitted.level:.0%}"
    lines = [f"{'rank':>4}  {'model':<{width}}  {'score':>7}  {level + ' interval':>17}  {'true':>6}  {'true rank':>9}"]
    for row in table.itertuples():
        interval = f"[{row.lower:6.2f}, {row.upper:6.2f}]"
        lines.append(f"{row.rank:>4}  {row.model:<{width}}  {row.score:>7.3f}  {interval:>17}  {row.true:>6.2f}  {row.true_rank:>9}")
    lines.append(
        f"Spearman(fitted, true) = {rho:.4f}; {fitted.model} Bradley-Terry over {fitted.n_comparisons:.0f} battles, "
        f"tie parameter {fitted.tie_param:.3f}, {fitted.interval} intervals, scores and true strengths centred"
    )
    return lines
