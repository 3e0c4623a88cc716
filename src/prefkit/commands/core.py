"""Commands that need no model: config inspection."""

from __future__ import annotations

import typer

from prefkit.cli_app import ConfigOpt, OverridesArg, app, resolve_config


@app.command("config")
def show_config(config: ConfigOpt = None, overrides: OverridesArg = None) -> None:
    """Print the resolved, validated config (defaults + file + overrides)."""
    from prefkit.config import config_to_yaml

    typer.echo(config_to_yaml(resolve_config(config, overrides)), nl=False)
