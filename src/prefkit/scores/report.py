"""Writing a fit: ``scores.csv`` (the table), ``scores.png`` (scores with intervals),
``fit.json`` (the fit's scalars, the data hash) and reading them back for predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from prefkit.errors import InputError
from prefkit.scores.bt import ScoreFit

LABELLED_LIMIT = 60  # more items than this: a caterpillar plot without names


def scores_plot(table: pd.DataFrame, path: str | Path, title: str = "Scores", truth: pd.Series | None = None) -> Path:
    """Scores with their intervals, best first: one labelled row per item, or a caterpillar
    plot (rank against score) when there are many items. ``truth``: true scores by item."""
    from prefkit.plots import _figure, _save

    t = table.sort_values("score", ascending=False).reset_index(drop=True)
    n = len(t)
    has_ci = t["lower"].notna().all()
    if n <= LABELLED_LIMIT:
        fig = _figure(7.0, max(2.5, 0.22 * n + 1.2))
        ax = fig.add_subplot(111)
        pos = np.arange(n)[::-1]
        if has_ci:
            ax.hlines(pos, t["lower"], t["upper"], color="#1f77b4", lw=1.5)
        ax.plot(t["score"], pos, "o", color="#1f77b4", ms=4, label="fitted")
        if truth is not None:
            ax.plot(truth.reindex(t["item"]).to_numpy(), pos, "x", color="#d62728", ms=5, label="true")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_yticks(pos)
        ax.set_yticklabels([str(x)[:40] for x in t["item"]], fontsize=7)
        ax.set_xlabel("score (log-odds scale, mean zero)")
    else:
        fig = _figure(8.0, 4.5)
        ax = fig.add_subplot(111)
        rank = np.arange(1, n + 1)
        if has_ci:
            ax.vlines(rank, t["lower"], t["upper"], color="#9ecae1", lw=0.8)
        ax.plot(rank, t["score"], ".", color="#1f77b4", ms=2)
        if truth is not None:
            ax.plot(rank, truth.reindex(t["item"]).to_numpy(), ".", color="#d62728", ms=1.5, label="true")
            ax.legend(loc="upper right", fontsize=8)
        ax.set_xlabel("rank")
        ax.set_ylabel("score (log-odds scale, mean zero)")
    interval = t["interval"].iloc[0] if "interval" in t.columns else "none"
    ax.set_title(f"{title} ({n} items; interval: {interval})", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def write_fit(result: ScoreFit, out_dir: str | Path, *, data_hash: str, extra: dict | None = None, title: str = "Scores") -> dict:
    """Write scores.csv, scores.png and fit.json into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create the output folder: {err.strerror or err}", file=out) from None
    table = result.table()
    table.to_csv(out / "scores.csv", index=False)
    scores_plot(table, out / "scores.png", title=title)
    info = {**result.summary(), "data_hash": data_hash, **(extra or {})}
    (out / "fit.json").write_text(json.dumps(info, indent=2) + "\n")
    return {"scores": out / "scores.csv", "plot": out / "scores.png", "fit": out / "fit.json"}


def load_fit(scores_dir: str | Path) -> ScoreFit:
    """A fit written by :func:`write_fit` (enough of it to predict)."""
    folder = Path(scores_dir)
    files = {name: folder / name for name in ("fit.json", "scores.csv")}
    for name, path in files.items():
        if not path.is_file():
            raise InputError(f"no {name} here: expected a folder written by `prefkit scores fit --out`", file=folder)
    try:
        info = json.loads(files["fit.json"].read_text())
        link, tie = info["link"], next(iter(info["tie_parameter"].values()))
        betas = info.get("beta", {})
    except (ValueError, KeyError, StopIteration, AttributeError) as err:
        raise InputError(f"not a fit description ({type(err).__name__}: {err})", file=files["fit.json"]) from None
    table = pd.read_csv(files["scores.csv"], dtype={"item": str}, keep_default_na=False)
    missing = [c for c in ("item", "score", "se") if c not in table.columns]
    if missing:
        raise InputError("missing column", file=files["scores.csv"], column=missing[0])
    return ScoreFit(
        items=table["item"].tolist(),
        scores=table["score"].to_numpy(dtype=float),
        se=pd.to_numeric(table["se"], errors="coerce").to_numpy(dtype=float),
        tie_param=float(tie),
        home=float(info.get("home", 0.0)),
        beta=np.array(list(betas.values()), dtype=float),
        loglik=float(info.get("loglik", np.nan)),
        n_iter=int(info.get("n_iter", 0)),
        converged=bool(info.get("converged", True)),
        model=str(info.get("model", link)),
        link=link,
        covariate_names=list(betas),
        l2=float(info.get("l2", 0.0)),
    )


def snippet(text: str, width: int = 80) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def top_bottom_lines(result: ScoreFit, k: int) -> list[str]:
    """The top and bottom ``k`` items, with a text snippet where texts exist."""
    table = result.table()
    texts = result.texts or {}
    lines = []

    def row(r) -> str:
        ci = f" [{r.lower:+.3f}, {r.upper:+.3f}]" if np.isfinite(r.lower) else ""
        text = f"  {snippet(texts[r.item])}" if r.item in texts else ""
        return f"  {r.rank:>4}  {str(r.item)[:30]:<30} {r.score:+.3f}{ci}{text}"

    lines.append(f"top {min(k, len(table))}:")
    lines += [row(r) for r in table.head(k).itertuples()]
    if len(table) > k:
        lines.append(f"bottom {min(k, len(table) - k)}:")
        lines += [row(r) for r in table.tail(min(k, len(table) - k)).itertuples()]
    return lines
