"""``prefkit kernel estimate``: a kernel's inference time on a device profile, and the largest
max length that fits the time limit (:mod:`prefkit.kernel.estimate`)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from prefkit.cli_app import OverridesArg
from prefkit.commands.kernel import kernel_app


@kernel_app.command("estimate")
def estimate_cmd(
    target: Annotated[str, typer.Argument(help="A run folder (runs/<name>), a checkpoint folder, or an experiment file (-c style YAML).", metavar="RUN_OR_CONFIG", show_default=False)],
    overrides: OverridesArg = None,
    test: Annotated[str, typer.Option("--test", help="Test pairs (a Kaggle CSV, or --format), rendered with the run's tokenizer; or a .txt file of token lengths, one a line.", show_default=False)] = ...,
    device: Annotated[str, typer.Option("--device", help="Device profile (src/prefkit/kernel/profiles.yaml): t4x2, a100, h100, h200.")] = "t4x2",
    limit_hours: Annotated[float, typer.Option("--limit-hours", min=0.01, help="The kernel's time limit.")] = 9.0,
    pairs: Annotated[Optional[int], typer.Option("--pairs", min=1, help="Pairs the kernel predicts (e.g. 25000 for the LMSYS hidden test set); default: the test file's, with its length mix.")] = None,
    folds: Annotated[Optional[int], typer.Option("--folds", min=1, help="Fold models predicted one after another (default: the run's checkpoints or folds.n_folds; 1 with infer.fold_average=weights).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="Format of a --test pair file (as data.format).")] = "kaggle",
) -> None:
    """Estimate a kernel's inference time from the test set's token lengths and the device's
    throughput profile. Overrides as for predict (infer.max_length=1024, train.tta_swap=false).

    Last line: <device>_hours=<v> fits=<yes|no> max_length_that_fits=<v>."""
    from prefkit.kernel import estimate as est

    tgt = est.resolve_target(target, overrides)
    lengths, source = est.test_lengths(tgt, test, fmt)
    tta, n_folds = est.kernel_passes(tgt.cfg, tgt.checkpoints)
    if folds is not None:
        n_folds = folds
    profiles = est.load_profiles()
    precision = profiles["devices"][device]["precision"] if device in profiles["devices"] else "fp16"
    result = est.estimate(
        est.model_config_of(tgt.cfg),
        lengths,
        device,
        est.effective_max_length(tgt.cfg),
        tta=tta,
        folds=n_folds,
        pairs=pairs,
        limit_hours=limit_hours,
        weight_bytes=est.weight_bytes_of(tgt.cfg, precision),
        profiles=profiles,
    )
    typer.echo(f"test lengths: {source}; mean {lengths.mean():.0f}, median {int(sorted(lengths)[len(lengths) // 2])}, longest {lengths.max()}")
    for line in est.describe(result):
        typer.echo(line)
    typer.echo(est.format_line(result))
