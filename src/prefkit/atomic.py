"""Files and folders replaced whole: a reader, or a rerun after a kill, finds the old
version or the complete new one, never half of one.

    with atomic_path("oof.csv") as tmp:        # write tmp any way you like
        table.to_csv(tmp, index=False)
    atomic_write_text("done.json", text)
    with atomic_directory("checkpoint") as staging:
        model.save_pretrained(staging)

The temporary name sits in the same folder (``os.replace`` is atomic only within one file
system) and starts with a dot, so globs for outputs do not see it. It is created by the
writer, so the new file gets the usual permissions (umask), not ``mkstemp``'s 0600.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path


def _beside(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.{tag}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for the block to write; it then replaces ``path``.
    When the block fails the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _beside(path, "tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """An empty staging folder beside ``path`` for the block to fill; it then takes the
    place of ``path`` (the old folder is moved aside and removed). When the block fails
    the staging folder is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = _beside(path, "staging")
    staging.mkdir()
    try:
        yield staging
        old = _beside(path, "old") if path.exists() else None
        if old is not None:
            os.replace(path, old)
        os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
