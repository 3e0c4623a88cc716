"""``prefkit kernel run``: a kernel bundle's submission for a test set (what the kernel runs on Kaggle).

A bundle (the dataset folder ``prefkit kernel build`` writes) lists its runs and their
checkpoints in ``prefkit-bundle.json``. Every checkpoint predicts the test pairs through
:func:`prefkit.infer.predict.predict_file` (what ``prefkit predict`` runs); a run's
prediction is the mean over its folds (as a run's ``test.csv`` is); the runs are then
combined by the saved stacker (:class:`prefkit.stacking.SavedStack`, what ``prefkit stack``
fitted) or by a plain average, and the submission is built and checked against
``sample_submission.csv`` (:func:`prefkit.submission.write_submission`). A test row the
reader cannot read (a malformed cell) is said and given the mean prediction: on a hidden
test set one odd row must not cost the whole submission.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from prefkit.errors import InputError
from prefkit.models.transformer import CHECKPOINT_META
from prefkit.models.transformer import read_checkpoint_meta as read_meta

BUNDLE_FILE = "prefkit-bundle.json"
COMBINE_METHODS = ("stack", "average")

__all__ = ["BUNDLE_FILE", "CHECKPOINT_META", "RunEntry", "read_bundle", "read_meta", "run_bundle"]


@dataclass
class RunEntry:
    """A bundled run: its model name (the stacker's input name) and checkpoint folders (relative to the bundle)."""

    name: str
    checkpoints: list[str]


def read_bundle(bundle_dir: str | Path) -> tuple[dict, list[RunEntry]]:
    path = Path(bundle_dir) / BUNDLE_FILE
    if not path.is_file():
        raise InputError(f"not a kernel bundle (no {BUNDLE_FILE}): give the dataset folder prefkit kernel build wrote", file=bundle_dir)
    try:
        tree = json.loads(path.read_text())
        runs = [RunEntry(str(r["name"]), [str(c) for c in r["checkpoints"]]) for r in tree["runs"]]
        method = tree["combine"]["method"]
    except (ValueError, KeyError, TypeError):
        raise InputError("not a readable bundle file (runs, combine)", file=path) from None
    if method not in COMBINE_METHODS or not runs or not all(r.checkpoints for r in runs):
        raise InputError(f"combine.method must be one of {list(COMBINE_METHODS)}, with at least one run and checkpoint", file=path)
    for r in runs:
        for c in r.checkpoints:
            if not (Path(bundle_dir) / c / CHECKPOINT_META).is_file():
                raise InputError(f"run {r.name!r}: checkpoint {c} is missing from the bundle", file=path)
    return tree, runs


@contextlib.contextmanager
def working_directory(path: Path):
    """Run inside ``path``: a bundled LoRA checkpoint names its base model relative to the bundle."""
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def predict_run(bundle_dir: Path, run: RunEntry, table: pd.DataFrame, work: Path, device: str | None, infer: list[str]) -> np.ndarray:
    """The run's predictions of ``table``'s rows as the stacker reads them (probabilities, and
    an item scorer's scores): the mean over its checkpoints' predictions."""
    from prefkit.infer.predict import predict_file
    from prefkit.stacking import run_matrix

    probs = []
    for k, ckpt in enumerate(run.checkpoints):
        preds = predict_file(bundle_dir / ckpt, table, work / f"{run.name}-{k}.csv", model_name=run.name, overrides=infer, device=device)
        probs.append(run_matrix(preds))
    return np.mean(probs, axis=0)


def sample_submission_beside(test_path: Path) -> Path | None:
    sample = test_path.parent / "sample_submission.csv"
    return sample if sample.is_file() else None


def fill_unread_rows(preds: pd.DataFrame, sample: pd.DataFrame, echo) -> pd.DataFrame:
    """``preds`` plus, for the sample's ids the test file gave no readable row for (a malformed
    cell skipped by the reader), the mean prediction: a hidden test set's odd row costs a
    class-rate guess, not the whole submission."""
    from prefkit.predictions import make_predictions, prob_matrix

    missing = pd.Index(sample["id"].astype(str).unique()).difference(preds["id"].astype(str))
    if not len(missing):
        return preds
    echo(f"{len(missing)} test row(s) unreadable (first id {missing[0]!r}): given the mean prediction")
    mean = np.tile(prob_matrix(preds).mean(axis=0), (len(missing), 1))
    return pd.concat([preds, make_predictions(missing, mean, str(preds["model"].iloc[0]), -1)], ignore_index=True)


def run_bundle(bundle_dir, test_path, out, sample_path=None, device: str | None = None, echo=print) -> Path:
    """Predict ``test_path`` with the bundle and write the validated submission ``out``."""
    from prefkit.data import read_pairs
    from prefkit.data.kaggle import read_sample_submission
    from prefkit.predictions import make_predictions
    from prefkit.stacking import SavedStack
    from prefkit.submission import write_submission

    bundle_dir, test_path, out = Path(bundle_dir).resolve(), Path(test_path).resolve(), Path(out).resolve()
    tree, runs = read_bundle(bundle_dir)
    sample = Path(sample_path).resolve() if sample_path else sample_submission_beside(test_path)
    if sample is None:
        raise InputError("no sample_submission.csv beside the test file (pass --sample)", file=test_path)
    table = read_pairs(test_path, "kaggle", on_bad_row="skip")  # a bad row is filled in below, not fatal
    if not len(table):
        raise InputError("no readable test row", file=test_path)
    echo(f"{len(table)} test pairs, {len(runs)} run(s), {sum(len(r.checkpoints) for r in runs)} checkpoint(s), combined by {tree['combine']['method']}")
    with tempfile.TemporaryDirectory(prefix="prefkit-kernel-") as tmp, working_directory(bundle_dir):
        probs = [predict_run(bundle_dir, r, table, Path(tmp), device, list(tree.get("infer", []))) for r in runs]
    if tree["combine"]["method"] == "stack":
        saved = SavedStack.load(bundle_dir / tree["combine"]["stack"])
        by_name = {r.name: p for r, p in zip(runs, probs)}
        missing = [n for n in saved.inputs if n not in by_name]
        if missing:
            raise InputError(f"the stacker's input model(s) {missing} are not bundled runs", file=bundle_dir / BUNDLE_FILE)
        combined = saved.predict([by_name[n] for n in saved.inputs])
    else:
        combined = np.mean([p[:, :3] for p in probs], axis=0)  # the probabilities
    preds = make_predictions(table["id"].astype(str), combined, "kernel", -1)
    preds = fill_unread_rows(preds, read_sample_submission(sample), echo)
    path = write_submission(preds, sample, out, clip=float(tree.get("clip", 1e-6)))
    echo(f"submission: {path}")
    return path
