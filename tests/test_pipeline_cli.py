"""The pipeline commands end to end through a subprocess, and their bad-input exits."""

import json
import subprocess
import sys

import pandas as pd
import pytest
from conftest import tiny_feature_project



def prefkit(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "prefkit", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A tiny synthetic arena and a config that trains on it in seconds."""
    root = tmp_path_factory.mktemp("cli")
    return root, tiny_feature_project(root, n_train=400, n_test=100, seed=9)


def test_train_stack_validate_score(project):
    root, config = project
    train = prefkit("train-features", "-c", config)
    assert train.returncode == 0, train.stderr
    assert "OOF log loss" in train.stdout
    run = root / "runs" / "feat"
    stack = prefkit("stack", run, "-c", config, "stack.name=stacked")
    assert stack.returncode == 0, stack.stderr
    assert (root / "runs" / "stacked" / "oof.csv").exists()
    valid = prefkit("validate-submission", root / "submission.csv", root / "data" / "sample_submission.csv")
    assert valid.returncode == 0, valid.stderr
    assert valid.stdout.startswith("ok:")
    score = prefkit("score", root / "submission.csv", root / "data" / "solution.csv", "--plot", root / "rel.png")
    assert score.returncode == 0, score.stderr
    last = dict(kv.split("=") for kv in score.stdout.strip().splitlines()[-2].split())
    assert 0 < float(last["log_loss"]) < 1.1 and int(last["n"]) == 100
    assert (root / "rel.png").exists()
    metrics = json.loads((root / "runs" / "stacked" / "metrics.json").read_text())
    assert metrics["oof"]["log_loss"] <= metrics["oof_uncalibrated"]["log_loss"] + 1e-12


def _one_line_error(result):
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_bad_input_exits_2_with_one_line(project, tmp_path):
    root, config = project
    sample = root / "data" / "sample_submission.csv"
    assert "run folder not found" in _one_line_error(prefkit("stack", tmp_path / "nope", "-c", config))
    assert "no run folder" in _one_line_error(prefkit("stack", "-c", config, "stack.method=lgbm"))
    assert "data folder not found" in _one_line_error(prefkit("train-features", f"data.dir={tmp_path / 'absent'}"))
    assert "stack.method" in _one_line_error(prefkit("stack", root, "stack.method=magic"))
    assert "not found" in _one_line_error(prefkit("validate-submission", tmp_path / "none.csv", sample))
    bad = tmp_path / "bad.csv"
    table = pd.read_csv(sample, dtype={"id": str})
    table.loc[3, "winner_tie"] = float("nan")
    table.to_csv(bad, index=False)
    line = _one_line_error(prefkit("validate-submission", bad, sample))
    assert "row 4" in line and "winner_tie" in line
    assert "not found" in _one_line_error(prefkit("score", tmp_path / "none.csv", root / "data" / "solution.csv"))
    table.iloc[:, 1:] = 1 / 3
    table.iloc[:50].to_csv(bad, index=False)
    assert "have no prediction" in _one_line_error(prefkit("score", bad, root / "data" / "solution.csv"))


def test_demo_prints_the_table(tmp_path):
    result = prefkit("demo", "--out", tmp_path / "demo", "--n-train", 300, "--n-test", 100, "folds.n_folds=3",
                     "features.num_threads=1", "stack.inner_folds=3", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    for name in ("class prior", "pipeline (test)", "Bayes-optimal", "gap to Bayes", "Spearman(fitted, true)"):
        assert name in result.stdout
    assert (tmp_path / "submissions" / "demo" / "submission.csv").exists()  # beside every other submission
