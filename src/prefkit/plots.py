"""PNG plots: reliability diagram of 3-way predictions, per-fold scores, learning curves.

Figures are drawn with matplotlib's Agg canvas directly (no pyplot, no global backend
change), so plotting works headless and never opens a window.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from prefkit.metrics import CLASS_NAMES, _probs, _targets, calibration_bins, class_ece

PANEL_TITLES = {"a": "A wins", "b": "B wins", "tie": "tie"}
COLOURS = {"a": "#1f77b4", "b": "#d62728", "tie": "#2ca02c"}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def reliability_diagram(labels, probs, path: str | Path, title: str = "Reliability", n_bins: int = 10) -> Path:
    """Write a PNG with one panel per class (A, B, tie): mean predicted probability per bin
    against the observed frequency (marker area ~ count), the diagonal, and a histogram of
    counts below; class-wise ECE in each panel title and their mean in the figure title."""
    p = _probs(probs)
    t = _targets(labels, len(p))
    fig = _figure(13.0, 5.4)
    grid = fig.add_gridspec(2, 3, height_ratios=[3, 1], hspace=0.08, wspace=0.25, left=0.06, right=0.98, top=0.84, bottom=0.1)
    eces = []
    for k, name in enumerate(CLASS_NAMES):
        bins = calibration_bins(t[:, k], p[:, k], n_bins)
        ece = class_ece(t[:, k], p[:, k], n_bins)
        eces.append(ece)
        edges, count = bins["edges"], bins["count"]
        centres = (edges[:-1] + edges[1:]) / 2
        ok = count > 0
        ax = fig.add_subplot(grid[0, k])
        ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect")
        sizes = 15 + 185 * count[ok] / max(1, count.max())
        ax.plot(bins["mean_pred"][ok], bins["observed"][ok], color=COLOURS[name], lw=1.5)
        ax.scatter(bins["mean_pred"][ok], bins["observed"][ok], s=sizes, color=COLOURS[name], alpha=0.8, zorder=3, label="bins")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.tick_params(labelbottom=False)
        ax.grid(alpha=0.3)
        mean_p, obs = float(p[:, k].mean()), float(t[:, k].mean())
        ax.set_title(f"{PANEL_TITLES[name]}: ECE {ece:.3f}\nmean pred {mean_p:.3f}, observed {obs:.3f}", fontsize=10)
        if k == 0:
            ax.set_ylabel("observed frequency")
            ax.legend(loc="upper left", fontsize=8, frameon=False)
        hist = fig.add_subplot(grid[1, k], sharex=ax)
        hist.bar(centres, count, width=(edges[1] - edges[0]) * 0.9, color=COLOURS[name], alpha=0.6)
        hist.set_xlim(0, 1)
        hist.set_xlabel(f"predicted P({PANEL_TITLES[name]})")
        if k == 0:
            hist.set_ylabel("count")
        hist.grid(alpha=0.3)
    mean_ece = float(np.nanmean(eces))
    fig.suptitle(f"{title}  (n={len(p)}, class-wise ECE {mean_ece:.3f})", fontsize=12)
    return _save(fig, path)


def learning_curves_plot(evals_by_fold: dict, path: str | Path, title: str = "Learning curves", metric: str = "log_loss") -> Path:
    """Validation ``metric`` against step, a line per fold, each fold's best evaluation starred;
    beside it, the mean training loss between evaluations when the evaluations carry it.

    ``evals_by_fold``: ``{fold: [{"step", "val_<metric>", ["train_loss"]}, ...]}`` (the
    ``evals`` of each fold's ``done.json``).
    """
    curves = {fold: evals for fold, evals in sorted(evals_by_fold.items()) if evals}
    if not curves:
        raise ValueError("no evaluations to plot")
    with_train = any("train_loss" in e for evals in curves.values() for e in evals)
    fig = _figure(11.5 if with_train else 6.5, 4.2)
    val_ax = fig.add_subplot(1, 2 if with_train else 1, 1)
    train_ax = fig.add_subplot(1, 2, 2, sharey=val_ax) if with_train else None
    for fold, evals in curves.items():
        steps = [e["step"] for e in evals]
        val = [e[f"val_{metric}"] for e in evals]
        best = int(np.argmin(val))
        (line,) = val_ax.plot(steps, val, marker="o", ms=3, lw=1.3, label=f"fold {fold}: best {val[best]:.4f} at {steps[best]}")
        val_ax.plot(steps[best], val[best], marker="*", ms=12, color=line.get_color(), zorder=3)
        if train_ax is not None:
            points = [(e["step"], e["train_loss"]) for e in evals if "train_loss" in e]
            if points:
                train_ax.plot(*zip(*points), marker="o", ms=3, lw=1.3, color=line.get_color(), label=f"fold {fold}")
    val_ax.set_xlabel("optimizer step")
    val_ax.set_ylabel(metric.replace("_", " "))
    val_ax.set_title("validation (the fold's held-out pairs)", fontsize=10)
    val_ax.grid(alpha=0.3)
    val_ax.legend(fontsize=8, frameon=False)
    if train_ax is not None:
        train_ax.set_xlabel("optimizer step")
        train_ax.set_title("training loss (mean since the previous evaluation)", fontsize=10)
        train_ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    return _save(fig, path)
