"""The typer application shared by every command module (kept import-light: no torch)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

app = typer.Typer(
    name="prefkit",
    help="Pairwise preference modelling: data, folds, models, OOF, stacking, submission.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)



@app.callback()
def _root() -> None:
    """Pairwise preference modelling: data, folds, models, OOF, stacking, submission."""


# Shared option types, so every command spells them the same way.
ConfigOpt = Annotated[Optional[str], typer.Option("--config", "-c", help="Experiment YAML (differences from the defaults).")]
OverridesArg = Annotated[
    Optional[list[str]], typer.Argument(help="Dotted overrides, e.g. train.lr=3e-5 folds.n_folds=3.", show_default=False)
]


def resolve_config(config: str | None, overrides: list[str] | None):
    from prefkit.config import load_config

    return load_config(config, overrides or [])
