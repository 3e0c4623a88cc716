from prefkit.cli import entry

entry()
