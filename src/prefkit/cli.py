"""``prefkit`` command line. Bad input ends in one line on stderr and exit code 2; an
unexpected error in one line too (exit code 1), its traceback in a log file."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

from typer import exceptions as typer_exceptions
from typer._click import exceptions as click_exceptions

from prefkit.cli_app import app
from prefkit.errors import InputError

# Each module adds its commands to ``app`` when imported.
from prefkit.commands import core  # noqa: F401,E402
from prefkit.commands import data  # noqa: F401,E402
from prefkit.commands import folds  # noqa: F401,E402
from prefkit.commands import models  # noqa: F401,E402
from prefkit.commands import transformer  # noqa: F401,E402
from prefkit.commands import items  # noqa: F401,E402
from prefkit.commands import pipeline  # noqa: F401,E402
from prefkit.commands import scores  # noqa: F401,E402
from prefkit.commands import kernel  # noqa: F401,E402
from prefkit.commands import kernel_estimate  # noqa: F401,E402
from prefkit.commands import judge  # noqa: F401,E402
from prefkit.commands import judge_train  # noqa: F401,E402
from prefkit.commands import absolute  # noqa: F401,E402


def error_log_path() -> Path:
    """Where the traceback of an unexpected error goes: ``$PREFKIT_ERROR_LOG``, else
    ``$XDG_CACHE_HOME/prefkit/last_error.log`` (``~/.cache/prefkit/last_error.log``)."""
    if os.environ.get("PREFKIT_ERROR_LOG"):
        return Path(os.environ["PREFKIT_ERROR_LOG"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "prefkit" / "last_error.log"


def _log_traceback(argv: list[str]) -> Path | None:
    text = f"prefkit {' '.join(argv)}\n{traceback.format_exc()}"
    for path in (error_log_path(), Path("/tmp") / f"prefkit-last-error-{os.getuid()}.log"):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            return path
        except OSError:
            continue
    return None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _os_error_line(err: OSError) -> str:
    """A file-system failure (disk full, permission denied, read-only) named by its file."""
    where = err.filename if err.filename is not None else None
    what = err.strerror or type(err).__name__
    return _one_line(f"{where}: {what}" if where else what)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        result = app(args=argv, prog_name="prefkit", standalone_mode=False)
    except InputError as err:
        print(f"error: {err.one_line()}", file=sys.stderr)
        return 2
    except click_exceptions.NoArgsIsHelpError:
        return 2  # the help text is already printed
    except click_exceptions.UsageError as err:
        command = err.ctx.command_path if err.ctx is not None else "prefkit"
        print(f"error: {command}: {_one_line(err.format_message())} (see {command} --help)", file=sys.stderr)
        return 2
    except click_exceptions.ClickException as err:
        print(f"error: {_one_line(err.format_message())}", file=sys.stderr)
        return err.exit_code or 1
    except typer_exceptions.Abort:
        print("interrupted", file=sys.stderr)
        return 130
    except typer_exceptions.Exit as exit_:
        return int(exit_.exit_code or 0)
    except SystemExit as exit_:
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as err:
        print(f"error: {_os_error_line(err)}", file=sys.stderr)
        return 2
    except Exception as err:  # a bug, not bad input: one line, traceback in a file
        logged = _log_traceback(argv)
        where = f"full traceback in {logged}" if logged else "no traceback log could be written"
        print(f"internal error: {type(err).__name__}: {_one_line(err)[:300]} ({where})", file=sys.stderr)
        return 1
    return int(result) if isinstance(result, int) else 0


def entry() -> None:
    sys.exit(main())
