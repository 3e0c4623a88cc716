"""``prefkit judge ...``: generative LLM judges of pairs (zero-shot annotation, GRPO training)."""

from __future__ import annotations

from typing import Annotated

import typer

from prefkit.cli_app import ConfigOpt, OverridesArg, app, resolve_config

judge_app = typer.Typer(help="Generative pairwise judges: annotate pairs with a local LLM, train a judge with GRPO.", no_args_is_help=True)
app.add_typer(judge_app, name="judge")


@judge_app.command("annotate")
def annotate_cmd(
    config: ConfigOpt = None,
    overrides: OverridesArg = None,
    scores: Annotated[bool, typer.Option("--scores", help="Also fit Bradley-Terry item scores from the annotations (scores/).")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Write into an existing folder that is not an annotation run (its other files are kept).")
    ] = False,
) -> None:
    """Annotate every pair of data.* with a local causal LM (model.*): P(A), P(B), P(tie) from the next-token probabilities of the option tokens, both orders asked and averaged.

    Writes runs/<name>/{oof.csv,test.csv,folds.csv,annotations.csv,test_annotations.csv,annotated_pairs.parquet,
    metrics.json,config.yaml,annotate.log,run.json} (and scores/ with --scores): oof.csv is every training row
    (nothing is trained), so `prefkit stack` takes the folder as a base model; `prefkit scores fit parquet
    runs/<name>/annotated_pairs.parquet` fits item scores from the annotations."""
    cfg = resolve_config(config, (overrides or []) + (["annotate.scores=true"] if scores else []))
    from prefkit.judge.annotate import run_annotate

    result = run_annotate(cfg, force=force, echo=typer.echo)
    typer.echo(f"-> {result.run_dir}")
