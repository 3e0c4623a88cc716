"""``prefkit kernel ...`` (an offline Kaggle kernel: build, estimate, push, status) and
``prefkit kaggle ...`` (download a competition's data, submit a file)."""

from __future__ import annotations

import typer

from prefkit.cli_app import app

kernel_app = typer.Typer(help="Offline Kaggle kernels: build one from run folders, estimate its run time, push it.", no_args_is_help=True)
kaggle_app = typer.Typer(help="The kaggle CLI around prefkit: download competition data, submit a validated file.", no_args_is_help=True)
app.add_typer(kernel_app, name="kernel")
app.add_typer(kaggle_app, name="kaggle")
