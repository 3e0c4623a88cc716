"""``prefkit read``: read a data file in any supported format, validate it, summarise it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from prefkit.cli_app import app
from prefkit.data.formats import FORMATS, get_format
from prefkit.errors import InputError


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
    force: Annotated[bool, typer.Option("--force", help="Replace an --out file that is not a table prefkit wrote.")] = False,
) -> None:
    """Read FORMAT data from PATH, validate it against the schema and print a summary."""
    spec = get_format(fmt)
    if on_bad_row not in ("error", "skip"):
        raise InputError(f"--on-bad-row must be 'error' or 'skip', got {on_bad_row!r}")
    if docs is not None and "docs_path" not in spec.options:
        raise InputError(f"--docs is for document comparisons, not format {fmt!r}")
    if out is not None:  # before reading: a refused --out costs nothing
        from prefkit.rundir import check_output_path

        for target in (out, _items_path(out)):
            check_output_path(target, [path, docs], kind="pairs", force=force)

    from prefkit.data import get_report

    given = {"aggregate": aggregate, "docs_path": docs}
    table, items = spec.read(path, on_bad_row=on_bad_row, **{k: v for k, v in given.items() if k in spec.options})

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


def _write(table, out: str) -> None:
    from prefkit.rundir import atomic_write_parquet

    try:
        atomic_write_parquet(table, out, kind="pairs")
    except OSError as err:
        raise InputError(f"cannot write: {err.strerror or err}", file=out) from None
