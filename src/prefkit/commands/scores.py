"""``prefkit scores fit|predict``: one score per item from pairwise comparisons (Bradley-Terry
with ties, intervals, style control), and predictions for pairs of fitted items."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from prefkit.cli_app import app
from prefkit.errors import InputError

scores_app = typer.Typer(
    help="Scores from comparisons: Bradley-Terry with ties (Davidson, Rao-Kupper, tie-as-half), intervals, style control.",
    no_args_is_help=True,
)
app.add_typer(scores_app, name="scores")

SCORE_FORMATS = ("comparisons", "votes", "jsonl", "kaggle", "alpaca_eval", "rm_gallery", "parquet")
INTERVALS = ("sandwich", "bootstrap", "hessian", "none")


def _parse_l2(text: str) -> float | str:
    if text == "cv":
        return "cv"
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"--l2 must be a number >= 0 or 'cv', got {text!r}") from None
    if not value >= 0:
        raise InputError(f"--l2 must be a number >= 0 or 'cv', got {text!r}")
    return value


@scores_app.command("fit")
def fit_command(
    fmt: Annotated[str, typer.Argument(metavar="FORMAT", help=f"One of: {', '.join(SCORE_FORMATS)}.", show_default=False)],
    path: Annotated[str, typer.Argument(help="The comparisons file (plain or compressed).", show_default=False)],
    docs: Annotated[Optional[str], typer.Option("--docs", help="comparisons: the document table (default: docs.csv* beside PATH).")] = None,
    ties: Annotated[str, typer.Option("--ties", help="Tie model: davidson, rao_kupper, or half (a tie = half a win).")] = "davidson",
    l2: Annotated[str, typer.Option("--l2", help="L2 prior strength on the scores, or 'cv' (5-fold CV over comparisons).")] = "0",
    home: Annotated[bool, typer.Option("--home", help="Fit an advantage of the first-shown side.")] = False,
    style: Annotated[bool, typer.Option("--style", help="Style control: log length and markdown ratios of the responses as covariates.")] = False,
    interval: Annotated[str, typer.Option("--interval", help="sandwich (robust), bootstrap, hessian (model-based) or none.")] = "sandwich",
    n_boot: Annotated[int, typer.Option("--bootstrap", min=2, help="Bootstrap replicates.")] = 200,
    cluster: Annotated[Optional[str], typer.Option("--cluster", help="Cluster intervals by worker or prompt.")] = None,
    level: Annotated[float, typer.Option("--level", min=0.5, max=0.999, help="Interval coverage.")] = 0.95,
    per_component: Annotated[bool, typer.Option("--per-component", help="Fit a disconnected graph, mean zero in each component.")] = False,
    top: Annotated[int, typer.Option("--top", min=0, help="Print the top and bottom K items (with a text snippet).")] = 10,
    out: Annotated[str, typer.Option("--out", "-o", help="Output folder: scores.csv, scores.png, fit.json, config.yaml.")] = "scores_out",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the CV folds and the bootstrap.")] = 0,
    on_bad_row: Annotated[str, typer.Option("--on-bad-row", help="error: stop at the first bad row; skip: drop and count.")] = "error",
) -> None:
    """Fit one score per item from FORMAT comparisons in PATH; write the table, a plot and the fit."""
    import yaml

    from prefkit.scores.bt import DENSE_SE_LIMIT, TIES, fit
    from prefkit.scores.data import CLUSTERS, load_comparisons
    from prefkit.scores.intervals import bootstrap, sandwich
    from prefkit.scores.report import top_bottom_lines, write_fit

    if fmt not in SCORE_FORMATS:
        raise InputError(f"unknown format {fmt!r}; choose one of {', '.join(SCORE_FORMATS)}")
    if ties not in TIES:
        raise InputError(f"--ties must be one of {', '.join(TIES)}, got {ties!r}")
    if interval not in INTERVALS:
        raise InputError(f"--interval must be one of {', '.join(INTERVALS)}, got {interval!r}")
    if cluster is not None and cluster not in CLUSTERS:
        raise InputError(f"--cluster must be one of {', '.join(CLUSTERS)}, got {cluster!r}")
    if on_bad_row not in ("error", "skip"):
        raise InputError(f"--on-bad-row must be 'error' or 'skip', got {on_bad_row!r}")
    l2_value = _parse_l2(l2)
    options = {
        "format": fmt, "path": path, "docs": docs, "ties": ties, "l2": l2_value, "home": home, "style": style,
        "interval": interval, "bootstrap": n_boot, "cluster": cluster, "level": level,
        "per_component": per_component, "seed": seed, "on_bad_row": on_bad_row,
    }

    comp = load_comparisons(fmt, path, docs=docs, cluster=cluster, style=style, on_bad_row=on_bad_row)
    typer.echo(f"{len(comp)} comparison rows (weight {comp.weight.sum():g}) over {comp.n_items} items; "
               f"ties {float((comp.y[:, 2] * comp.weight).sum() / comp.weight.sum()):.1%}")
    if interval in ("sandwich", "hessian") and comp.n_items > DENSE_SE_LIMIT:
        raise InputError(f"{comp.n_items} items: too many for --interval {interval} (at most {DENSE_SE_LIMIT}); use bootstrap or none")
    result = fit(comp, ties, l2_value, home, style, per_component=per_component, se=interval != "none", level=level, seed=seed)
    if interval == "sandwich":
        sandwich(comp, result, home, style, cluster=cluster is not None, level=level)
    elif interval == "bootstrap":
        bootstrap(comp, result, n_boot, home=home, use_covariates=style, cluster=cluster is not None,
                  level=level, seed=seed, progress=True)
    info = result.summary()
    written = write_fit(result, out, data_hash=comp.data_hash(), extra={"options": options}, title=f"{Path(path).name}: {ties}")
    Path(out, "config.yaml").write_text(yaml.safe_dump(options, sort_keys=False))

    tie_name, tie_value = next(iter(info["tie_parameter"].items()))
    no_ties = ties != "half" and not (comp.y[:, 2] * comp.weight).any()
    tie_text = f"{'no ties in the data: ' if no_ties else ''}{tie_name} = {tie_value:.4g}"
    typer.echo(f"model: Bradley-Terry, ties {ties} ({tie_text}); l2 {result.l2:g}; "
               f"log-likelihood {result.loglik:.2f} ({result.n_iter} Newton steps, converged {result.converged})")
    if home:
        typer.echo(f"first-shown advantage: {result.home:+.4f}")
    for name, b in info["beta"].items():
        typer.echo(f"covariate {name}: {b:+.4f}")
    typer.echo(f"scores: {result.convention}; interval: {result.interval}")
    if top:
        for line in top_bottom_lines(result, top):
            typer.echo(line)
    typer.echo(f"wrote {written['scores']}, {written['plot']}, {written['fit']}")


@scores_app.command("predict")
def predict_command(
    scores_dir: Annotated[str, typer.Argument(help="A folder written by `prefkit scores fit --out`.", show_default=False)],
    pairs_file: Annotated[str, typer.Argument(help="CSV with item_a, item_b (optional winner a/b/tie, or doc_a/doc_b).", show_default=False)],
    out: Annotated[str, typer.Option("--out", "-o", help="Predictions CSV.")] = "preds.csv",
) -> None:
    """P(item_a wins), P(item_b wins) and P(tie) for pairs of fitted items.

    Prints the held-out log loss when the file has outcomes (``winner``)."""
    from prefkit.scores.predict import predict_pairs

    preds, loss = predict_pairs(scores_dir, pairs_file)
    try:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        preds.to_csv(out, index=False)
    except OSError as err:
        raise InputError(f"cannot write: {err.strerror or err}", file=out) from None
    typer.echo(f"{len(preds)} pairs predicted")
    if loss is not None:
        typer.echo(f"log_loss={loss:.5f}")
    typer.echo(f"wrote {out}")


# ``scores design`` and ``scores simulate``: which pairs to compare (prefkit.commands.scores_design).
from prefkit.commands.scores_design import register as _register_design  # noqa: E402

_register_design(scores_app)


@scores_app.command("heldout")
def heldout_command(
    fmt: Annotated[str, typer.Argument(metavar="FORMAT", help=f"One of: {', '.join(SCORE_FORMATS)}.", show_default=False)],
    path: Annotated[str, typer.Argument(help="The comparisons file (plain or compressed).", show_default=False)],
    docs: Annotated[Optional[str], typer.Option("--docs", help="comparisons: the document table (default: docs.csv* beside PATH).")] = None,
    ties: Annotated[Optional[list[str]], typer.Option("--ties", help="Tie model(s) to compare (repeatable); the first is 'bt' on the last line.")] = None,
    l2: Annotated[str, typer.Option("--l2", help="L2 prior strength, or 'cv' (chosen inside each training part).")] = "cv",
    home: Annotated[bool, typer.Option("--home", help="Fit an advantage of the first-shown side.")] = False,
    style: Annotated[bool, typer.Option("--style", help="Style covariates (used for the held-out predictions too).")] = False,
    folds: Annotated[int, typer.Option("--folds", min=2, help="Folds over comparisons.")] = 5,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the folds.")] = 0,
) -> None:
    """Held-out comparison log loss (K folds): Bradley-Terry against the win rate and a constant.

    Last line: heldout_logloss_bt=<v> heldout_logloss_winrate=<v> n_items=<v>."""
    from prefkit.scores.bt import TIES
    from prefkit.scores.data import load_comparisons
    from prefkit.scores.evaluate import heldout_log_loss

    if fmt not in SCORE_FORMATS:
        raise InputError(f"unknown format {fmt!r}; choose one of {', '.join(SCORE_FORMATS)}")
    ties = ties or ["davidson"]
    unknown = [t for t in ties if t not in TIES]
    if unknown:
        raise InputError(f"--ties must be one of {', '.join(TIES)}, got {unknown[0]!r}")
    comp = load_comparisons(fmt, path, docs=docs, style=style)
    out = heldout_log_loss(comp, ties, l2=_parse_l2(l2), home=home, use_covariates=style, folds=folds, seed=seed, progress=True)
    typer.echo(f"{len(comp)} comparison rows over {comp.n_items} items, {folds} folds over comparisons")
    for t in ties:
        typer.echo(f"heldout_logloss_bt_{t}={out[f'bt_{t}']:.5f} (median l2 {out[f'l2_{t}']:g})")
    typer.echo(f"heldout_logloss_constant={out['constant']:.5f}")
    typer.echo(f"heldout_logloss_bt={out[f'bt_{ties[0]}']:.5f} heldout_logloss_winrate={out['win_rate']:.5f} n_items={comp.n_items}")
