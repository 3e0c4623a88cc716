"""Several processes (torchrun, DDP over gloo on CPU): the folds train, the
validation and test predictions of every process are gathered into complete files, and
the fold checkpoint reproduces them on its own."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from prefkit.data.kaggle import read_kaggle_csv
from prefkit.data.synthetic import write_synthetic_arena
from prefkit.infer.predict import Predictor
from prefkit.models.tiny import write_tiny_checkpoint
from prefkit.predictions import prob_matrix, read_predictions


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("batches", [[], ["train.max_tokens=120", "train.packing=on"]], ids=["padded", "packed"])
def test_two_process_run_gathers_complete_predictions(tmp_path, batches):
    data = tmp_path / "data"
    write_synthetic_arena(data, n_train=120, n_test=21, seed=3)
    model = write_tiny_checkpoint(tmp_path / "llama", "llama", hidden=32)
    # torchrun (what `accelerate launch` runs on GPUs); accelerate reads its environment.
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
        "-m", "prefkit", "train-transformer",
        "name=ddp", f"output_dir={tmp_path / 'runs'}", f"data.dir={data}", f"model.name_or_path={model}",
        "model.lora.enabled=true", "render.max_length=48", "train.batch_size=4", "train.eval_batch_size=5",
        "train.max_steps=3", "train.folds=[1]", "train.device=cpu", *batches,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]

    fold = tmp_path / "runs" / "ddp" / "fold_1"
    record = json.loads((fold / "done.json").read_text())
    assert record["device"] == "cpu x2" and record["packed"] == bool(batches)
    oof = read_predictions(fold / "oof.csv")
    assert len(oof) == record["val_pairs"] and oof["id"].is_unique  # every validation row, once
    test_pairs = read_kaggle_csv(data / "test.csv")
    test = read_predictions(fold / "test.csv")
    assert list(test["id"]) == list(test_pairs["id"].astype(str))
    assert np.allclose(prob_matrix(test).sum(axis=1), 1.0)
    # The saved checkpoint, loaded in one process, gives the gathered test predictions.
    again = Predictor(fold / "checkpoint", device="cpu").predict(test_pairs)
    np.testing.assert_allclose(again, prob_matrix(test), atol=1e-5)
