"""Files and folders replaced whole: a failed write leaves the old version and no debris."""

import os
import stat

import pytest

from prefkit.atomic import atomic_directory, atomic_path, atomic_write_text


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_beside_it(tmp_path):
    path = atomic_write_text(tmp_path / "metrics.json", "old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half of the ne")
            raise RuntimeError("killed")
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["metrics.json"]
    atomic_write_text(path, "new\n")
    assert path.read_text() == "new\n" and os.listdir(tmp_path) == ["metrics.json"]


def test_a_new_file_has_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "sub" / "oof.csv", "id\n")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_folder_is_replaced_whole_or_not_at_all(tmp_path):
    dest = tmp_path / "model"
    with atomic_directory(dest) as staging:
        (staging / "a.bin").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_directory(dest) as staging:
            (staging / "b.bin").write_text("2")
            raise RuntimeError("a file failed its hash")
    assert os.listdir(dest) == ["a.bin"] and os.listdir(tmp_path) == ["model"]
    with atomic_directory(dest) as staging:
        (staging / "b.bin").write_text("2")
    assert os.listdir(dest) == ["b.bin"] and os.listdir(tmp_path) == ["model"]
