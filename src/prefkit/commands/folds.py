"""``prefkit synth`` (synthetic arena in the Kaggle layout) and ``prefkit folds make|import``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from prefkit.cli_app import app
from prefkit.data.formats import ITEM_FORMATS, PAIR_FORMATS
from prefkit.errors import InputError

folds_app = typer.Typer(
    help="Cross-validation folds: make them (stratified by label, grouped by prompt) or import a fold map.",
    no_args_is_help=True,
)
app.add_typer(folds_app, name="folds")

FormatOpt = Annotated[
    str,
    typer.Option(
        "--format", help=f"Reader of the train file: {', '.join(PAIR_FORMATS)} (pairs) or {', '.join(ITEM_FORMATS)} (items)."
    ),
]
KeyOpt = Annotated[str, typer.Option("--key", help="Column the map is keyed on: id, or group (one fold per prompt group).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an --out file that is not a fold map prefkit wrote.")]


def _check_out(out: str, inputs: list, force: bool) -> None:
    from prefkit.rundir import check_output_path

    if Path(out).suffix.lower() not in (".csv", ".json"):
        raise InputError(f"--out must end in .csv or .json (got {out!r})")
    check_output_path(out, inputs, kind="fold_map", force=force)


@app.command("synth")
def synth(
    out_dir: Annotated[str, typer.Argument(help="Folder to write train.csv, test.csv, sample_submission.csv, solution.csv, truth.*")],
    n_train: Annotated[int, typer.Option("--n-train", min=1, help="Training pairs.")] = 4000,
    n_test: Annotated[int, typer.Option("--n-test", min=0, help="Test pairs (prompts disjoint from train).")] = 1000,
    n_prompts: Annotated[Optional[int], typer.Option("--n-prompts", min=2, help="Distinct prompts (default: pairs / 4).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same files.")] = 0,
    nu: Annotated[Optional[float], typer.Option("--nu", min=0.0, help="Davidson tie parameter (more = more ties).")] = None,
    length_bias: Annotated[Optional[float], typer.Option("--length-bias", help="Judge preference per unit log length ratio.")] = None,
    position_bias: Annotated[Optional[float], typer.Option("--position-bias", help="Strength added to side A.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Write into a folder that is not a synthetic arena (its files are replaced or kept).")] = False,
) -> None:
    """Write a synthetic arena with a known ground truth (Kaggle layout).

    Prints the Bayes-optimal test log loss next to the class-prior one.
    """
    from prefkit.data.synthetic import write_synthetic_arena

    extra = {k: v for k, v in {"nu": nu, "length_bias": length_bias, "position_bias": position_bias}.items() if v is not None}
    try:
        info = write_synthetic_arena(out_dir, n_train=n_train, n_test=n_test, n_prompts=n_prompts, seed=seed, force=force, **extra)
    except ValueError as err:
        raise InputError(str(err)) from None
    typer.echo(
        f"wrote {out_dir}: {info.n_train} train pairs ({info.n_prompts_train} prompts), "
        f"{info.n_test} test pairs ({info.n_prompts_test} prompts), seed {info.seed}"
    )
    typer.echo(f"tie rate: train {info.tie_rate_train:.3f}, test {info.tie_rate_test:.3f} (expected {info.expected_tie_rate:.3f})")
    if info.n_test:
        typer.echo(
            f"test log loss: Bayes-optimal {info.bayes_log_loss:.4f} (realised {info.bayes_log_loss_realised:.4f}), "
            f"class prior {info.prior_log_loss:.4f}, uniform {info.uniform_log_loss:.4f}"
        )


def _read(train: str, format: str):
    """Pairs, or items (one row per text: each row its own group)."""
    from prefkit.data.formats import read_input

    return read_input(train, format).table


def _keys(pairs, key: str):
    if key not in pairs.columns:
        raise InputError(f"no column {key!r} to key the fold map on (have {', '.join(map(str, pairs.columns))})")
    return pairs[key].astype(str).tolist()


def _print_table(pairs, folds) -> None:
    from prefkit.data.folds import fold_table

    table = fold_table(pairs, folds)
    n_unlabelled = int(table["unlabelled"].iloc[-1])
    labelled = n_unlabelled < int(table["rows"].iloc[-1])
    head = f"{'fold':>5} {'rows':>8} {'groups':>7}"
    if labelled:
        head += f" {'A':>7} {'B':>7} {'tie':>7}" + (f" {'unlab.':>7}" if n_unlabelled else "")
    typer.echo(head)
    for r in table.itertuples(index=False):
        line = f"{r.fold:>5} {r.rows:>8} {r.groups:>7}"
        if labelled:
            line += f" {r.share_a:>7.3f} {r.share_b:>7.3f} {r.share_tie:>7.3f}" + (f" {r.unlabelled:>7}" if n_unlabelled else "")
        typer.echo(line)


@folds_app.command("make")
def folds_make(
    train: Annotated[str, typer.Argument(help="Training file (Kaggle train.csv[.xz|.gz] or a Kaggle folder).")],
    out: Annotated[str, typer.Option("--out", "-o", help="Fold map to write: .csv (id,fold) or .json ({id: fold}).")],
    n_folds: Annotated[int, typer.Option("--n-folds", min=2, help="Number of folds.")] = 5,
    seed: Annotated[int, typer.Option("--seed", help="Shuffle seed of StratifiedGroupKFold.")] = 42,
    format: FormatOpt = "kaggle",
    key: KeyOpt = "id",
    force: ForceOpt = False,
) -> None:
    """Make folds stratified by label and grouped by prompt, and write the fold map.

    Prints fold sizes and label balance per fold.
    """
    from prefkit.data.folds import make_folds, save_fold_map

    _check_out(out, [train], force)
    pairs = _read(train, format)
    keys = _keys(pairs, key)
    folds = make_folds(pairs, n_folds=n_folds, seed=seed)
    save_fold_map(keys, folds, out)
    groups = f"{pairs['group'].nunique()} prompt groups" if "group" in pairs.columns else "no groups"
    typer.echo(f"{len(pairs)} rows, {groups} -> {n_folds} folds (seed {seed}), written to {out}")
    _print_table(pairs, folds)


@folds_app.command("import")
def folds_import(
    fold_map: Annotated[str, typer.Argument(help="Existing fold map: .csv (id,fold) or .json ({id: fold}; ints or labels like A-E).")],
    train: Annotated[str, typer.Option("--train", help="Training file the map is for.")],
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="Write the map again, folds as 0..k-1 (.csv or .json).")] = None,
    format: FormatOpt = "kaggle",
    key: KeyOpt = "id",
    allow_split_groups: Annotated[
        bool, typer.Option("--allow-split-groups", help="Accept a map that puts one prompt group in several folds (a leak).")
    ] = False,
    force: ForceOpt = False,
) -> None:
    """Import an existing fold map and check it against a training file.

    Every row must be in the map; keys not in the data are fine (counted). Fold labels must be
    alike (A-E, 0-4) and one prompt group must stay in one fold. Prints fold sizes and label balance.
    --out writes the map back with folds 0..k-1.
    """
    from prefkit.data.folds import check_groups_kept, import_fold_map, save_fold_map

    if out is not None:
        _check_out(out, [train, fold_map], force)
    pairs = _read(train, format)
    keys = _keys(pairs, key)
    result = import_fold_map(fold_map, keys)
    n_split = check_groups_kept(pairs, result.folds, fold_map, allow=allow_split_groups)
    typer.echo(result.describe())
    if n_split:
        typer.echo(f"warning: {n_split} prompt group(s) are split across folds (accepted: --allow-split-groups)", err=True)
    _print_table(pairs, result.folds)
    if out is not None:
        save_fold_map(keys, result.folds, out)
        typer.echo(f"written to {out}")
