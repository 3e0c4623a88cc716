"""``prefkit kernel build`` / ``prefkit kernel run``: an offline kernel that gives the submission
``prefkit predict`` + ``prefkit stack`` give.

The clean-venv test simulates the Kaggle image: a fresh virtual environment (no pip, no
packages of its own) sees a folder of links to this environment's installed packages, through
a ``.pth`` file, *minus* prefkit and every package the kernel bundles (``kaggle_image.txt``
says which the image lacks): the torch, transformers, ... "of the image" are there, the rest
must come from the bundle's wheels, installed with ``pip install --no-index``. The bundle's
wheels come from PyPI where it is reachable, else from the installed files.

A stacker of a tiny model trained a few steps shrinks towards the class rates; that the saved
stacker applies as the fitted one on informative inputs is checked on its own below.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prefkit.cli import main

COMPETITION = "llm-classification-finetuning"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A tiny LoRA classifier trained 2 folds a few steps on a synthetic arena (with a test
    set), and ``prefkit stack`` of it: runs/tiny, runs/stack, submission.csv."""
    from prefkit.data.synthetic import write_synthetic_arena
    from prefkit.testing.tiny import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("kernel")
    write_synthetic_arena(root / "data", n_train=80, n_test=12, seed=0)
    base = write_tiny_checkpoint(root / "bert", "bert")
    train = ["train-transformer", f"data.dir={root / 'data'}", f"model.name_or_path={base}", f"output_dir={root / 'runs'}",
             "name=tiny", "folds.n_folds=2", "train.max_steps=6", "train.lr=5e-3", "render.max_length=48", "train.device=cpu",
             "model.lora.enabled=true", "model.lora.r=4"]  # fmt: skip
    assert main(train) == 0
    assert main(["stack", str(root / "runs" / "tiny"), f"output_dir={root / 'runs'}", "stack.name=stack", "stack.inner_folds=2",
                 f"stack.submission={root / 'submission.csv'}"]) == 0  # fmt: skip
    return root


def build(project, tmp_path, *args):
    out_root = tmp_path / "kernels"
    assert main(["kernel", "build", str(project / "runs" / "tiny"), "--competition", COMPETITION, "--out-root", str(out_root),
                 "--name", "tiny-kernel", *args]) == 0  # fmt: skip
    return out_root / "tiny-kernel"


def submission(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"id": str})


def image_folder(dest: Path, bundled: list[str]) -> Path:
    """Links to this environment's site-packages entries, minus prefkit's and the bundled packages'."""
    site = Path(sysconfig.get_paths()["purelib"])
    drop = set()
    for name in ["prefkit", *bundled]:
        drop |= {f.parts[0] for f in metadata.distribution(name).files or [] if f.parts[0] != ".."}
    dest.mkdir()
    for entry in site.iterdir():
        if entry.name not in drop and not entry.name.startswith("__editable__"):
            (dest / entry.name).symlink_to(entry)
    return dest


def clean_venv(dest: Path, image: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(dest)], check=True)
    python = dest / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    (Path(site) / "kaggle_image.pth").write_text(f"{image}\n")
    return python


def test_kernel_in_a_clean_venv_gives_the_submission_of_predict_and_stack(project, tmp_path):
    from prefkit.predictions import read_predictions

    kernel = build(project, tmp_path, "--stack", str(project / "runs" / "stack"))
    meta = json.loads((kernel / "kernel-metadata.json").read_text())
    assert meta["enable_gpu"] is True and meta["enable_internet"] is False and meta["kernel_type"] == "notebook"
    assert meta["competition_sources"] == [COMPETITION] and meta["dataset_sources"] == [json.loads((kernel / "dataset" / "dataset-metadata.json").read_text())["id"]]
    cell = "".join(json.loads((kernel / "kernel.ipynb").read_text())["cells"][0]["source"])
    assert cell == (kernel / "kernel.py").read_text() and "--no-index" in cell
    pins = (kernel / "dataset" / "wheels" / "requirements.txt").read_text().split()
    assert pins[0] == f"prefkit=={metadata.version('prefkit')}" and all("==" in p for p in pins)
    assert not (kernel / "dataset" / "runs" / "tiny" / "fold_0" / "checkpoint" / "adapter_model.safetensors").is_symlink()

    # `prefkit predict` per fold gives the run's test predictions the stack was fitted on
    run = project / "runs" / "tiny"
    for k in (0, 1):
        assert main(["predict", str(run / f"fold_{k}" / "checkpoint"), str(project / "data" / "test.csv"), "--out", str(tmp_path / f"p{k}.csv")]) == 0
    direct = read_predictions(tmp_path / "p0.csv").set_index("id")[["p_a", "p_b", "p_tie"]]
    direct = (direct + read_predictions(tmp_path / "p1.csv").set_index("id")[["p_a", "p_b", "p_tie"]]) / 2
    trained = read_predictions(run / "test.csv").set_index("id")[["p_a", "p_b", "p_tie"]]
    np.testing.assert_allclose(direct.loc[trained.index].to_numpy(), trained.to_numpy(), atol=1e-6)
    assert trained.std().max() > 10 * 1e-6  # rows told apart beyond the tolerance: equal outputs below say something

    bundled = [p.split("==")[0] for p in pins[1:]]
    python = clean_venv(tmp_path / "venv", image_folder(tmp_path / "image", bundled))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_NO_INDEX"] = "1"  # offline, as on Kaggle
    out = tmp_path / "working" / "submission.csv"
    done = subprocess.run([str(python), str(kernel / "kernel.py"), "--bundle", str(kernel / "dataset"), "--test",
                           str(project / "data" / "test.csv"), "--out", str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    where = subprocess.run([str(python), "-c", "import prefkit; print(prefkit.__file__)"], capture_output=True, text=True, env=env, cwd=tmp_path, check=True)
    assert str(tmp_path / "venv") in where.stdout  # prefkit came from the bundled wheel, not from this checkout

    kernel_sub, stack_sub = submission(out), submission(project / "submission.csv")
    assert list(kernel_sub["id"]) == list(submission(project / "data" / "sample_submission.csv")["id"])
    pd.testing.assert_frame_equal(kernel_sub, stack_sub, check_exact=False, atol=1e-6, rtol=0)


def test_plain_average_and_fold_averaged_weights(project, tmp_path):
    import torch
    from safetensors.torch import load_file

    from prefkit.predictions import read_predictions
    from prefkit.submission import write_submission

    sample = project / "data" / "sample_submission.csv"
    test = project / "data" / "test.csv"
    kernel = build(project, tmp_path / "folds")
    assert json.loads((kernel / "dataset" / "prefkit-bundle.json").read_text())["combine"]["method"] == "average"
    assert main(["kernel", "run", str(kernel / "dataset"), "--test", str(test), "--out", str(tmp_path / "avg.csv")]) == 0
    write_submission(read_predictions(project / "runs" / "tiny" / "test.csv"), sample, tmp_path / "direct.csv")
    pd.testing.assert_frame_equal(submission(tmp_path / "avg.csv"), submission(tmp_path / "direct.csv"), check_exact=False, atol=1e-6, rtol=0)

    # a hidden test set's malformed row costs that row the mean prediction, not the submission
    odd = tmp_path / "odd"
    odd.mkdir()
    rows = pd.read_csv(test, dtype=str)
    rows.loc[3, "response_a"] = '["an unterminated'
    rows.to_csv(odd / "test.csv", index=False)
    (odd / "sample_submission.csv").write_bytes(sample.read_bytes())
    assert main(["kernel", "run", str(kernel / "dataset"), "--test", str(odd / "test.csv"), "--out", str(tmp_path / "odd.csv")]) == 0
    got, full = submission(tmp_path / "odd.csv").set_index("id"), submission(tmp_path / "avg.csv").set_index("id")
    bad_id = str(rows.loc[3, "id"])
    others = full.drop(index=bad_id)
    pd.testing.assert_frame_equal(got.drop(index=bad_id), others, check_exact=False, atol=1e-6, rtol=0)
    np.testing.assert_allclose(got.loc[bad_id].to_numpy(), others.mean().to_numpy() / others.mean().sum(), atol=1e-6)

    kernel = build(project, tmp_path / "avg", "--weights", "average", "--infer", "infer.precision=fp32")
    assert json.loads((kernel / "dataset" / "prefkit-bundle.json").read_text())["infer"] == ["infer.precision=fp32"]
    averaged = kernel / "dataset" / "runs" / "tiny" / "averaged" / "checkpoint"
    folds = [load_file(str(project / "runs" / "tiny" / f"fold_{k}" / "checkpoint" / "adapter_model.safetensors")) for k in (0, 1)]
    mean = load_file(str(averaged / "adapter_model.safetensors"))
    assert set(mean) == set(folds[0])
    for key, value in mean.items():
        torch.testing.assert_close(value, (folds[0][key] + folds[1][key]) / 2)
    meta = json.loads((averaged / "prefkit_checkpoint.json").read_text())
    assert meta["base_model_abs"] is None and (kernel / "dataset" / meta["base_model"] / "config.json").is_file()  # the base travels with it
    assert main(["kernel", "run", str(kernel / "dataset"), "--test", str(test), "--out", str(tmp_path / "soup.csv")]) == 0
    assert len(submission(tmp_path / "soup.csv")) == len(submission(sample))


def test_a_run_without_checkpoints_or_outside_the_stack_is_one_line(project, tmp_path, capsys):
    (tmp_path / "other").mkdir()
    assert main(["kernel", "build", str(tmp_path / "other"), "--competition", COMPETITION, "--out-root", str(tmp_path / "k")]) == 2
    assert "no fold_<k>/checkpoint" in capsys.readouterr().err
    assert main(["kernel", "run", str(tmp_path / "other"), "--test", str(project / "data" / "test.csv")]) == 2
    assert "not a kernel bundle" in capsys.readouterr().err
    (tmp_path / "k" / "mine-kernel").mkdir(parents=True)
    args = ["kernel", "build", str(project / "runs" / "tiny"), "--competition", COMPETITION, "--out-root", str(tmp_path / "k"), "--name", "mine-kernel"]
    assert main(args) == 2
    assert "was not written by prefkit kernel build" in capsys.readouterr().err
    assert not any((tmp_path / "k" / "mine-kernel").iterdir())  # someone's folder is left alone
    assert main([*args[:-1], "other-kernel", "--stack", str(project / "runs" / "tiny")]) == 2
    assert "no stacker.json" in capsys.readouterr().err
    assert not (tmp_path / "k" / "other-kernel").exists()  # checked before anything is written


def test_saved_stacker_applies_as_the_fitted_one(tmp_path):
    from prefkit.config import StackConfig
    from prefkit.stacking import SavedStack, Stacker, stack_inputs

    rng = np.random.default_rng(0)
    n = 300
    labels = np.eye(3)[rng.integers(0, 3, n)]
    probs = [np.clip(0.6 * labels + 0.4 * rng.dirichlet(np.ones(3), n), 1e-3, None) for _ in range(2)]
    probs = [p / p.sum(1, keepdims=True) for p in probs]
    x, groups = stack_inputs(probs), np.array([f"g{i % 60}" for i in range(n)])
    for method in ("logistic", "lgbm"):
        fitted = Stacker(StackConfig(method=method, inner_folds=3), num_threads=1).fit(x, labels, np.ones(n), groups)
        SavedStack(method, ["a", "b"], 1.0, fitted.params()).save(tmp_path)
        saved = SavedStack.load(tmp_path)  # JSON, as a kernel reads it
        np.testing.assert_allclose(saved.predict(probs), fitted.predict_proba(x), atol=1e-9)


def test_the_bundle_pins_what_the_image_lacks_and_packs_installed_files_offline(tmp_path):
    from prefkit.kernel.wheels import (
        canonical,
        fetch_wheel,
        image_packages,
        needed_distributions,
        wheel_from_installed,
    )

    image = image_packages()
    names = [canonical(d.metadata["Name"]) for d in needed_distributions()]
    assert "torch" in image and not set(names) & image
    assert "typer" in names  # prefkit's CLI, not in the image list
    forced = [canonical(d.metadata["Name"]) for d in needed_distributions(extra=("transformers",))]
    assert "transformers" in forced and "torch" not in forced

    dist = metadata.distribution("typer")
    wheel = wheel_from_installed(dist, tmp_path)  # what a bundle built without PyPI holds
    target = tmp_path / "target"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--target", str(target), str(wheel)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (target / "typer" / "__init__.py").read_bytes() == Path(dist.locate_file("typer/__init__.py")).read_bytes()
    (tmp_path / "fetched").mkdir()
    fetched, source = fetch_wheel(dist, tmp_path / "fetched")  # pinned: PyPI's wheel, or the installed files
    assert fetched.name.startswith(f"typer-{dist.version}-") and source in ("PyPI", "installed files")
