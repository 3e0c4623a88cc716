"""Several processes (torchrun, DDP over gloo on CPU): the folds train, the validation and
test predictions of every process are gathered into complete files, the fold checkpoint
reproduces them on its own, and an interrupted run resumes to the same predictions.
Under FSDP (accelerate's FSDP2 path run on CPU processes), a fold whose best step is not
its last goes back to the best weights in every shard, before and after a resume."""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from prefkit.data.kaggle import read_kaggle_csv
from prefkit.data.synthetic import write_synthetic_arena
from prefkit.infer.predict import Predictor
from prefkit.testing.tiny import write_tiny_checkpoint
from prefkit.predictions import prob_matrix, read_predictions

COMMON = [
    "model.lora.enabled=true", "render.max_length=48", "train.batch_size=4", "train.eval_batch_size=5",
    "train.folds=[1]", "train.device=cpu",
]  # fmt: skip


@pytest.fixture(scope="module")
def arena(tmp_path_factory):
    """A small Kaggle-layout folder and a tiny random Llama."""
    root = tmp_path_factory.mktemp("ddp")
    write_synthetic_arena(root / "data", n_train=120, n_test=21, seed=3)
    return root / "data", write_tiny_checkpoint(root / "llama", "llama", hidden=32)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_two_processes(arena, output_dir, *overrides) -> None:
    """`prefkit train-transformer` under torchrun (what `accelerate launch` runs on GPUs)."""
    data, model = arena
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
        "-m", "prefkit", "train-transformer", "name=ddp", f"output_dir={output_dir}", f"data.dir={data}",
        f"model.name_or_path={model}", *COMMON, *overrides,
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("batches", [[], ["train.max_tokens=120", "train.packing=on"]], ids=["padded", "packed"])
def test_two_process_run_gathers_complete_predictions(tmp_path, arena, batches):
    _train_two_processes(arena, tmp_path, "train.max_steps=3", *batches)
    fold = tmp_path / "ddp" / "fold_1"
    record = json.loads((fold / "done.json").read_text())
    assert record["device"] == "cpu x2" and record["packed"] == bool(batches)
    oof = read_predictions(fold / "oof.csv")
    assert len(oof) == record["val_pairs"] and oof["id"].is_unique  # every validation row, once
    test_pairs = read_kaggle_csv(arena[0] / "test.csv")
    test = read_predictions(fold / "test.csv")
    assert list(test["id"]) == list(test_pairs["id"].astype(str))
    assert np.allclose(prob_matrix(test).sum(axis=1), 1.0)
    # The saved checkpoint, loaded in one process, gives the gathered test predictions.
    again = Predictor(fold / "checkpoint", device="cpu").predict(test_pairs)
    np.testing.assert_allclose(again, prob_matrix(test), atol=1e-5)


def test_two_process_run_resumes_to_the_same_predictions(tmp_path, arena):
    steps = ["train.max_steps=4", "train.evals_per_epoch=1", "train.state_every_steps=1", "train.keep_state=true"]
    _train_two_processes(arena, tmp_path / "full", *steps)
    fold = tmp_path / "full" / "ddp" / "fold_1"
    # Stand-in for a run killed after step 3: its last state kept, the fold not finished.
    cut = tmp_path / "cut" / "ddp" / "fold_1"
    cut.mkdir(parents=True)
    shutil.copytree(fold / "state", cut / "state")
    for name in ("run.json", "config.yaml"):  # what a killed run leaves beside its folds
        shutil.copy(fold.parent / name, cut.parent / name)
    assert json.loads((cut / "state" / "progress.json").read_text())["step"] == 3

    _train_two_processes(arena, tmp_path / "cut", *steps)
    assert "resuming at step 3" in (tmp_path / "cut" / "ddp" / "train.log").read_text()
    for name in ("oof.csv", "test.csv"):
        resumed, full = read_predictions(cut / name), read_predictions(fold / name)
        np.testing.assert_allclose(prob_matrix(resumed), prob_matrix(full), atol=1e-6)


FSDP_WORKER = """
import sys
import torch, torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from prefkit.config import load_config
from prefkit.models.transformer import build_model
from prefkit.train.state import restore_sharded_state, trainable_state

dist.init_process_group("gloo")
mesh = init_device_mesh("cpu", (dist.get_world_size(),))
cfg = load_config(None, [f"model.name_or_path={sys.argv[1]}", "model.lora.enabled=true"])
torch.manual_seed(0)
model = build_model(cfg.model)
for layer in model.base_model.model.model.layers:
    fully_shard(layer, mesh=mesh)
fully_shard(model, mesh=mesh)
# what accelerate's get_state_dict gives under FSDP2: full tensors, on rank 0 only
full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, cpu_offload=True))
best = trainable_state(model, full)
trainable = {n for n, p in model.named_parameters() if p.requires_grad}
if dist.get_rank() == 0:
    assert set(best) == trainable and len(best) < len(full), (sorted(best)[:3], len(full))
else:
    assert best == {}
before = {n: p.full_tensor().clone() for n, p in model.named_parameters()}
with torch.no_grad():
    for p in model.parameters():
        if p.requires_grad:
            p.add_(0.5)  # training moves on past the best step
restore_sharded_state(model, best)
for n, p in model.named_parameters():
    assert torch.equal(p.full_tensor(), before[n]), n
print("restored", dist.get_rank(), len(trainable))
dist.destroy_process_group()
"""


def test_fsdp_sharded_model_goes_back_to_its_best_weights(tmp_path, arena):
    worker = tmp_path / "worker.py"
    worker.write_text(FSDP_WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()), str(worker), str(arena[1])]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("restored") == 2


# accelerate enables FSDP only for GPU-type process groups: the worker declares one while
# the device stays the CPU, so accelerate's own FSDP2 code (wrapping, gathering, state
# saving) runs as on GPUs. It prints the sharded units, then runs the prefkit CLI.
FSDP_CLI_WORKER = """
import os, sys
os.environ.update(ACCELERATE_USE_FSDP="true", FSDP_VERSION="2", FSDP_AUTO_WRAP_POLICY="TRANSFORMER_BASED_WRAP",
                  FSDP_STATE_DICT_TYPE="FULL_STATE_DICT", FSDP_RESHARD_AFTER_FORWARD="true")
from accelerate import Accelerator
from accelerate.state import PartialState
from accelerate.utils import DistributedType
PartialState(cpu=True)._shared_state["distributed_type"] = DistributedType.MULTI_GPU
prepare = Accelerator.prepare
def reporting_prepare(self, *args):
    out = prepare(self, *args)
    from torch.distributed.fsdp import FSDPModule
    units = [n for n, m in out[0].named_modules() if isinstance(m, FSDPModule)]
    if self.is_main_process:
        print("FSDP units:", ",".join(units), file=sys.stderr, flush=True)
    return out
Accelerator.prepare = reporting_prepare
from prefkit.cli import entry
sys.argv = ["prefkit", *sys.argv[1:]]
entry()
"""
# A handful of training pairs and many steps: the model overfits, the best step comes early.
OVERFIT = ["train.max_steps=16", "train.lr=0.05", "train.max_train_pairs=8", "train.evals_per_epoch=1"]


def _train_fsdp(tmp_path, arena, output_dir, *overrides) -> str:
    data, model = arena
    worker = tmp_path / "fsdp_cli.py"
    worker.write_text(FSDP_CLI_WORKER)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()), str(worker),
        "train-transformer", "name=fsdp", f"output_dir={output_dir}", f"data.dir={data}", f"model.name_or_path={model}",
        *COMMON, *OVERFIT, *overrides,
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if "FSDP units:" not in done.stderr and done.returncode == 0:
        pytest.skip("this accelerate version does not run FSDP on CPU processes")
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


@pytest.mark.parametrize("batches", [[], ["train.max_tokens=120", "train.packing=on"]], ids=["padded", "packed"])
def test_fsdp_fold_goes_back_to_its_best_step(tmp_path, arena, batches):
    log = _train_fsdp(tmp_path, arena, tmp_path / "runs", *batches)
    units = log.split("FSDP units:")[1].splitlines()[0].split(",")
    assert any(u.endswith("layers.0") for u in units), units  # sharded per decoder layer, packed too
    fold = tmp_path / "runs" / "fsdp" / "fold_1"
    record = json.loads((fold / "done.json").read_text())
    assert record["best_step"] < record["steps"]  # the restore ran
    test = read_predictions(fold / "test.csv")
    again = Predictor(fold / "checkpoint", device="cpu").predict(read_kaggle_csv(arena[0] / "test.csv"))
    np.testing.assert_allclose(again, prob_matrix(test), atol=1e-5)  # test predictions of the best weights


def test_fsdp_resume_after_the_best_step_predicts_with_the_best_weights(tmp_path, arena):
    keep = ["train.state_every_steps=1", "train.keep_state=true"]
    _train_fsdp(tmp_path, arena, tmp_path / "full", *keep)
    fold = tmp_path / "full" / "fsdp" / "fold_1"
    best = json.loads((fold / "done.json").read_text())["best_step"]
    cut = tmp_path / "cut" / "fsdp" / "fold_1"
    cut.mkdir(parents=True)
    shutil.copytree(fold / "state", cut / "state")  # the last state (step 15), saved after the best step
    shutil.copytree(fold / "checkpoint", cut / "checkpoint")
    for name in ("run.json", "config.yaml"):  # what a killed run leaves beside its folds
        shutil.copy(fold.parent / name, cut.parent / name)
    assert json.loads((cut / "state" / "progress.json").read_text())["best_step"] == best < 15

    _train_fsdp(tmp_path, arena, tmp_path / "cut", *keep)
    for name in ("oof.csv", "test.csv"):
        np.testing.assert_allclose(prob_matrix(read_predictions(cut / name)), prob_matrix(read_predictions(fold / name)), atol=1e-5)
