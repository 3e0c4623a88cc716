"""``prefkit kernel ...`` (an offline Kaggle kernel: build, estimate, push, status) and
``prefkit kaggle ...`` (download a competition's data, submit a file)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from prefkit.cli_app import app

kernel_app = typer.Typer(help="Offline Kaggle kernels: build one from run folders, estimate its run time, push it.", no_args_is_help=True)
kaggle_app = typer.Typer(help="The kaggle CLI around prefkit: download competition data, submit a validated file.", no_args_is_help=True)
app.add_typer(kernel_app, name="kernel")
app.add_typer(kaggle_app, name="kaggle")


@kernel_app.command("build")
def build_cmd(
    runs: Annotated[list[str], typer.Argument(help="Transformer run folders (runs/<name>, with fold_<k>/checkpoint).", metavar="RUN_DIR", show_default=False)],
    competition: Annotated[str, typer.Option("--competition", help="The competition's slug (e.g. llm-classification-finetuning).", show_default=False)],
    name: Annotated[Optional[str], typer.Option("--name", help="Kernel slug (default: <competition>-<stack or run name>).")] = None,
    stack: Annotated[Optional[str], typer.Option("--stack", help="A prefkit stack folder of these runs: its saved stacker combines them (default: a plain average).")] = None,
    weights: Annotated[str, typer.Option("--weights", help="folds: every fold's checkpoint, predictions averaged; average: one checkpoint of fold-averaged weights.")] = "folds",
    out_root: Annotated[str, typer.Option("--out-root", help="Folder the kernel folder goes in.")] = "kernels",
    owner: Annotated[Optional[str], typer.Option("--owner", help="Kaggle user name in the ids (default: the credentials'; push fills it in).")] = None,
    kernel_type: Annotated[str, typer.Option("--kernel-type", help="notebook (kernel.ipynb) or script (kernel.py).")] = "notebook",
    bundle: Annotated[Optional[list[str]], typer.Option("--bundle", help="Also bundle this package the image has (its version here); repeatable.")] = None,
    python_version: Annotated[Optional[str], typer.Option("--python-version", help="Fetch wheels for this Python (e.g. 3.11; default: this one).")] = None,
    project: Annotated[Optional[str], typer.Option("--project", help="prefkit's source tree for its wheel (default: found).")] = None,
    infer: Annotated[Optional[list[str]], typer.Option("--infer", help="An infer.* setting the kernel predicts under (infer.precision=fp16, infer.quantize=8bit, infer.devices=cuda:0,cuda:1 ...); repeatable.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a kernel folder prefkit did not write.")] = False,
) -> None:
    """Build kernels/<name>/: the offline inference kernel, its metadata and its dataset (checkpoints, stacker, wheels)."""
    from prefkit.kernel.build import build_kernel

    built = build_kernel(runs, competition, name=name, stack_dir=stack, weights=weights, out_root=out_root, owner=owner,
                         kernel_type=kernel_type, extra_bundle=tuple(bundle or ()), python_version=python_version,
                         project_dir=project, infer=tuple(infer or ()), force=force, echo=typer.echo)  # fmt: skip
    size = sum(p.stat().st_size for p in built.dataset_dir.rglob("*") if p.is_file()) / 2**20
    typer.echo(f"kernel {built.kernel_id} ({built.combine} of {len(built.runs)} run(s)), dataset {built.dataset_id} "
               f"({size:.1f} MiB, {len(built.wheels)} wheels) -> {built.kernel_dir}")  # fmt: skip


@kernel_app.command("run")
def run_cmd(
    bundle: Annotated[str, typer.Argument(help="A kernel's dataset folder (holding prefkit-bundle.json).", show_default=False)],
    test: Annotated[str, typer.Option("--test", help="The competition's test.csv.", show_default=False)],
    out: Annotated[str, typer.Option("--out", "-o", help="Submission file to write.")] = "submission.csv",
    sample: Annotated[Optional[str], typer.Option("--sample", help="sample_submission.csv (default: beside --test).")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="cpu or cuda (default: cuda when there is one).")] = None,
) -> None:
    """What the kernel runs: predict --test with every bundled checkpoint, combine, write a validated submission."""
    from prefkit.kernel.bundle import run_bundle
    from prefkit.models.checks import check_device

    run_bundle(bundle, test, out, sample_path=sample, device=check_device(device) if device else None, echo=typer.echo)


@kernel_app.command("push")
def push_cmd(
    kernel_dir: Annotated[str, typer.Argument(help="A folder prefkit kernel build wrote (kernels/<name>).", show_default=False)],
    dataset: Annotated[bool, typer.Option("--dataset/--no-dataset", help="Upload the dataset folder first (new dataset or new version).")] = True,
    notes: Annotated[str, typer.Option("--notes", help="Version notes of the dataset.")] = "prefkit kernel build",
) -> None:
    """Upload the kernel's dataset, then push and run the kernel on Kaggle (needs Kaggle credentials)."""
    from prefkit.kernel.kaggle_cli import push

    push(kernel_dir, dataset=dataset, notes=notes, echo=typer.echo)


@kernel_app.command("status")
def status_cmd(kernel: Annotated[str, typer.Argument(help="owner/slug of the kernel.", show_default=False)]) -> None:
    """The kernel's run status on Kaggle (queued, running, complete, error) and its failure message."""
    from prefkit.kernel.kaggle_cli import status

    status(kernel, echo=typer.echo)


@kaggle_app.command("download")
def download_cmd(
    competition: Annotated[str, typer.Argument(help="The competition's slug.", show_default=False)],
    path: Annotated[Optional[str], typer.Option("--path", "-p", help="Folder for the files (default: data/<competition>).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Download again even where the files are there.")] = False,
) -> None:
    """Download and unzip a competition's files (accept its rules on kaggle.com first)."""
    from prefkit.kernel.kaggle_cli import download

    download(competition, path, force=force, echo=typer.echo)


@kaggle_app.command("submit")
def submit_cmd(
    file: Annotated[str, typer.Argument(help="The submission CSV (for --kernel: the kernel's output file name).", show_default=False)],
    message: Annotated[str, typer.Option("--message", "-m", help="The submission's description.", show_default=False)],
    competition: Annotated[str, typer.Option("--competition", "-c", help="The competition's slug.", show_default=False)],
    sample: Annotated[Optional[str], typer.Option("--sample", help="sample_submission.csv to validate against (default: data/<competition>/).")] = None,
    kernel: Annotated[Optional[str], typer.Option("--kernel", help="Code competitions: submit this kernel's output (owner/slug).")] = None,
    version: Annotated[Optional[int], typer.Option("--version", help="With --kernel: the kernel version.")] = None,
) -> None:
    """Validate FILE against the sample submission, then submit it to the competition."""
    from prefkit.kernel.kaggle_cli import submit

    submit(file, message, competition, sample=sample, kernel=kernel, version=version, echo=typer.echo)
