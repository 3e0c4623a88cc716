"""Command modules; each registers its commands on :data:`prefkit.cli_app.app`."""
