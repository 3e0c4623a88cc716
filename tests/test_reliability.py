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


# ---------------------------------------------------------------------------------------
# Run folders: lock, one-step replacement, ownership
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A small synthetic arena, a config that trains on it in seconds, and one finished run."""
    from conftest import tiny_feature_project

    from prefkit.config import load_config
    from prefkit.features.feature_model import train_feature_model

    root = tmp_path_factory.mktemp("reliability")
    config = tiny_feature_project(root, n_train=300, n_test=60, seed=3)
    train_feature_model(load_config(config))
    return root, config


def file_hashes(folder: Path) -> dict[str, str]:
    import hashlib

    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")]  # not the lock
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_a_finished_run_is_marked_complete_and_lists_its_files(project):
    root, _ = project
    run = root / "runs" / "feat"
    marker = read_marker(run)
    assert marker["kind"] == "features" and marker["status"] == "complete"
    on_disk = set(file_hashes(run)) - {"run.json"}
    assert set(marker["files"]) - {"run.json"} == on_disk
    assert not (root / "runs" / "feat.staging").exists()


def test_a_second_run_into_a_locked_folder_stops_at_once_naming_the_holder(project):
    root, config = project
    run = root / "runs" / "feat"
    before = file_hashes(run)
    with RunLock(run):
        result = prefkit("train-features", "-c", config)
    line = one_line_error(result)
    assert f"pid {os.getpid()}" in line and "in use" in line
    assert file_hashes(run) == before


def test_a_stale_lock_of_a_dead_process_is_taken_over_and_said(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / ".lock").write_text(json.dumps({"pid": pid, "host": os.uname().nodename, "command": "prefkit stack x"}))
    said = []
    with RunFolder(folder, kind="stack", echo=said.append).open() as run:
        run.write_text("metrics.json", "{}")
    assert len(said) == 1 and f"pid {pid}" in said[0] and "no longer running" in said[0]
    assert is_complete(folder) and (folder / "metrics.json").read_text() == "{}"


def test_a_run_killed_midway_leaves_the_previous_run_whole(project, tmp_path):
    root, config = project
    run = copy_run(root / "runs" / "feat", tmp_path / "runs" / "feat")
    before = file_hashes(run)
    child = subprocess.Popen(
        [sys.executable, "-m", "prefkit", "train-features", "-c", str(config), f"output_dir={tmp_path / 'runs'}",
         "features.learning_rate=0.2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.time() + 120
        while not (tmp_path / "runs" / "feat.staging" / "models" / "fold_0.txt").exists():
            assert child.poll() is None and time.time() < deadline, "the run ended before it could be killed"
            time.sleep(0.02)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert file_hashes(run) == before  # every file of the previous run, none of the killed one
    # the next run clears the killed run's staging folder and replaces the folder whole
    assert prefkit("train-features", "-c", config, f"output_dir={tmp_path / 'runs'}", "features.learning_rate=0.2").returncode == 0
    assert is_complete(run) and "learning_rate: 0.2" in (run / "config.yaml").read_text()
    assert not (tmp_path / "runs" / "feat.staging").exists()


def test_a_failed_stack_keeps_the_previous_stack(project, tmp_path):
    root, config = project
    ok = prefkit("stack", root / "runs" / "feat", "-c", config, f"output_dir={tmp_path}", "stack.name=st",
                 f"stack.submission={tmp_path / 'sub.csv'}")  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    before = file_hashes(tmp_path / "st")
    bad_sample = tmp_path / "sample.csv"
    bad_sample.write_text("id,winner_model_a,winner_model_b,winner_tie\nnope,0.3,0.3,0.4\n")
    failed = prefkit("stack", root / "runs" / "feat", "-c", config, f"output_dir={tmp_path}", "stack.name=st",
                     f"stack.submission={tmp_path / 'sub.csv'}", f"data.sample_submission={bad_sample}")  # fmt: skip
    one_line_error(failed)
    assert file_hashes(tmp_path / "st") == before


def test_run_folder_replaces_only_its_own_kind(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("id\n1\n")
    with pytest.raises(InputError, match="not a prefkit features output .*train.csv.*--force"):
        RunFolder(data, kind="features").open().__enter__()
    assert (data / "train.csv").read_text() == "id\n1\n" and not (data / ".lock").exists()
    with RunFolder(data, kind="features", force=True).open() as run:  # --force: beside the user's files
        run.write_text("oof.csv", "x")
    assert (data / "train.csv").read_text() == "id\n1\n" and (data / "oof.csv").exists()
    with pytest.raises(InputError, match="holds a prefkit features run, not a stack run"):
        RunFolder(data, kind="stack").open().__enter__()


def test_synth_refuses_a_folder_of_real_data(tmp_path):
    data = tmp_path / "kaggle"
    data.mkdir()
    (data / "train.csv").write_text("precious\n")
    line = one_line_error(prefkit("synth", data, "--n-train", "50", "--n-test", "10"))
    assert "train.csv" in line and "--force" in line
    assert (data / "train.csv").read_text() == "precious\n"
    again = tmp_path / "syn"
    assert prefkit("synth", again, "--n-train", "50", "--n-test", "10").returncode == 0
    assert prefkit("synth", again, "--n-train", "60", "--n-test", "10", "--seed", "1").returncode == 0  # its own output
    assert len(pd.read_csv(again / "train.csv")) == 60


def test_check_output_path_protects_inputs_and_foreign_files(tmp_path):
    data = tmp_path / "train.csv"
    data.write_text("id,prompt\n1,x\n")
    with pytest.raises(InputError, match="input of this command"):
        check_output_path(data, [data], kind="fold_map", force=True)
    link = tmp_path / "alias.csv"
    link.symlink_to(data)
    with pytest.raises(InputError, match="input of this command"):
        check_output_path(link, [data], kind="fold_map")
    with pytest.raises(InputError, match="not a prefkit fold_map file"):
        check_output_path(data, [], kind="fold_map")
    own = tmp_path / "folds.csv"
    own.write_text("id,fold\n1,0\n")
    assert check_output_path(own, [data], kind="fold_map") == own


# ---------------------------------------------------------------------------------------
# Protected inputs
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["read", "kaggle", "{train}", "--out", "{train}"],
                                     ["folds", "make", "{train}", "--out", "{train}"],
                                     ["read", "kaggle", "{train}", "--out", "{solution}", "--force"]])  # fmt: skip
def test_no_command_writes_over_its_input(project, tmp_path, command):
    import shutil

    root, _ = project
    shutil.copytree(root / "data", tmp_path / "data")
    files = {"train": tmp_path / "data" / "train.csv", "solution": tmp_path / "data" / "solution.csv"}
    if "--force" in command:  # an input folder's files are inputs too
        command = ["read", "kaggle", str(tmp_path / "data"), "--out", "{solution}", "--force"]
    before = file_hashes(tmp_path / "data")
    line = one_line_error(prefkit(*[c.format(**files) for c in command]))
    assert "input of this command" in line
    assert file_hashes(tmp_path / "data") == before


def test_an_existing_file_that_prefkit_did_not_write_is_not_replaced(project, tmp_path):
    root, _ = project
    notes = tmp_path / "notes.csv"
    notes.write_text("my,own\n1,2\n")
    line = one_line_error(prefkit("folds", "make", root / "data" / "train.csv", "--out", notes, "--n-folds", "3"))
    assert "not a prefkit fold_map file" in line and notes.read_text() == "my,own\n1,2\n"
    assert prefkit("folds", "make", root / "data" / "train.csv", "--out", notes, "--n-folds", "3", "--force").returncode == 0
    assert prefkit("folds", "make", root / "data" / "train.csv", "--out", notes, "--n-folds", "3").returncode == 0  # now its own


# ---------------------------------------------------------------------------------------
# Partial or wrong inputs refused, loudly
# ---------------------------------------------------------------------------------------


def test_stack_refuses_an_oof_that_stops_partway_through_its_folds(project, tmp_path):
    root, config = project
    run = copy_run(root / "runs" / "feat", tmp_path / "feat")
    oof = pd.read_csv(run / "oof.csv", dtype={"id": str})
    oof.iloc[: len(oof) * 2 // 3].to_csv(run / "oof.csv", index=False)  # a killed writer's or a truncated copy's file
    line = one_line_error(prefkit("stack", run, "-c", config, f"output_dir={tmp_path}", "stack.name=st"))
    assert "stops part-way through fold" in line and "oof.csv" in line
    assert not (tmp_path / "st").exists()


def test_stack_says_how_many_rows_each_base_model_covers(project, tmp_path):
    root, config = project
    run = copy_run(root / "runs" / "feat", tmp_path / "feat")
    oof = pd.read_csv(run / "oof.csv", dtype={"id": str})
    oof[oof["fold"] != 2].to_csv(run / "oof.csv", index=False)  # two whole folds: fine, but said
    (run / "test.csv").unlink()
    result = prefkit("stack", run, "-c", config, f"output_dir={tmp_path}", "stack.name=st")
    assert result.returncode == 0, result.stderr
    n = int((oof["fold"] != 2).sum())
    assert f"OOF for {n} of 300 training pairs (folds 0, 1)" in result.stdout and f"stacking {n} of 300" in result.stdout
    assert "no submission written" in result.stderr and "no test predictions" in result.stderr


def test_folds_import_refuses_a_map_that_splits_a_prompt_group(project, tmp_path):
    root, _ = project
    train = root / "data" / "train.csv"
    made = tmp_path / "folds.csv"
    assert prefkit("folds", "make", train, "--out", made, "--n-folds", "3").returncode == 0
    fold_map = pd.read_csv(made, dtype=str)
    fold_map.loc[0, "fold"] = str((int(fold_map.loc[0, "fold"]) + 1) % 3)  # one row of a prompt moved to another fold
    leaking = tmp_path / "leak.csv"
    fold_map.to_csv(leaking, index=False)
    line = one_line_error(prefkit("folds", "import", leaking, "--train", train))
    assert "splits 1 prompt group" in line and "--allow-split-groups" in line
    allowed = prefkit("folds", "import", leaking, "--train", train, "--allow-split-groups")
    assert allowed.returncode == 0 and "split across folds" in allowed.stderr


def test_folds_import_refuses_a_fold_label_unlike_the_others(project, tmp_path):
    root, _ = project
    made = tmp_path / "folds.csv"
    assert prefkit("folds", "make", root / "data" / "train.csv", "--out", made, "--n-folds", "3").returncode == 0
    fold_map = pd.read_csv(made, dtype=str)
    fold_map["fold"] = fold_map["fold"].map({"0": "A", "1": "B", "2": "C"})
    fold_map.loc[6, "fold"] = "x"
    odd = tmp_path / "odd.csv"
    fold_map.to_csv(odd, index=False)
    line = one_line_error(prefkit("folds", "import", odd, "--train", root / "data" / "train.csv"))
    assert "row 7" in line and "'x'" in line


def test_score_refuses_rows_that_are_not_distributions(project, tmp_path):
    root, _ = project
    solution = pd.read_csv(root / "data" / "solution.csv", dtype={"id": str})
    sub = pd.DataFrame({"id": solution["id"], "winner_model_a": 0.6, "winner_model_b": 0.4, "winner_tie": 0.4})
    sub.to_csv(tmp_path / "sub.csv", index=False)
    line = one_line_error(prefkit("score", tmp_path / "sub.csv", root / "data" / "solution.csv"))
    assert "row 1" in line and "sum to 1.4" in line


# ---------------------------------------------------------------------------------------
# Tracebacks turned into one line
# ---------------------------------------------------------------------------------------


def test_folds_make_with_fewer_rows_than_folds_is_one_line(tmp_path):
    from prefkit.data.synthetic import write_synthetic_arena

    write_synthetic_arena(tmp_path / "d", n_train=6, n_test=1, n_prompts=6, seed=0)
    line = one_line_error(prefkit("folds", "make", tmp_path / "d" / "train.csv", "--out", tmp_path / "f.csv", "--n-folds", "5"))
    assert "cannot fill 5" in line


def test_stack_over_a_binary_test_file_is_one_line(project, tmp_path):
    root, config = project
    run = copy_run(root / "runs" / "feat", tmp_path / "feat")
    (run / "test.csv").write_bytes(os.urandom(4096))
    line = one_line_error(prefkit("stack", run, "-c", config, f"output_dir={tmp_path}", "stack.name=st"))
    assert "test.csv" in line


@pytest.mark.parametrize("damage", ["truncated", "garbage", "missing", "config"])
def test_a_damaged_checkpoint_is_named_in_one_line(tmp_path, damage):
    from prefkit.models.checks import check_checkpoint
    from prefkit.testing.tiny import write_tiny_checkpoint

    ckpt = write_tiny_checkpoint(tmp_path / "ckpt", "bert")
    weights = ckpt / "model.safetensors"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "garbage":
        weights.write_bytes(b"\x00garbage" * 64)
    elif damage == "missing":
        weights.unlink()
    else:
        (ckpt / "config.json").write_text('{"model_type": "bert",')
    with pytest.raises(InputError) as err:
        check_checkpoint(ckpt)
    named = "config.json" if damage == "config" else "model.safetensors" if damage != "missing" else "no weights"
    assert named in err.value.one_line()
    data = tmp_path / "train.csv"
    from prefkit.data.synthetic import write_synthetic_arena

    write_synthetic_arena(tmp_path / "d", n_train=8, n_test=2, seed=0)
    line = one_line_error(prefkit("embed", tmp_path / "d" / "train.csv", "--model", ckpt, "--out", tmp_path / "e.parquet"))
    assert named in line and not data.exists()


# ---------------------------------------------------------------------------------------
# Pieces the transformer commands use: in-place run folders, shared locks, load report, device
# ---------------------------------------------------------------------------------------


def test_an_in_place_run_is_marked_incomplete_until_committed(tmp_path):
    run = tmp_path / "tr"
    with RunFolder(run, kind="transformer", staged=False).open() as folder:
        folder.write_text("fold_0/done.json", "{}")
    assert is_complete(run)
    folder = RunFolder(run, kind="transformer", staged=False).begin()  # a resumed run, then killed
    folder.discard(["oof.csv"])
    assert read_marker(run)["status"] == "running" and (run / "fold_0" / "done.json").exists()
    folder.close()
    with pytest.raises(InputError, match="holds a prefkit transformer run, not a stack run"):
        RunFolder(run, kind="stack", staged=False).begin()


def test_fold_processes_share_a_run_lock_that_an_exclusive_run_cannot_take(tmp_path):
    with RunLock(tmp_path / "tr", shared=True), RunLock(tmp_path / "tr", shared=True):
        with pytest.raises(InputError, match="in use"):
            RunLock(tmp_path / "tr").acquire()
    RunLock(tmp_path / "tr").acquire().release()


def test_a_fresh_head_load_report_is_one_prefkit_line(tmp_path):
    from transformers import AutoModel, AutoModelForSequenceClassification
    from transformers.utils import logging as transformers_logging

    from prefkit.models.checks import one_line_load_report
    from prefkit.testing.tiny import write_tiny_checkpoint

    AutoModel.from_pretrained(write_tiny_checkpoint(tmp_path / "ck", "llama")).save_pretrained(tmp_path / "base")
    said = []
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_warning()  # as a fresh process has it (other tests silence transformers)
    try:
        with one_line_load_report(said.append):
            AutoModelForSequenceClassification.from_pretrained(tmp_path / "base", num_labels=3)
    finally:
        transformers_logging.set_verbosity(verbosity)
    assert said == [f"new head initialised (not in {tmp_path / 'base'}): score.weight"]


def test_a_device_that_is_not_there_is_one_line():
    import torch

    from prefkit.models.checks import check_device

    assert check_device("cpu") == "cpu" and check_device("auto") in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA device"):
            check_device("cuda")
    with pytest.raises(InputError, match="unknown device"):
        check_device("gpu")
