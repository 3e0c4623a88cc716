"""``prefkit judge ...``: generative LLM judges of pairs (zero-shot annotation, GRPO training)."""

from __future__ import annotations

import typer

from prefkit.cli_app import app

judge_app = typer.Typer(help="Generative pairwise judges: annotate pairs with a local LLM, train a judge with GRPO.", no_args_is_help=True)
app.add_typer(judge_app, name="judge")
