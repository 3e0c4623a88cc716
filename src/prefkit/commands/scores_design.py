"""``prefkit scores design`` and ``prefkit scores simulate``: which pairs to compare, and how
accurate each design's scores are against the budget (registered on the ``scores`` group)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer

from prefkit.errors import InputError

ID_COLUMNS = ("id", "item", "document_id", "model")


def read_items(spec: str, id_column: str | None = None) -> list[str]:
    """Item ids from a table (``id_column``, else the first of id/item/document_id/model),
    or ``N`` items named 0..N-1 when ``spec`` is a count."""
    if spec.strip().isdigit():
        return [str(k) for k in range(int(spec))]
    from prefkit.data.fileio import read_csv_text
    from prefkit.data.report import ReadContext

    if not Path(spec).is_file():
        raise InputError("no such file (--items takes a table with an id column, or a count)", file=spec)
    table = read_csv_text(ReadContext(spec, "items"))
    column = id_column or next((c for c in ID_COLUMNS if c in table.columns), None)
    if column is None or column not in table.columns:
        wanted = repr(id_column) if id_column else f"one of {', '.join(ID_COLUMNS)} (or --id-column)"
        raise InputError(f"no id column: expected {wanted}, found {', '.join(table.columns)}", file=spec)
    ids = table[column].astype(str).str.strip()
    if (ids == "").any():
        raise InputError("empty item id", file=spec, row=int(np.flatnonzero(ids == "")[0]) + 1, column=column)
    repeated = ids.duplicated()
    if repeated.any():
        row = int(np.flatnonzero(repeated)[0]) + 1
        raise InputError(f"item id {ids.iloc[row - 1]!r} repeats an earlier row", file=spec, row=row, column=column)
    return ids.tolist()


def _adaptive_from(items: list[str], fmt: str, path: str, docs: str | None, budget: int, l2: float, seed: int):
    """The next ``budget`` pairs given the comparisons made so far (fitted with prior ``l2``)."""
    from prefkit.scores.bt import fit
    from prefkit.scores.data import from_names, load_comparisons
    from prefkit.scores.design import adaptive_pairs

    made = load_comparisons(fmt, path, docs=docs)
    names = np.asarray(made.items, dtype=object)
    made = from_names(names[made.i], names[made.j], made.y, made.weight, items=items)
    fitted = fit(made, ties="davidson", l2=l2, se=False)
    per_item = max(1, int(np.ceil(2 * budget / len(items))))
    return adaptive_pairs(
        fitted.scores, budget, i=made.i, j=made.j, nu=fitted.tie_param, per_item=per_item, prior_precision=l2, rng=seed
    )


def design_cmd(
    items: Annotated[str, typer.Option("--items", help="Items: a CSV with an id column, or a count N.", show_default=False)],
    budget: Annotated[int, typer.Option("--budget", min=1, help="Comparisons to choose.", show_default=False)],
    out: Annotated[str, typer.Option("--out", "-o", help="Pairs CSV to write (item_a, item_b).")] = "pairs.csv",
    method: Annotated[str, typer.Option("--method", help="anchor | random | adaptive.")] = "random",
    anchors_per_item: Annotated[int, typer.Option("--anchors-per-item", min=1, max=4, help="anchor: anchors each item meets.")] = 4,
    comparisons: Annotated[
        Optional[str], typer.Option("--comparisons", help="adaptive: comparisons made so far (the next batch is chosen given their fit).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="Format of --comparisons (as `prefkit read`).")] = "comparisons",
    docs: Annotated[
        Optional[str], typer.Option("--docs", help="comparisons format: the document table (default: docs.csv* beside them).")
    ] = None,
    l2: Annotated[float, typer.Option("--l2", min=0.0, help="adaptive: prior precision of the scores (the fit's L2).")] = 1.0,
    id_column: Annotated[Optional[str], typer.Option("--id-column", help="The id column of the --items table.")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Choose which pairs of items to compare under a budget; writes item_a,item_b pairs.

    anchor: every item against a few anchor items (at most 4N comparisons); random: a random
    near-regular connected graph; adaptive: the most informative pairs given the comparisons
    made so far (--comparisons; without them, a random regular start)."""
    from prefkit.scores import design as designs

    names = read_items(items, id_column)
    if method not in designs.DESIGNS:
        raise InputError(f"--method must be one of {', '.join(designs.DESIGNS)}, got {method!r}")
    if comparisons is not None and method != "adaptive":
        raise InputError("--comparisons is for --method adaptive")
    if comparisons is not None and items.strip().isdigit():
        raise InputError("with --comparisons, --items must be a table of item ids (the comparisons name their items)")
    try:
        if method == "anchor":
            i, j = designs.anchor_design(len(names), anchors_per_item=anchors_per_item, budget=budget, rng=seed)
        elif method == "adaptive" and comparisons is not None:
            i, j = _adaptive_from(names, fmt, comparisons, docs, budget, l2, seed)
        else:
            i, j = designs.random_regular_design(len(names), budget, rng=seed)
    except ValueError as err:
        if isinstance(err, InputError):
            raise
        raise InputError(str(err)) from None
    import pandas as pd

    ids = np.asarray(names, dtype=object)
    pairs = pd.DataFrame({"item_a": ids[i], "item_b": ids[j]})
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    pairs.to_csv(out, index=False)
    deg = designs.degrees(len(names), i, j)
    started = " (no comparisons given: a random regular start)" if method == "adaptive" and comparisons is None else ""
    typer.echo(
        f"{method} design{started}: {len(pairs)} comparisons over {len(names)} items "
        f"(per item {deg.min()}-{deg.max()}, {designs.n_components(len(names), i, j)} component(s)) -> {out}"
    )


def _int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{option} takes comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise InputError(f"{option} takes positive integers, got {text!r}")
    return values


def simulate_cmd(
    items: Annotated[int, typer.Option("--items", min=2, help="Items in each simulated set.")] = 200,
    budgets: Annotated[str, typer.Option("--budgets", help="Comma-separated budgets (comparisons).")] = "200,400,800,1600",
    reps: Annotated[int, typer.Option("--reps", min=1, help="Repetitions (fresh true scores each).")] = 5,
    out: Annotated[str, typer.Option("--out", "-o", help="Folder for simulation.csv and simulation.png.")] = "runs/simulate",
    methods: Annotated[str, typer.Option("--designs", help="Comma-separated designs.")] = "anchor,random,adaptive",
    nu: Annotated[float, typer.Option("--nu", min=0.0, help="Davidson tie parameter of the simulated judge.")] = 0.5,
    score_sd: Annotated[float, typer.Option("--score-sd", min=1e-6, help="Spread of the true scores (log-odds).")] = 1.0,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Score accuracy against the budget per design, on simulated comparisons.

    Spearman and RMSE of fitted against true scores (Davidson outcomes, mean over --reps);
    prints the table, writes OUT/simulation.csv and OUT/simulation.png."""
    from prefkit.scores.design import DESIGNS
    from prefkit.scores.simulation import simulate_design, simulation_plot

    budget_list = _int_list(budgets, "--budgets")
    design_list = [d.strip() for d in methods.split(",") if d.strip()]
    unknown = [d for d in design_list if d not in DESIGNS]
    if unknown or not design_list:
        raise InputError(f"--designs takes {', '.join(DESIGNS)}, got {methods!r}")
    if min(budget_list) < items - 1:
        raise InputError(f"--budgets: {min(budget_list)} comparisons cannot connect {items} items (at least {items - 1})")
    table = simulate_design(items, budget_list, design_list, reps, seed, nu=nu, score_sd=score_sd, progress=True)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / "simulation.csv", index=False)
    simulation_plot(table, folder / "simulation.png", n_items=items)
    typer.echo(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    typer.echo(f"-> {folder / 'simulation.csv'}, {folder / 'simulation.png'}")


def register(scores_app: typer.Typer) -> None:
    """Add ``design`` and ``simulate`` to the ``scores`` command group."""
    scores_app.command("design")(design_cmd)
    scores_app.command("simulate")(simulate_cmd)
