"""``prefkit score-items``: one score per text from an item scorer's checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from prefkit.cli_app import app
from prefkit.errors import InputError


@app.command("score-items")
def score_items_cmd(
    checkpoint: Annotated[str, typer.Argument(help="An item scorer's checkpoint (runs/<name>/fold_<k>/checkpoint).", show_default=False)],
    data: Annotated[str, typer.Argument(help="Texts to score: CSV (plain or compressed), JSONL/JSON records or Parquet.", show_default=False)],
    out: Annotated[str, typer.Option("--out", "-o", help="Scores to write (CSV: id, score, rank, text).")] = "scores.csv",
    text_column: Annotated[str, typer.Option("--text-column", help="Column holding the texts.")] = "text",
    prompt_column: Annotated[str, typer.Option("--prompt-column", help="Column of prompts, used when present and the scorer was trained with prompts.")] = "prompt",
    id_column: Annotated[str, typer.Option("--id-column", help="Column of ids (default: the row number when absent).")] = "id",
    top: Annotated[int, typer.Option("--top", min=0, help="Texts listed from the top and from the bottom.")] = 5,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Default: the checkpoint's train.eval_batch_size.")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="cpu or cuda (default: cuda when there is one).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out that prefkit did not write.")] = False,
) -> None:
    """Score every text of DATA with an item scorer's CHECKPOINT (s(prompt, text); higher is better)."""
    if not Path(checkpoint).is_dir():
        raise InputError("checkpoint folder not found", file=checkpoint)
    from prefkit.infer.items import read_text_table, score_items, scored_table
    from prefkit.infer.predict import Predictor
    from prefkit.models.checks import check_checkpoint, check_device
    from prefkit.predictions import atomic_write_csv
    from prefkit.rundir import check_output_path
    from prefkit.scores.report import snippet

    check_checkpoint(checkpoint)
    device = check_device(device) if device else None
    check_output_path(out, [data, checkpoint], kind="item_scores", force=force)
    table = read_text_table(data)
    if text_column not in table:
        raise InputError(f"no column {text_column!r} (--text-column); columns: {list(table.columns)}", file=data)
    predictor = Predictor(checkpoint, device=device, batch_size=batch_size)
    scores = score_items(predictor, table, text_column, prompt_column, progress=True)
    result = scored_table(table, scores, text_column, id_column)
    atomic_write_csv(result, out)
    ranked = result.sort_values("rank")
    typer.echo(f"wrote {len(result)} scores to {out} (mean {scores.mean():.3f}, sd {scores.std():.3f})")
    for title, rows in (("top", ranked.head(top)), ("bottom", ranked.tail(top).iloc[::-1])):
        if top and len(rows):
            typer.echo(f"{title}:")
            for _, row in rows.iterrows():
                typer.echo(f"  {row['rank']:>5}  {row['score']:8.3f}  {snippet(row[text_column], 90)}")
