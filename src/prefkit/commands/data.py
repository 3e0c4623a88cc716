"""``prefkit read``: read a data file in any supported format, validate it, summarise it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from prefkit.cli_app import app
from prefkit.data.formats import FORMATS, get_format
from prefkit.errors import InputError


ColumnsOpt = Annotated[
    Optional[str],
    typer.Option(
        "--columns",
        help="pairs: the file's columns, e.g. prompt=input,a=output_1,b=output_2,label=label (also id, model_a, model_b, weight, margin).",
    ),
]
LabelsOpt = Annotated[
    Optional[str], typer.Option("--labels", help="pairs: label coding, e.g. a=1,b=2,tie=0 (several codes: tie=tie|tie (bothbad)).")
]


def reader_options(spec, **given) -> dict:
    """The reader options given on the command line; one that ``spec`` does not take is an error."""
    options = {k: v for k, v in given.items() if v is not None}
    for name in options:
        if name not in spec.options:
            flag = name.removesuffix("_path").replace("_", "-")
            raise InputError(f"--{flag} is not an option of format {spec.name!r}")
    return options


@app.command("read")
def read(
    fmt: Annotated[str, typer.Argument(metavar="FORMAT", help=f"One of: {', '.join(FORMATS)}.", show_default=False)],
    path: Annotated[
        str,
        typer.Argument(
            help="Data file (kaggle: a CSV or a folder in the Kaggle layout; comparisons: the comparisons CSV).",
            show_default=False,
        ),
    ],
    out: Annotated[
        Optional[str],
        typer.Option("--out", "-o", help="Write the table as Parquet (comparisons: items go to <out>_items.parquet)."),
    ] = None,
    on_bad_row: Annotated[str, typer.Option("--on-bad-row", help="error: stop at the first bad row; skip: drop and count.")] = "error",
    docs: Annotated[
        Optional[str], typer.Option("--docs", help="comparisons: the document table (default: docs.csv* beside PATH).")
    ] = None,
    aggregate: Annotated[bool, typer.Option("--aggregate/--no-aggregate", help="votes: one row per pair (vote shares) or per vote.")] = True,
    columns: ColumnsOpt = None,
    labels: LabelsOpt = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="preference: seed of the coin that puts chosen on A or B.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an --out file that is not a table prefkit wrote.")] = False,
) -> None:
    """Read FORMAT data from PATH, validate it against the schema and print a summary."""
    spec = get_format(fmt)
    if on_bad_row not in ("error", "skip"):
        raise InputError(f"--on-bad-row must be 'error' or 'skip', got {on_bad_row!r}")
    if docs is not None and "docs_path" not in spec.options:
        raise InputError(f"--docs is for document comparisons, not format {fmt!r}")
    given = reader_options(spec, columns=columns, labels=labels, seed=seed)
    if out is not None:  # before reading: a refused --out costs nothing
        from prefkit.rundir import check_output_path

        for target in (out, _items_path(out)):
            check_output_path(target, [path, docs], kind="pairs", force=force)

    from prefkit.data import get_report

    given.update({k: v for k, v in {"aggregate": aggregate, "docs_path": docs}.items() if k in spec.options})
    table, items = spec.read(path, on_bad_row=on_bad_row, **given)

    for line in summary_lines(table, get_report(table)):
        typer.echo(line)
    if items is not None:
        typer.echo(f"items: {len(items)} documents")
    if out is not None:
        _write(table, out)
        typer.echo(f"wrote {out}")
        if items is not None:
            items_out = _items_path(out)
            _write(items, items_out)
            typer.echo(f"wrote {items_out}")


def summary_lines(table, report) -> list[str]:
    import numpy as np

    from prefkit.schema import LABELS

    lines = []
    if report is not None:
        lines.append(f"{report.format}: {report.source}")
        lines.append(f"rows: {report.rows_kept} (read {report.rows_read}, dropped {report.n_skipped})")
    else:  # pragma: no cover - every reader attaches a report
        lines.append(f"rows: {len(table)}")
    if all(c in table.columns for c in LABELS):
        labels = table[list(LABELS)].to_numpy(dtype=float)
        labelled = ~np.isnan(labels).any(axis=1)
        n_lab = int(labelled.sum())
        lines.append(f"labelled: {n_lab}" + ("" if n_lab == len(table) else f" (unlabelled {len(table) - n_lab})"))
        if n_lab:
            lab = labels[labelled]
            soft = int((lab.max(axis=1) < 1.0).sum())
            mean = lab.mean(axis=0)
            hard = np.bincount(lab.argmax(axis=1), minlength=3)
            lines.append(
                f"class balance (mean label): A {mean[0]:.4f}  B {mean[1]:.4f}  tie {mean[2]:.4f}"
                f"  | argmax counts A {hard[0]}  B {hard[1]}  tie {hard[2]}"
                + (f"  | soft labels {soft}" if soft else "")
            )
        w = table["weight"].to_numpy(dtype=float)
        if not np.allclose(w, 1.0):
            lines.append(f"weights: sum {w.sum():g}, mean {w.mean():.3g}, min {w.min():g}, max {w.max():g}")
        turns = table["prompt"].map(len)
        if (turns > 1).any():
            lines.append(f"multi-turn rows: {int((turns > 1).sum())} (max {int(turns.max())} turns)")
    else:
        scores = [c for c in table.columns if c not in ("id", "text")]
        for c in scores:
            s = table[c]
            lines.append(f"score {c}: mean {s.mean():.4g}, sd {s.std():.4g}, min {s.min():.4g}, max {s.max():.4g}")
    if report is not None:
        if report.skipped:
            lines.append("dropped: " + ", ".join(f"{k}={v}" for k, v in sorted(report.skipped.items())))
            for k, v in sorted(report.examples.items()):
                lines.append(f"  e.g. {k}: {v}")
        if report.notes:
            lines.append("notes: " + ", ".join(f"{k}={v}" for k, v in sorted(report.notes.items())))
    return lines


def _items_path(out: str) -> str:
    return str(Path(out).with_name(Path(out).stem + "_items.parquet"))


def _write(table, out: str, kind: str = "pairs") -> None:
    """Parquet marked as prefkit's ``kind``; a ``.csv`` path as CSV (item tables)."""
    from prefkit.atomic import atomic_path
    from prefkit.rundir import atomic_write_parquet

    try:
        if out.lower().endswith(".csv"):
            with atomic_path(out) as tmp:
                table.to_csv(tmp, index=False)
        else:
            atomic_write_parquet(table, out, kind=kind)
    except OSError as err:
        raise InputError(f"cannot write: {err.strerror or err}", file=out) from None


@app.command("unpair")
def unpair_command(
    path: Annotated[str, typer.Argument(help="Pair file in FORMAT (a .parquet pair table by default).", show_default=False)],
    out: Annotated[str, typer.Option("--out", "-o", help="Item table to write: .csv or .parquet.", show_default=False)],
    fmt: Annotated[
        Optional[str], typer.Option("--format", help="Pair format of PATH (default: parquet for a .parquet file, else kaggle).")
    ] = None,
    columns: ColumnsOpt = None,
    labels: LabelsOpt = None,
    docs: Annotated[Optional[str], typer.Option("--docs", help="comparisons: the document table.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an --out file that is not an item table prefkit wrote.")] = False,
) -> None:
    """Turn pairs into items: one row per distinct (prompt, text) with an item id and its
    counts of pairs, wins, losses and ties (the input of item scorers)."""
    from prefkit.data.preference import unpair
    from prefkit.rundir import check_output_path

    if fmt is None:
        fmt = "parquet" if Path(path).suffix.lower() in (".parquet", ".pq") else "kaggle"
    spec = get_format(fmt, "pairs")
    if Path(out).suffix.lower() not in (".csv", ".parquet"):
        raise InputError(f"--out must end in .csv or .parquet (got {out!r})")
    check_output_path(out, [path, docs], kind="items", force=force)
    pairs = spec.read(path, **reader_options(spec, columns=columns, labels=labels, docs_path=docs)).table
    items = unpair(pairs)
    _write(items, out, kind="items")
    per_item = items["n_pairs"]
    typer.echo(f"items: {len(items)} from {len(pairs)} pairs; pairs per item: mean {per_item.mean():.2f}, max {per_item.max()}")
    typer.echo(f"wrote {out}")

