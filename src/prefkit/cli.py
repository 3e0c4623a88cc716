"""``prefkit`` command line. Bad input ends in one line on stderr and exit code 2."""

from __future__ import annotations

import sys

from prefkit.cli_app import app
from prefkit.errors import InputError

# Each module adds its commands to ``app`` when imported.
from prefkit.commands import core  # noqa: F401,E402
from prefkit.commands import data  # noqa: F401,E402
from prefkit.commands import folds  # noqa: F401,E402
from prefkit.commands import models  # noqa: F401,E402
from prefkit.commands import transformer  # noqa: F401,E402
from prefkit.commands import pipeline  # noqa: F401,E402


def main(argv: list[str] | None = None) -> int:
    try:
        app(args=argv, prog_name="prefkit", standalone_mode=True)
    except InputError as err:
        print(f"error: {err.one_line()}", file=sys.stderr)
        return 2
    except SystemExit as exit_:  # click exits after --help and usage errors
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def entry() -> None:
    sys.exit(main())
