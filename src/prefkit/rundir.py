"""The run-folder contract: one writer at a time, outputs that are never half written and
never a mix of two runs, and no output written over a user's input.

Every command that writes a run folder goes through :class:`RunFolder`::

    with RunFolder(cfg.run_dir, kind="features").open() as run:
        run.write_text("metrics.json", text)          # atomic (temp file + os.replace)
        booster.save_model(str(run.path_for("models/fold_0.txt")))
        run.commit()                                  # completion marker last

* **Lock**: ``<run>/.lock`` is held with ``fcntl.flock`` for the whole run and names its
  holder (pid, host, command, start time). A second run into the same folder stops at once
  with one line naming the holder. The kernel drops the lock of a process that dies, so a
  lock file still holding a holder's details was left by a killed run: it is taken over,
  and said so in one line.
* **Staged** (default, for small outputs: feature model, stack, synthetic data): the run
  writes into ``<run>.staging/``; :meth:`RunFolder.commit` writes ``run.json`` with status
  ``complete`` there and swaps the two folders in one ``renameat2(RENAME_EXCHANGE)``. A run
  killed at any moment leaves the previous complete folder untouched (a stale staging
  folder is removed by the next run). Files in the old folder that this kind of run does
  not write (a user's notes, a fold map) are carried over; old outputs that the new run
  did not write again (``test.csv`` of a run that now has no test set) are dropped.
* **In place** (``staged=False``, for runs that resume, e.g. fold by fold): opening marks
  the folder incomplete (``run.json`` status ``running``) before any output is replaced;
  every file is written atomically; :meth:`commit` marks it ``complete``.
* **Ownership**: an existing folder is replaced only when it is prefkit's own output of the
  same kind (its ``run.json``, or, for folders written before ``run.json`` existed, only
  files such a run writes), or with ``force``.

:func:`check_output_path` is the same rule for a single output file (``--out``).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from prefkit.atomic import atomic_path, atomic_write_bytes, atomic_write_text
from prefkit.errors import InputError

LOCK_FILE = ".lock"
MARKER_FILE = "run.json"
STAGING_SUFFIX = ".staging"
PREVIOUS_SUFFIX = ".previous"
COMPLETE, RUNNING = "complete", "running"

# What each kind of run writes: in a folder without run.json these names (and hidden
# files) mark it as prefkit's own; in a staged swap, old entries with these names that
# the new run did not write are dropped, anything else is carried over.
KNOWN_OUTPUTS: dict[str, frozenset[str]] = {
    "features": frozenset(
        {"oof.csv", "test.csv", "folds.csv", "config.yaml", "metrics.json", "reliability.png", "importance.csv", "models", "train.log"}
    ),
    "stack": frozenset({"oof.csv", "test.csv", "metrics.json", "reliability.png", "config.yaml", "stack.log"}),
    "synth": frozenset({"train.csv", "test.csv", "sample_submission.csv", "solution.csv", "truth.csv", "truth.json"}),
    "transformer": frozenset(
        {"oof.csv", "test.csv", "config.yaml", "train.log", "learning_curves.png", "reliability.png", "folds.csv", "metrics.json"}
    ),
    "transformer_fold": frozenset({"checkpoint", "oof.csv", "test.csv", "done.json", "state", "progress.json"}),
    "judge": frozenset(
        {"oof.csv", "test.csv", "folds.csv", "config.yaml", "metrics.json", "annotate.log", "annotations.csv",
         "test_annotations.csv", "annotated_pairs.parquet", "scores"}
    ),
}

# Names made per fold (``fold_0``, ``fold_1``, ...), outputs too.
FOLD_ENTRY = re.compile(r"fold_\d+$")
FOLDED_KINDS = frozenset({"transformer"})
DONE_FILE = "done.json"  # written last in a fold's folder: the fold is finished


def finished_fold_dirs(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(k, fold_<k>)`` of a run's finished folds (those holding ``done.json``), by fold number."""
    folds = [(int(d.name[5:]), d) for d in Path(run_dir).glob("fold_*") if FOLD_ENTRY.match(d.name)]
    return sorted((k, d) for k, d in folds if (d / DONE_FILE).exists())


def _is_known(name: str, kind: str) -> bool:
    return name in KNOWN_OUTPUTS.get(kind, frozenset()) or (kind in FOLDED_KINDS and bool(FOLD_ENTRY.match(name)))


# The file that only that kind of run writes: marks a folder without run.json as its own.
LEGACY_SIGNS = {"features": "config.yaml", "stack": "config.yaml", "synth": "truth.json", "transformer": "config.yaml"}

Echo = Callable[[str], None]


def _stderr_line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# Lock
# ---------------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe_holder(info: dict) -> str:
    parts = [f"pid {info.get('pid', '?')}"]
    if info.get("host"):
        parts.append(f"on {info['host']}")
    if info.get("command"):
        parts.append(f"({info['command']})")
    if info.get("started"):
        parts.append(f"since {info['started']}")
    return " ".join(parts)


def _command_line() -> str:
    argv = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else ["python"]
    return " ".join(argv)[:300]


class RunLock:
    """``fcntl.flock`` on ``<folder>/.lock``, exclusive (one writer) or shared (several
    cooperating writers, e.g. fold processes; an exclusive request then fails)."""

    def __init__(self, folder: str | Path, *, shared: bool = False, echo: Echo | None = None) -> None:
        self.folder = Path(folder)
        self.shared = shared
        self.echo = echo or _stderr_line
        self.fd: int | None = None

    @property
    def file(self) -> Path:
        return self.folder / LOCK_FILE

    def acquire(self) -> "RunLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._read(fd)
            os.close(fd)
            who = _describe_holder(holder) if holder else "another prefkit process (cooperating fold processes)"
            raise InputError(f"run folder is in use by {who}: wait for it to finish or choose another folder", file=self.folder) from None
        self.fd = fd
        if not self.shared:
            previous = self._read(fd)
            if previous and previous.get("pid") != os.getpid():
                self._say_stale(previous)
            self._write(fd, {"pid": os.getpid(), "host": socket.gethostname(), "command": _command_line(),
                             "started": time.strftime("%Y-%m-%d %H:%M:%S")})  # fmt: skip
        return self

    def _say_stale(self, previous: dict) -> None:
        pid = previous.get("pid")
        same_host = previous.get("host") == socket.gethostname()
        state = "no longer running" if same_host and isinstance(pid, int) and not _pid_alive(pid) else "gone (its lock was released)"
        self.echo(f"{self.folder}: taking over the stale lock of {_describe_holder(previous)}, which is {state}")

    def release(self) -> None:
        if self.fd is None:
            return
        if not self.shared:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)  # an empty lock file: released cleanly, not stale
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None

    @staticmethod
    def _read(fd: int) -> dict:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            raw = os.read(fd, 4096)
            info = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    @staticmethod
    def _write(fd: int, info: dict) -> None:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(info) + "\n").encode("utf-8"))
        os.fsync(fd)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ---------------------------------------------------------------------------------------
# Folder ownership
# ---------------------------------------------------------------------------------------


def read_marker(folder: str | Path) -> dict | None:
    """The folder's ``run.json`` (kind, status, command, times), or None."""
    path = Path(folder) / MARKER_FILE
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and "kind" in info else None


def is_complete(folder: str | Path) -> bool:
    marker = read_marker(folder)
    return bool(marker) and marker.get("status") == COMPLETE


def _visible_entries(folder: Path) -> list[str]:
    return sorted(e.name for e in folder.iterdir() if not e.name.startswith("."))


def is_own_folder(folder: str | Path, kind: str) -> bool:
    """Whether ``folder`` is prefkit's own output of ``kind``: its ``run.json`` says so, or
    (a folder written before ``run.json`` existed) it holds only what such a run writes,
    including the file that only such a run writes (``LEGACY_SIGNS``)."""
    folder = Path(folder)
    marker = read_marker(folder)
    if marker is not None:
        return marker.get("kind") == kind
    visible = set(_visible_entries(folder)) - {MARKER_FILE}
    sign = LEGACY_SIGNS.get(kind)
    return all(_is_known(n, kind) for n in visible) and (sign is None or sign in visible)


def check_folder_owner(folder: str | Path, kind: str, *, force: bool = False, what: str = "run folder") -> bool:
    """Refuse to replace ``folder`` unless it is missing, empty, prefkit's own output of
    ``kind`` (:func:`is_own_folder`), or ``force`` is given. Returns whether it is own."""
    folder = Path(folder)
    if not folder.exists():
        return True
    if not folder.is_dir():
        raise InputError(f"{what} exists and is a file, not a folder", file=folder)
    visible = [n for n in _visible_entries(folder) if n != MARKER_FILE]
    if not visible or is_own_folder(folder, kind):
        return True
    if force:
        return False
    marker = read_marker(folder)
    hint = "choose another folder, or pass --force to write into it (files this run does not write are kept)"
    if marker is not None:
        raise InputError(f"{what} holds a prefkit {marker.get('kind')} run, not a {kind} run: {hint}", file=folder)
    shown = [n for n in visible if not _is_known(n, kind)] or visible
    listed = ", ".join(shown[:3]) + (f" and {len(shown) - 3} more" if len(shown) > 3 else "")
    raise InputError(f"{what} already exists and is not a prefkit {kind} output (it holds {listed}): {hint}", file=folder)


# ---------------------------------------------------------------------------------------
# Output files
# ---------------------------------------------------------------------------------------


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _first_line(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            return fh.readline(4096).decode("utf-8", errors="replace").strip().lstrip("\ufeff")
    except OSError:
        return ""


def _is_prefkit_parquet(path: Path, kind: str) -> bool:
    try:
        import pyarrow.parquet as pq

        meta = pq.read_schema(path).metadata or {}
    except Exception:  # not Parquet at all (pyarrow raises its own family)
        return False
    return meta.get(b"prefkit.kind", b"").decode() == kind or (kind == "features" and Path(str(path) + ".json").exists())


def _is_fold_map(path: Path) -> bool:
    if path.suffix.lower() == ".csv":
        return _first_line(path) == "id,fold"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and all(isinstance(v, int) for v in data.values())


OUTPUT_SIGNATURES: dict[str, Callable[[Path], bool]] = {
    "predictions": lambda p: _first_line(p) == "id,p_a,p_b,p_tie,model,fold",
    "submission": lambda p: _first_line(p) == "id,winner_model_a,winner_model_b,winner_tie",
    "fold_map": _is_fold_map,
    "pairs": lambda p: _is_prefkit_parquet(p, "pairs"),
    "items": lambda p: _first_line(p).startswith("id,prompt,text,") or _is_prefkit_parquet(p, "items"),
    "features": lambda p: _is_prefkit_parquet(p, "features"),
    "item_scores": lambda p: _first_line(p).startswith("id,score,rank,"),  # prefkit score-items
}


def is_own_output(path: str | Path, kind: str) -> bool:
    """Whether the existing file ``path`` looks like prefkit's own output of ``kind``."""
    check = OUTPUT_SIGNATURES.get(kind)
    return bool(check and Path(path).is_file() and check(Path(path)))


def check_output_path(
    out: str | Path,
    inputs: Iterable[str | Path | None] = (),
    *,
    kind: str,
    force: bool = False,
    option: str = "--out",
) -> Path:
    """Refuse an output path that is one of the command's inputs (always, even with
    ``force``), a folder, or an existing file that is not prefkit's own output of ``kind``
    (unless ``force``). Returns ``out`` as a Path; write it atomically (:func:`atomic_path`)."""
    out = Path(out)
    for inp in inputs:
        if inp is None:
            continue
        inp = Path(inp)
        inside = inp.is_dir() and out.exists() and inp.resolve() in out.resolve().parents
        if _same_file(out, inp) or inside:
            raise InputError(f"{option} is an input of this command ({inp}): prefkit never writes over a file it reads", file=out)
    if out.is_dir():
        raise InputError(f"{option} is a folder; give a file path", file=out)
    if out.exists() and not force and not is_own_output(out, kind):
        raise InputError(f"{option} exists and is not a prefkit {kind} file: choose another path, or pass --force to replace it", file=out)
    return out


def atomic_write_parquet(table, path: str | Path, kind: str) -> Path:
    """``table`` as Parquet, replaced whole, marked as prefkit's output of ``kind`` (schema
    metadata ``prefkit.kind``) so a later run may replace it without ``--force``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow = pa.Table.from_pandas(table, preserve_index=False)
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), b"prefkit.kind": kind.encode()})
    with atomic_path(path) as tmp:
        pq.write_table(arrow, tmp)
    return Path(path)


# ---------------------------------------------------------------------------------------
# Run folders
# ---------------------------------------------------------------------------------------

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2``); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def _link_tree(src: Path, dst: Path) -> None:
    """``src`` into ``dst`` as hard links (no data copied), so removing the old folder
    keeps the files; a plain copy where links are not possible."""
    if src.is_dir() and not src.is_symlink():
        try:
            shutil.copytree(src, dst, copy_function=os.link, symlinks=True)
        except OSError:
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(src, dst, symlinks=True)
        return
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)


class RunFolder:
    """One run's output folder (see the module docstring).

    ``kind`` names what the folder holds ("features", "stack", "synth", "transformer",
    "transformer_fold"); ``staged`` writes into ``<path>.staging`` and swaps at commit;
    ``lock=False`` for a subfolder of a folder already locked (e.g. a fold folder);
    ``shared_lock`` for cooperating processes writing different parts of one folder.
    """

    def __init__(
        self,
        path: str | Path,
        kind: str,
        *,
        staged: bool = True,
        force: bool = False,
        lock: bool = True,
        shared_lock: bool = False,
        echo: Echo | None = None,
        what: str = "run folder",
    ) -> None:
        self.path = Path(path)
        self.kind = kind
        self.staged = staged
        self.force = force
        self.echo = echo or _stderr_line
        self.what = what
        self.lock = RunLock(self.path, shared=shared_lock, echo=self.echo) if lock else None
        self.committed = False
        self.replaces_own = True
        self.started = time.strftime("%Y-%m-%d %H:%M:%S")

    @property
    def staging(self) -> Path:
        return self.path.with_name(self.path.name + STAGING_SUFFIX)

    @property
    def previous(self) -> Path:
        return self.path.with_name(self.path.name + PREVIOUS_SUFFIX)

    @property
    def dir(self) -> Path:
        """Where this run's files go now (the staging folder of a staged run)."""
        return self.staging if self.staged else self.path

    # -- life cycle -------------------------------------------------------------------

    @contextlib.contextmanager
    def open(self) -> Iterator["RunFolder"]:
        """Lock, check ownership, start; on leaving, commit (if the block did not) or,
        after an error, leave the previous outputs (staged) or an incomplete marker."""
        self.begin()
        try:
            yield self
            if not self.committed:
                self.commit()
        except BaseException:
            self.abort()
            raise
        finally:
            self.close()

    def begin(self) -> "RunFolder":
        self._recover_interrupted_swap()
        self.replaces_own = check_folder_owner(self.path, self.kind, force=self.force, what=self.what)
        if self.lock is not None:
            self.lock.acquire()
        try:
            if self.staged:
                if self.staging.exists():  # left by a killed run (we hold the lock)
                    shutil.rmtree(self.staging)
                self.staging.mkdir(parents=True)
            self._write_marker(RUNNING)  # in place: the old folder is incomplete from here on
        except BaseException:
            self.close()
            raise
        return self

    def commit(self) -> Path:
        """Mark the run complete; a staged run replaces the folder in one swap."""
        files = sorted(str(p.relative_to(self.dir)) for p in self.dir.rglob("*") if p.is_file() and not p.name.startswith("."))
        self._write_marker(COMPLETE, files=files)
        if self.staged:
            self._swap_in()
        self.committed = True
        return self.path

    def abort(self) -> None:
        if self.staged:
            shutil.rmtree(self.staging, ignore_errors=True)
        # in place: run.json stays "running", which marks the folder incomplete

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()

    # -- writing ----------------------------------------------------------------------

    def path_for(self, name: str | Path) -> Path:
        """The path to write ``name`` to (parent folders made). Write it atomically where
        the folder is not staged, e.g. with :func:`atomic_path`."""
        path = self.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write_text(self, name: str | Path, text: str) -> Path:
        return atomic_write_text(self.path_for(name), text)

    def write_bytes(self, name: str | Path, data: bytes) -> Path:
        return atomic_write_bytes(self.path_for(name), data)

    def discard(self, names: Iterable[str]) -> None:
        """Remove old outputs this (in-place) run will write again, so that a run killed
        before rewriting them leaves no output of the previous run beside its own."""
        for name in names:
            path = self.path / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    # -- internals --------------------------------------------------------------------

    def _write_marker(self, status: str, files: list[str] | None = None) -> None:
        info = {"kind": self.kind, "status": status, "command": _command_line(), "pid": os.getpid(),
                "host": socket.gethostname(), "started": self.started}  # fmt: skip
        if status == COMPLETE:
            info["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
            info["files"] = files or []
        atomic_write_text(self.dir / MARKER_FILE, json.dumps(info, indent=1) + "\n")

    def _carry_over(self) -> None:
        """Entries of the old folder that this kind of run does not write, linked into the
        staging folder so the swap keeps them; the lock file too, so the lock stays held."""
        if not self.path.is_dir():
            return
        for entry in self.path.iterdir():
            name = entry.name
            target = self.staging / name
            if target.exists() or name in (MARKER_FILE,) or name.endswith(".tmp"):
                continue
            stale = self.replaces_own and _is_known(name, self.kind)
            if name == LOCK_FILE or (not stale and not name.startswith(".")):
                _link_tree(entry, target)

    def _swap_in(self) -> None:
        self._carry_over()
        if not self.path.exists():
            os.rename(self.staging, self.path)
            return
        if _exchange(self.staging, self.path):
            shutil.rmtree(self.staging, ignore_errors=True)  # now the old folder
            return
        # No atomic exchange on this file system: two renames; begin() repairs a run killed between them.
        shutil.rmtree(self.previous, ignore_errors=True)
        os.rename(self.path, self.previous)
        os.rename(self.staging, self.path)
        shutil.rmtree(self.previous, ignore_errors=True)

    def _recover_interrupted_swap(self) -> None:
        if not self.previous.exists():
            return
        if self.path.exists():
            shutil.rmtree(self.previous, ignore_errors=True)
        else:
            os.rename(self.previous, self.path)
            self.echo(f"{self.path}: restored the previous outputs (a run was killed while replacing them)")


__all__ = [
    "KNOWN_OUTPUTS",
    "RunFolder",
    "RunLock",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_parquet",
    "atomic_write_text",
    "check_folder_owner",
    "check_output_path",
    "is_complete",
    "is_own_folder",
    "is_own_output",
    "read_marker",
]
