"""``prefkit kernel build``: an offline Kaggle kernel assembled from run folders.

``kernels/<name>/`` gets

* ``kernel.py`` (and ``kernel.ipynb``, the same code as one notebook cell): installs prefkit and
  the bundled dependencies with ``pip install --no-index --find-links``, then runs
  ``prefkit kernel run`` on the competition's ``test.csv`` (:mod:`prefkit.kernel.bundle`: the
  prediction path of ``prefkit predict`` per checkpoint, then the saved stacker or a plain
  average, then a validated ``submission.csv``); no model code is copied into the kernel;
* ``kernel-metadata.json``: the competition and the dataset as sources, GPU on, internet off;
* ``dataset/`` (uploaded as a Kaggle dataset, ``dataset-metadata.json``): ``prefkit-bundle.json``
  (what to predict with and how to combine), the checkpoints (every fold's, or one checkpoint
  of fold-averaged weights), the base model of LoRA checkpoints, the stack's ``stacker.json``,
  and ``wheels/``: prefkit's wheel and a wheel of every dependency the Kaggle image lacks
  (``kaggle_image.txt`` lists what it has), pinned to the versions installed here.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from prefkit.atomic import atomic_directory
from prefkit.errors import InputError
from prefkit.kernel.bundle import BUNDLE_FILE, CHECKPOINT_META, RunEntry, read_meta
from prefkit.kernel.wheels import bundle_wheels
from prefkit.rundir import finished_fold_dirs

KERNEL_MARKER = ".prefkit-kernel"  # a kernels/<name>/ folder this command wrote (and may replace)
WEIGHTS = ("folds", "average")
KERNEL_TYPES = ("notebook", "script")
OWNER_PLACEHOLDER = "your-kaggle-username"  # replaced by the credentials' user name on push


@dataclass
class KernelBuild:
    kernel_dir: Path
    dataset_dir: Path
    kernel_id: str
    dataset_id: str
    runs: list[RunEntry]
    wheels: list[str] = field(default_factory=list)
    combine: str = "average"


def slug(text: str) -> str:
    """Kaggle's slug form: lower case letters, digits and dashes."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", text.lower())).strip("-")


def fold_checkpoints(run_dir: Path) -> list[Path]:
    """The finished folds' checkpoints of a transformer run (``fold_<k>/checkpoint`` beside a ``done.json``)."""
    found = [d / "checkpoint" for _, d in finished_fold_dirs(run_dir) if (d / "checkpoint" / CHECKPOINT_META).exists()]
    if not found:
        raise InputError("not a transformer run with finished folds (no fold_<k>/checkpoint beside a done.json): "
                         "a kernel predicts with checkpoints", file=run_dir)  # fmt: skip
    return found


def run_names(run_dirs: list[Path]) -> list[str]:
    """The runs' model names as ``prefkit stack`` names them (its stacker's inputs)."""
    from prefkit.stacking import read_runs

    return [r.name for r in read_runs(run_dirs)]


def copy_checkpoint(src: Path, dst: Path, bases: dict[str, str], dataset_dir: Path) -> None:
    """``src`` to ``dst``; a LoRA checkpoint's base model is copied once into ``base/`` and
    named relative to the dataset root (``prefkit kernel run`` predicts from there)."""
    if src != dst:
        shutil.copytree(src, dst)
    meta = read_meta(dst)
    if meta["format"] != "lora":
        return
    from prefkit.config import load_config

    init_from = load_config(dst / "config.yaml").model.init_from
    if init_from:
        raise InputError(f"a LoRA checkpoint warm-started from model.init_from={init_from} loads its stage-1 checkpoint too, "
                         "which a kernel does not bundle yet", file=src)  # fmt: skip
    base = Path(meta.get("base_model_abs") or meta["base_model"])
    if not base.is_dir():
        raise InputError(f"the LoRA checkpoint's base model {meta['base_model']!r} is not a local folder: it cannot be bundled", file=src)
    key = str(base.resolve())
    if key not in bases:
        rel = f"base/{slug(base.name) or 'model'}-{len(bases)}"
        shutil.copytree(base, dataset_dir / rel)
        bases[key] = rel
    meta.update(base_model=bases[key], base_model_abs=None)
    (dst / CHECKPOINT_META).write_text(json.dumps(meta, indent=2) + "\n")


def bundle_runs(run_dirs: list[Path], names: list[str], weights: str, dataset_dir: Path) -> list[RunEntry]:
    """Checkpoints of every run into ``dataset_dir/runs/<name>/``: each fold's, or their average."""
    bases: dict[str, str] = {}
    entries = []
    for run_dir, name in zip(run_dirs, names):
        ckpts = fold_checkpoints(run_dir)
        target = dataset_dir / "runs" / slug(name)
        target.mkdir(parents=True)
        if weights == "average" and len(ckpts) > 1:
            from prefkit.infer.folds import average_checkpoints

            averaged = average_checkpoints(ckpts, target / "averaged" / "checkpoint")
            copy_checkpoint(averaged, averaged, bases, dataset_dir)
            rels = [averaged]
        else:
            rels = []
            for c in ckpts:
                copy_checkpoint(c, target / c.parent.name / "checkpoint", bases, dataset_dir)
                rels.append(target / c.parent.name / "checkpoint")
        entries.append(RunEntry(name, [str(p.relative_to(dataset_dir)) for p in rels]))
    return entries


def stack_inputs_in_order(stack_dir: Path, names: list[str], run_dirs: list[Path]):
    """The saved stacker, after checking the runs are exactly its inputs."""
    from prefkit.stacking import SavedStack

    saved = SavedStack.load(stack_dir)
    missing = [n for n in saved.inputs if n not in names]
    extra = [d for d, n in zip(run_dirs, names) if n not in saved.inputs]
    if missing:
        raise InputError(f"the stack's input model(s) {missing} are not among the run folders given", file=stack_dir)
    if extra:
        raise InputError(f"this run is not an input of the stack {stack_dir} (its inputs: {saved.inputs})", file=extra[0])
    return saved


def check_infer_overrides(infer) -> list[str]:
    """``infer.*`` overrides, validated now (a typo is one line here, not a failed kernel on Kaggle)."""
    from prefkit.config import load_config

    infer = list(infer)
    bad = [o for o in infer if not o.startswith("infer.")]
    if bad:
        raise InputError(f"--infer takes infer.* settings (infer.precision=fp16, infer.quantize=8bit, ...), not {bad[0]!r}")
    load_config(None, infer)
    return infer


def entry_script(competition: str) -> str:
    """The kernel's code: install from the bundled wheels, then ``prefkit kernel run``."""
    return ENTRY_TEMPLATE.replace("@COMPETITION@", competition)


def notebook(source: str) -> dict:
    """An .ipynb with ``source`` as its one code cell."""
    return {
        "cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": source.splitlines(keepends=True)}],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}, "language_info": {"name": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def kaggle_owner(owner: str | None) -> str:
    """``owner``, else the user name of the Kaggle credentials here, else a placeholder."""
    if owner:
        return owner
    from prefkit.kernel.kaggle_cli import find_credentials

    creds = find_credentials()
    return creds.username if creds and creds.username else OWNER_PLACEHOLDER


def check_folder(kernel_dir: Path, force: bool) -> None:
    """A kernel folder is replaced whole only when this command wrote it (or with ``force``)."""
    if kernel_dir.exists() and not (kernel_dir / KERNEL_MARKER).exists() and not force:
        raise InputError("exists and was not written by prefkit kernel build: choose another --name, or pass --force to replace it", file=kernel_dir)


def build_kernel(
    run_dirs,
    competition: str,
    name: str | None = None,
    stack_dir=None,
    weights: str = "folds",
    out_root="kernels",
    owner: str | None = None,
    kernel_type: str = "notebook",
    extra_bundle: tuple[str, ...] = (),
    python_version: str | None = None,
    project_dir=None,
    infer: tuple[str, ...] = (),
    force: bool = False,
    echo=print,
) -> KernelBuild:
    """Assemble ``<out_root>/<name>/`` (see the module doc). ``infer``: ``infer.*`` overrides
    (``infer.precision=fp16`` ...) every checkpoint predicts under in the kernel."""
    if weights not in WEIGHTS:
        raise InputError(f"--weights must be one of {list(WEIGHTS)}, not {weights!r}")
    if kernel_type not in KERNEL_TYPES:
        raise InputError(f"--kernel-type must be one of {list(KERNEL_TYPES)}, not {kernel_type!r}")
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise InputError("no run folder given: prefkit kernel build RUN_DIR [RUN_DIR...] --competition SLUG")
    for d in run_dirs:
        if not d.is_dir():
            raise InputError("run folder not found", file=d)
        fold_checkpoints(d)  # every run is checked before anything is written
    infer = check_infer_overrides(infer)
    names = run_names(run_dirs)
    saved = stack_inputs_in_order(Path(stack_dir), names, run_dirs) if stack_dir else None
    if saved is not None:  # the stacker's input order
        order = [names.index(n) for n in saved.inputs]
        run_dirs, names = [run_dirs[i] for i in order], [names[i] for i in order]
    kernel_slug = slug(name or f"{competition}-{Path(stack_dir).name if stack_dir else names[0]}")
    if len(kernel_slug) < 5:
        raise InputError(f"kernel name {kernel_slug!r} is too short: Kaggle slugs have 5 to 50 characters (--name)")
    kernel_slug = kernel_slug[:50].strip("-")
    owner = kaggle_owner(owner)
    kernel_dir = Path(out_root) / kernel_slug
    check_folder(kernel_dir, force)
    echo(f"bundling {len(run_dirs)} run(s) ({weights} weights) into {kernel_dir / 'dataset'}")
    plan = KernelPlan(competition, kernel_slug, owner, kernel_type, run_dirs, names, weights, saved, stack_dir,
                      tuple(extra_bundle), python_version, project_dir, infer)  # fmt: skip
    with atomic_directory(kernel_dir) as staging:  # a failed build leaves the previous kernel folder
        ids, entries, wheels = _write_kernel(staging, plan, echo)
    if owner == OWNER_PLACEHOLDER:
        echo(f"no Kaggle user name (--owner, or credentials): the ids say {OWNER_PLACEHOLDER!r}; prefkit kernel push fills in yours")
    return KernelBuild(kernel_dir, kernel_dir / "dataset", *ids, entries, wheels, "stack" if saved is not None else "average")


@dataclass
class KernelPlan:
    """What :func:`build_kernel` checked and will write."""

    competition: str
    kernel_slug: str
    owner: str
    kernel_type: str
    run_dirs: list[Path]
    names: list[str]
    weights: str
    saved: object  # prefkit.stacking.SavedStack | None
    stack_dir: object
    extra_bundle: tuple[str, ...]
    python_version: str | None
    project_dir: object
    infer: list[str]


def _write_kernel(kernel_dir: Path, plan: KernelPlan, echo):
    """The kernel folder's contents into ``kernel_dir``; returns ``((kernel id, dataset id), runs, wheels)``."""
    competition, kernel_slug, owner, stack_dir, saved = plan.competition, plan.kernel_slug, plan.owner, plan.stack_dir, plan.saved
    dataset_dir = kernel_dir / "dataset"
    dataset_dir.mkdir(parents=True)
    (kernel_dir / KERNEL_MARKER).write_text("written by prefkit kernel build\n")
    entries = bundle_runs(plan.run_dirs, plan.names, plan.weights, dataset_dir)
    combine: dict = {"method": "average"}
    clip = _stack_clip(stack_dir)
    if saved is not None:
        (dataset_dir / "stack").mkdir()
        saved.save(dataset_dir / "stack")
        combine = {"method": "stack", "stack": "stack", "source": str(stack_dir)}
    wheels = bundle_wheels(dataset_dir / "wheels", extra=plan.extra_bundle, python_version=plan.python_version, project_dir=plan.project_dir, echo=echo)

    dataset_slug = f"{kernel_slug[:44].strip('-')}-data"
    dataset_id = f"{owner}/{dataset_slug}"
    bundle = {
        "format": 1,
        "competition": competition,
        "prefkit_version": metadata.version("prefkit"),
        "weights": plan.weights,
        "runs": [{"name": e.name, "checkpoints": e.checkpoints} for e in entries],
        "combine": combine,
        "clip": clip,
        "infer": list(plan.infer),
        "wheels": "wheels",
    }
    (dataset_dir / BUNDLE_FILE).write_text(json.dumps(bundle, indent=2) + "\n")
    _write_json(dataset_dir / "dataset-metadata.json", {"title": dataset_slug, "id": dataset_id, "licenses": [{"name": "CC0-1.0"}]})

    script = entry_script(competition)
    (kernel_dir / "kernel.py").write_text(script)
    _write_json(kernel_dir / "kernel.ipynb", notebook(script))
    kernel_id = f"{owner}/{kernel_slug}"
    _write_json(kernel_dir / "kernel-metadata.json", {
        "id": kernel_id,
        "title": kernel_slug,
        "code_file": "kernel.ipynb" if plan.kernel_type == "notebook" else "kernel.py",
        "language": "python",
        "kernel_type": plan.kernel_type,
        "is_private": True,
        "enable_gpu": True,
        "enable_tpu": False,
        "enable_internet": False,
        "dataset_sources": [dataset_id],
        "competition_sources": [competition],
        "kernel_sources": [],
        "model_sources": [],
    })  # fmt: skip
    return (kernel_id, dataset_id), entries, wheels


def _stack_clip(stack_dir) -> float:
    """The stack's ``stack.clip`` (its saved config), else the default: the submission is clipped as ``prefkit stack`` clips it."""
    from prefkit.config import StackConfig

    if stack_dir and (Path(stack_dir) / "config.yaml").exists():
        from prefkit.config import load_config

        return float(load_config(Path(stack_dir) / "config.yaml").stack.clip)
    return float(StackConfig().clip)


def _write_json(path: Path, tree: dict) -> None:
    path.write_text(json.dumps(tree, indent=1) + "\n")


ENTRY_TEMPLATE = '''"""Offline inference for the Kaggle competition @COMPETITION@ (written by `prefkit kernel build`).

Installs prefkit and the dependencies the Kaggle image lacks from the attached dataset's wheels
(no index, no internet), then `prefkit kernel run`: every bundled checkpoint predicts test.csv
through prefkit's prediction path, the saved stacker (or a plain average) combines them, and
submission.csv is validated against sample_submission.csv before it is written.
Outside Kaggle: python kernel.py --bundle DATASET_DIR --test TEST_CSV --out submission.csv
"""
import argparse
import glob
import os
import subprocess
import sys

COMPETITION = "@COMPETITION@"
BUNDLE_FILE = "prefkit-bundle.json"


def first(patterns):
    for pattern in patterns:
        found = sorted(glob.glob(pattern, recursive=True))
        if found:
            return found[0]
    return None


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", help="the dataset folder holding " + BUNDLE_FILE)
    parser.add_argument("--test", help="the competition's test.csv")
    parser.add_argument("--out", help="where submission.csv goes")
    args, _ = parser.parse_known_args(argv)  # a notebook's own arguments are ignored
    bundle_file = first([os.path.join(args.bundle, BUNDLE_FILE)] if args.bundle else ["/kaggle/input/**/" + BUNDLE_FILE])
    test = args.test or first(["/kaggle/input/" + COMPETITION + "/test.csv", "/kaggle/input/**/" + COMPETITION + "/test.csv"])
    out = args.out or ("/kaggle/working/submission.csv" if os.path.isdir("/kaggle/working") else "submission.csv")
    if bundle_file is None or not os.path.isfile(bundle_file):
        sys.exit("error: no " + BUNDLE_FILE + " found: attach the kernel's dataset (or pass --bundle)")
    if test is None or not os.path.isfile(test):
        sys.exit("error: no test.csv of " + COMPETITION + " found: attach the competition (or pass --test)")
    bundle = os.path.dirname(os.path.abspath(bundle_file))
    wheels = os.path.join(bundle, "wheels")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--find-links", wheels,
                    "-r", os.path.join(wheels, "requirements.txt")], check=True)
    subprocess.run([sys.executable, "-m", "prefkit", "kernel", "run", bundle, "--test", test, "--out", out], check=True)


if __name__ == "__main__":
    main(sys.argv[1:])
'''
