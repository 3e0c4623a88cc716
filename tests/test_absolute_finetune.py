"""The fine-tuning mode of the two-stage runner on the engine (tiny random BERT, CPU): stage 1
an item scorer on same-fold soft-BT pairs, stage 2 regressions warm-started per fold."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from prefkit.absolute.data import ItemTable
from prefkit.absolute.finetune import same_fold_pairs

torch.set_num_threads(1)


def test_same_fold_pairs_never_cross_folds():
    items = pd.DataFrame({"id": [f"e{k}" for k in range(20)], "text": [f"text {k}" for k in range(20)], "a": np.arange(20.0), "b": 2 * np.arange(20.0) + 1})
    folds = np.arange(20) % 4
    pairs, pair_folds = same_fold_pairs(ItemTable(items, ["a", "b"], "mem"), folds, k=3, gamma=1.0, seed=0)
    fold_of = dict(zip(items["id"], folds))
    left, right = zip(*(i.split("__") for i in pairs["id"]))
    assert all(fold_of[x] == fold_of[y] == f for x, y, f in zip(left, right, pair_folds))
    assert len(pairs) == 20 * 3
    # a and b rise together: the mean standardised target orders as a, so higher a wins
    a = dict(zip(items["id"], items["a"]))
    assert all((p > 0.5) == (a[x] > a[y]) for x, y, p in zip(left, right, pairs["p_a"]))


def test_finetune_mode_runs_both_stages_and_warm_starts_from_stage_one(tmp_path, capsys):
    import transformers

    from prefkit.cli import main
    from prefkit.testing.tiny import write_tiny_checkpoint

    transformers.logging.set_verbosity_error()
    bert = write_tiny_checkpoint(tmp_path / "bert", "bert")
    rng = np.random.default_rng(0)
    n = 16
    lengths = rng.integers(2, 20, size=n)
    words = np.array("the quick brown fox jumps over lazy dog".split())
    pd.DataFrame({"text_id": [f"e{k}" for k in range(n)], "full_text": [" ".join(rng.choice(words, size=m)) for m in lengths],
                  "cohesion": 1 + 0.5 * (lengths // 4)}).to_csv(tmp_path / "train.csv", index=False)  # fmt: skip
    (tmp_path / "fold_map.json").write_text(json.dumps({f"e{k}": "AB"[k % 2] for k in range(n)}))
    run = f"model:\n  name_or_path: {bert}\nrender:\n  max_length: 32\ntrain:\n  device: cpu\n  max_steps: 2\n  batch_size: 4\n  lr: 1.0e-3\n"
    (tmp_path / "stage.yaml").write_text(run)
    out = tmp_path / "out"
    args = ["absolute", "run", "mode=finetune", "--data", str(tmp_path), "--out", str(out), "pairs.k=2",
            f"finetune.stage1_config={tmp_path / 'stage.yaml'}", f"finetune.stage2_config={tmp_path / 'stage.yaml'}"]  # fmt: skip
    assert main(args) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    figures = dict(kv.split("=") for kv in last.split())
    assert set(figures) == {"mcrmse_absolute", "mcrmse_two_stage"} and all(np.isfinite(float(v)) for v in figures.values())
    for k in (0, 1):
        done = json.loads((out / f"two_stage_fold{k}" / f"fold_{k}" / "done.json").read_text())
        assert str(out / "stage1" / f"fold_{k}" / "checkpoint") in json.dumps(done)  # stage 2 began from stage 1 of its fold
    assert json.loads((out / "metrics.json").read_text())["oof"]["two_stage"]["n"] == n
