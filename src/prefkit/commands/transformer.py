"""``prefkit train-transformer`` and ``prefkit predict``: transformer pair classifiers.

Multi-GPU: ``accelerate launch -m prefkit train-transformer -c CONFIG [overrides]``
(one process per GPU, DDP; FSDP through an accelerate config file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from prefkit.cli_app import ConfigOpt, OverridesArg, app, resolve_config
from prefkit.errors import InputError


@app.command("train-transformer")
def train_transformer_cmd(config: ConfigOpt = None, overrides: OverridesArg = None) -> None:
    """Train a transformer pair classifier on every fold (OOF + test predictions, checkpoints).

    Writes runs/<name>/fold_<k>/{checkpoint,oof.csv,test.csv,done.json}, runs/<name>/oof.csv,
    test.csv, config.yaml and train.log. Started again, a run resumes where it stopped."""
    cfg = resolve_config(config, overrides)
    from prefkit.data.folds import folds_for
    from prefkit.data.run_data import load_run_data
    from prefkit.tasks import get_task
    from prefkit.train.engine import train_folds

    pairs, test = load_run_data(cfg)
    folds = folds_for(cfg, pairs)
    result = train_folds(cfg, pairs, folds, test_table=test)
    if result is not None:
        metric = get_task(cfg.task, cfg).metric.replace("_", " ")
        typer.echo(f"OOF {metric} {result.oof_metric:.4f} ({len(result.oof)} rows) -> {result.run_dir}")


@app.command("predict")
def predict_cmd(
    checkpoint: Annotated[str, typer.Argument(help="A checkpoint folder (runs/<name>/fold_<k>/checkpoint), or a run folder: all its folds' checkpoints, averaged as infer.fold_average says.", show_default=False)],
    data: Annotated[str, typer.Argument(help="Pairs to predict: a Kaggle CSV (or a file in --format).", show_default=False)],
    overrides: OverridesArg = None,
    out: Annotated[str, typer.Option("--out", "-o", help="Prediction CSV to write (id, p_a, p_b, p_tie, model, fold).")] = "preds.csv",
    fmt: Annotated[str, typer.Option("--format", help="Data format (as data.format).")] = "kaggle",
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Default: the checkpoint's train.eval_batch_size.")] = None,
    tta: Annotated[Optional[bool], typer.Option("--tta/--no-tta", help="Swap test-time augmentation (default: as trained).")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="cpu or cuda (default: cuda when there is one).")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Model name in the output (default: the run name).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out that prefkit did not write.")] = False,
) -> None:
    """Predict DATA with a saved CHECKPOINT (no training code is loaded).

    Overrides set the inference options (infer.precision=fp16, infer.quantize=8bit,
    infer.devices=cuda:0,cuda:1 infer.multi_device=swap, infer.max_length=1024,
    infer.fold_average=weights, infer.fixed_outputs=false, train.eval_max_tokens=32768)."""
    if not Path(checkpoint).is_dir():
        raise InputError("checkpoint folder not found", file=checkpoint)
    from prefkit.data import read_pairs
    from prefkit.infer.predict import checkpoint_config, predict_file
    from prefkit.models.checks import check_checkpoint, check_device
    from prefkit.models.transformer import CHECKPOINT_META
    from prefkit.rundir import check_output_path

    folds = sorted(Path(checkpoint).glob("fold_*/checkpoint"))  # a run folder: every fold's checkpoint
    checkpoints = folds if folds and not (Path(checkpoint) / CHECKPOINT_META).exists() else [Path(checkpoint)]
    for ckpt in checkpoints:
        check_checkpoint(ckpt)  # before reading the data: a broken checkpoint is one line naming the file
    checkpoint_config(checkpoints[0], overrides)  # a bad override: one line before any work
    device = check_device(device) if device else None
    check_output_path(out, [data, checkpoint], kind="predictions", force=force)
    pairs = read_pairs(data, fmt)
    predict_file(checkpoints, pairs, out, model_name=name, overrides=overrides, device=device, batch_size=batch_size, tta_swap=tta)
