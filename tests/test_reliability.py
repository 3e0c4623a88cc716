"""A user's data is never lost, overwritten or silently mixed: run folders are locked and
replaced in one step, inputs are never written over, every failure is one line, partial
inputs are refused or said out loud."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from prefkit.errors import InputError
from prefkit.rundir import RunFolder, RunLock, check_output_path, is_complete, read_marker


def prefkit(*args, cwd=None, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "prefkit", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )


def one_line_error(result, code=2) -> str:
    """The single stderr line of a failed command (and no traceback)."""
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


# ---------------------------------------------------------------------------------------
# Messages: usage errors, internal errors, overrides, progress bars
# ---------------------------------------------------------------------------------------


def test_usage_errors_are_one_line():
    line = one_line_error(prefkit("synth", "/nonexistent/x", "--n-train", "0"))
    assert "--n-train" in line and line.startswith("error: prefkit synth")


def test_internal_error_is_one_line_with_the_traceback_logged(tmp_path, monkeypatch, capsys):
    import prefkit.config
    from prefkit.cli import main

    def broken(cfg):
        raise RuntimeError("a bug\nover two lines")

    log = tmp_path / "last_error.log"
    monkeypatch.setenv("PREFKIT_ERROR_LOG", str(log))
    monkeypatch.setattr(prefkit.config, "config_to_yaml", broken)
    assert main(["config"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "RuntimeError: a bug over two lines" in err[0] and str(log) in err[0]
    assert "Traceback" in log.read_text() and "config_to_yaml" not in err[0]


def test_a_bad_override_is_blamed_not_the_file(tmp_path):
    from prefkit.config import load_config

    good = tmp_path / "good.yaml"
    good.write_text("train:\n  epochs: 1\n")
    with pytest.raises(InputError) as err:
        load_config(good, ["train.lr=abc"])
    assert err.value.one_line().startswith("override train.lr=abc: ") and "good.yaml" not in err.value.one_line()
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: abc\n")
    with pytest.raises(InputError, match="bad.yaml: train.lr"):
        load_config(bad, ["folds.n_folds=3"])


def test_progress_bar_off_a_terminal_writes_one_final_line(capsys):
    from prefkit.progress import progress_bar

    for _ in progress_bar(range(50), desc="folds", unit="fold"):
        pass
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\r" not in err and err.startswith("folds: 50/50 fold in ")
