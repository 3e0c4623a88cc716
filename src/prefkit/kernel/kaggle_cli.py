"""Thin wrappers around the official ``kaggle`` package (the optional extra ``prefkit[kaggle]``).

Credentials are checked before the package is imported (it authenticates on import and
exits when it cannot): ``KAGGLE_USERNAME`` + ``KAGGLE_KEY``, ``KAGGLE_API_TOKEN``, or
``kaggle.json`` / ``access_token`` in ``KAGGLE_CONFIG_DIR`` (default ``~/.kaggle``, or
``~/.config/kaggle`` where that does not exist). Missing credentials, a missing package, an
unreachable network and an error answer from Kaggle are each one line (:class:`InputError`).
A submission is validated against the competition's ``sample_submission.csv`` before upload.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from prefkit.errors import InputError

NO_CREDENTIALS = (
    "no Kaggle credentials: put kaggle.json (kaggle.com > Settings > API > Create New Token) in ~/.kaggle/ "
    "(or in KAGGLE_CONFIG_DIR), or set KAGGLE_USERNAME and KAGGLE_KEY"
)


@dataclass
class Credentials:
    username: str | None
    source: str  # where they were found, for messages


def config_dir() -> Path:
    """Where the kaggle package looks for kaggle.json (its own rule)."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"])
    home = Path.home() / ".kaggle"
    if home.exists():
        return home
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"


def find_credentials() -> Credentials | None:
    """The Kaggle credentials of this environment, or None."""
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return Credentials(os.environ["KAGGLE_USERNAME"], "KAGGLE_USERNAME/KAGGLE_KEY")
    if os.environ.get("KAGGLE_API_TOKEN"):
        return Credentials(os.environ.get("KAGGLE_USERNAME"), "KAGGLE_API_TOKEN")
    folder = config_dir()
    path = folder / "kaggle.json"
    if path.is_file():
        try:
            tree = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError):
            raise InputError("not valid JSON: expected {\"username\": ..., \"key\": ...}", file=path) from None
        if not isinstance(tree, dict) or not tree.get("username") or not tree.get("key"):
            raise InputError("needs both \"username\" and \"key\"", file=path)
        return Credentials(str(tree["username"]), str(path))
    for token in (folder / "access_token", Path.home() / ".kaggle" / "access_token"):
        if token.is_file() and token.read_text().strip():
            return Credentials(os.environ.get("KAGGLE_USERNAME"), str(token))
    return None


def require_credentials() -> Credentials:
    creds = find_credentials()
    if creds is None:
        raise InputError(NO_CREDENTIALS)
    return creds


def kaggle_api():
    """An authenticated ``KaggleApi`` (credentials checked first)."""
    require_credentials()
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError:
        raise InputError("the kaggle package is not installed: pip install 'prefkit[kaggle]'") from None
    api = KaggleApi()
    try:
        api.authenticate()
    except SystemExit:  # the package prints its own help and exits
        raise InputError(NO_CREDENTIALS) from None
    return api


def _network_error(err: BaseException) -> bool:
    names = {t.__name__ for t in type(err).__mro__}
    return bool(names & {"ConnectionError", "Timeout", "MaxRetryError", "NewConnectionError", "NameResolutionError", "gaierror"})


def call(what: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with its failures as one line naming ``what``."""
    try:
        return fn(*args, **kwargs)
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - the API raises requests', urllib3's and its own errors
        raise one_line(what, err) from None


def one_line(what: str, err: Exception) -> InputError:
    first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    if _network_error(err) or isinstance(err, OSError) and not isinstance(err, FileNotFoundError):
        return InputError(f"{what}: Kaggle is unreachable ({type(err).__name__}): check the network")
    response = getattr(err, "response", None)
    if response is not None and getattr(response, "status_code", None):
        return InputError(f"{what}: Kaggle answered {response.status_code} ({first})")
    return InputError(f"{what} failed: {first}")


def download(competition: str, path=None, force: bool = False, echo=print) -> Path:
    """The competition's files into ``path`` (default ``data/<competition>``), unzipped."""
    api = kaggle_api()
    target = Path(path) if path else Path("data") / competition
    target.mkdir(parents=True, exist_ok=True)
    call(f"download of {competition}", api.competition_download_files, competition, path=str(target), force=force, quiet=False)
    for archive in sorted(target.glob("*.zip")):
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(target)
        archive.unlink()
    echo(f"{competition}: {', '.join(sorted(p.name for p in target.iterdir()))} in {target}")
    return target


def default_sample(competition: str) -> Path:
    return Path("data") / competition / "sample_submission.csv"


def submit(file, message: str, competition: str, sample=None, kernel: str | None = None, version: int | None = None, echo=print):
    """Validate ``file`` against the sample submission, then upload it; with ``kernel``
    (``owner/slug``) and ``version``, submit that kernel's output file to a code competition."""
    from prefkit.submission import validate_submission

    if not message.strip():
        raise InputError("-m MESSAGE is empty: Kaggle lists every submission with its message")
    sample = Path(sample) if sample else default_sample(competition)
    if kernel is None:
        if not sample.is_file():
            raise InputError(f"no sample submission to validate against: pass --sample, or run prefkit kaggle download {competition} first", file=sample)
        table = validate_submission(file, sample)
        echo(f"{file}: valid ({len(table)} rows, as {sample})")
    elif version is None:
        raise InputError("--kernel needs --version (the kernel version whose output is submitted)")
    api = kaggle_api()
    if kernel is not None:
        result = call(f"submission of {kernel} v{version}", api.competition_submit_code, str(file), message, competition, kernel=kernel, kernel_version=version)
    else:
        result = call(f"submission of {file}", api.competition_submit, str(file), message, competition)
    echo(f"submitted to {competition}: {getattr(result, 'message', None) or 'ok'}")
    return result


def _fill_owner(kernel_dir: Path, username: str | None) -> None:
    """Replace the build's placeholder owner in both metadata files with ``username``."""
    from prefkit.kernel.build import OWNER_PLACEHOLDER

    for meta in (kernel_dir / "kernel-metadata.json", kernel_dir / "dataset" / "dataset-metadata.json"):
        if not meta.is_file():
            continue
        text = meta.read_text()
        if OWNER_PLACEHOLDER in text:
            if not username:
                raise InputError(f"the ids say {OWNER_PLACEHOLDER!r} and the credentials name no user: set KAGGLE_USERNAME", file=meta)
            meta.write_text(text.replace(f"{OWNER_PLACEHOLDER}/", f"{username}/"))


def read_metadata(path: Path) -> dict:
    if not path.is_file():
        raise InputError("not found: give a folder prefkit kernel build wrote", file=path)
    from prefkit.models.checks import read_json

    return read_json(path)  # unreadable or not JSON: one line naming the file


def push(kernel_dir, dataset: bool = True, notes: str = "prefkit kernel build", echo=print) -> dict:
    """Upload the kernel's dataset (a new dataset, or a new version of it), then push the kernel."""
    kernel_dir = Path(kernel_dir)
    kernel_meta = read_metadata(kernel_dir / "kernel-metadata.json")
    creds = require_credentials()
    _fill_owner(kernel_dir, creds.username)
    kernel_meta = read_metadata(kernel_dir / "kernel-metadata.json")
    api = kaggle_api()
    sent = {"kernel": kernel_meta}
    data_dir = kernel_dir / "dataset"
    if dataset and data_dir.is_dir():
        data_meta = read_metadata(data_dir / "dataset-metadata.json")
        sent["dataset"] = data_meta
        try:
            api.dataset_status(data_meta["id"])
            exists = True
        except Exception as err:  # noqa: BLE001 - not found is an HTTP error; a network failure is reported below
            if _network_error(err):
                raise one_line(f"dataset {data_meta['id']}", err) from None
            exists = False
        if exists:
            call(f"dataset version of {data_meta['id']}", api.dataset_create_version, str(data_dir), notes, dir_mode="zip", convert_to_csv=False)
        else:
            call(f"dataset {data_meta['id']}", api.dataset_create_new, str(data_dir), public=False, dir_mode="zip", convert_to_csv=False)
        echo(f"dataset {data_meta['id']}: uploaded ({'new version' if exists else 'new dataset'}); Kaggle processes it before the kernel can read it")
    result = call(f"push of {kernel_meta['id']}", api.kernels_push, str(kernel_dir))
    error = getattr(result, "error", None)
    if error:
        raise InputError(f"push of {kernel_meta['id']}: Kaggle answered: {error}", file=kernel_dir)
    echo(f"kernel {kernel_meta['id']}: pushed, version {getattr(result, 'version_number', '?')} {getattr(result, 'url', '') or ''}".rstrip())
    return sent


def status(kernel: str, echo=print) -> tuple[str, str | None]:
    """The kernel's run status (``queued``, ``running``, ``complete``, ``error`` ...) and failure message."""
    if kernel.count("/") != 1 or not all(kernel.split("/")):
        raise InputError(f"kernel must be owner/slug, not {kernel!r}")
    api = kaggle_api()
    result = call(f"status of {kernel}", api.kernels_status, kernel)
    if isinstance(result, dict):  # kaggle < 1.7 answers a dict
        result = SimpleNamespace(status=result.get("status"), failure_message=result.get("failureMessage"))
    state = str(getattr(result, "status", result)).split(".")[-1].lower()
    failure = getattr(result, "failure_message", None) or None
    echo(f"{kernel}: {state}" + (f" ({failure})" if failure else ""))
    return state, failure
