"""``prefkit absolute run|compare``: absolute scores (essay traits, readability) learned from
labels and from pairs built from them; see :mod:`prefkit.absolute`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from prefkit.cli_app import ConfigOpt, OverridesArg, app

absolute_app = typer.Typer(help="Absolute scores: two-stage (pairs, then labels) scorers; comparative scoring of unseen items.", no_args_is_help=True)
app.add_typer(absolute_app, name="absolute")

DataOpt = Annotated[Optional[str], typer.Option("--data", "-d", help="Data folder: train.csv* (+ fold_map.json); sets data.dir.")]
OutOpt = Annotated[Optional[str], typer.Option("--out", "-o", help="Output folder (default: the config's out).")]


def _config(config, overrides, data, out):
    from prefkit.absolute.config import load_absolute_config

    extra = [f"data.dir={data}"] if data else []
    extra += [f"out={out}"] if out else []
    return load_absolute_config(config, list(overrides or []) + extra)


def _print_metrics(name: str, metrics: dict, targets: list[str]) -> None:
    per_target = " ".join(f"{t}={metrics[f'rmse_{t}']:.4f}" for t in targets if f"rmse_{t}" in metrics)
    if "mcrmse" in metrics:
        typer.echo(f"{name:18s} mcrmse={metrics['mcrmse']:.4f}  rmse per target: {per_target}")
    else:
        typer.echo(f"{name:18s} spearman: " + " ".join(f"{t}={metrics[f'spearman_{t}']:.3f}" for t in targets))


@absolute_app.command("run")
def run_command(
    overrides: OverridesArg = None,
    config: ConfigOpt = None,
    data: DataOpt = None,
    test: Annotated[Optional[str], typer.Option("--test", help="Fit on all of the data, then score this table (same columns).")] = None,
    out: OutOpt = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bars.")] = True,
) -> None:
    """Out-of-fold MCRMSE of the absolute-only head and the two-stage heads (stage 1 on soft-BT
    pairs from the labels, stage 2 warm / stack / fusion); oof.csv, metrics.json, config.yaml."""
    import logging

    from prefkit.absolute.data import load_run_data
    from prefkit.absolute.two_stage import run_frozen

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = _config(config, overrides, data, out)
    if cfg.mode == "finetune":
        from prefkit.absolute.finetune import run_finetune

        run_finetune(cfg, test)
        return
    table, folds, test_table, where = load_run_data(cfg.data, test)
    typer.echo(f"{len(table.items)} items, targets {', '.join(table.targets)}; {where}")
    result = run_frozen(cfg, table, folds, test_table, cfg.out, progress)
    for name, metrics in result.metrics.items():
        _print_metrics(name, metrics, table.targets)
    for name, metrics in result.test_metrics.items():
        _print_metrics(f"test {name}", metrics, table.targets)
    typer.echo(f"outputs in {cfg.out} ({result.seconds:.0f}s)")
    line = f"mcrmse_absolute={result.metrics['absolute']['mcrmse']:.4f} mcrmse_two_stage={result.metrics[result.headline]['mcrmse']:.4f}"
    if result.test_metrics:
        line += (
            f" test_mcrmse_absolute={result.test_metrics['absolute']['mcrmse']:.4f}"
            f" test_mcrmse_two_stage={result.test_metrics[result.headline]['mcrmse']:.4f}"
        )
    typer.echo(line)


@absolute_app.command("compare")
def compare_command(
    overrides: OverridesArg = None,
    config: ConfigOpt = None,
    data: DataOpt = None,
    out: OutOpt = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bars.")] = True,
) -> None:
    """Held-out-fold Spearman of one target for: a regressor on the labels, the soft-BT scalar
    scorer, and 4N comparative scoring (pair model against anchors, BT fit); all-pairs on a subset."""
    import json
    import logging
    from pathlib import Path

    from prefkit.absolute.comparative import run_compare
    from prefkit.absolute.config import save_absolute_config
    from prefkit.absolute.data import load_run_data
    from prefkit.atomic import atomic_write_text

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = _config(config, overrides, data, out)
    table, folds, _, where = load_run_data(cfg.data)
    typer.echo(f"{len(table.items)} items; {where}")
    result = run_compare(cfg, table, folds, progress)
    save_absolute_config(cfg, cfg.out)
    atomic_write_text(Path(cfg.out) / "compare.json", json.dumps(result, indent=2) + "\n")
    mean = result["mean"]
    if "subset_n" in mean:
        typer.echo(
            f"subset of {mean['subset_n']:.0f} unseen items per fold: spearman dense ({mean['subset_comparisons_dense']:.0f} comparisons)="
            f"{mean['subset_spearman_dense']:.4f} 4n={mean['subset_spearman_4n']:.4f} soft_bt={mean['subset_spearman_soft_bt']:.4f}"
        )
    typer.echo(f"target {result['target']}; 4N used {mean['comparisons_4n']:.0f} comparisons for {mean['n_new']:.0f} unseen items per fold")
    typer.echo(f"spearman_regression={mean['spearman_regression']:.4f} spearman_soft_bt={mean['spearman_soft_bt']:.4f} spearman_4n={mean['spearman_4n']:.4f}")
