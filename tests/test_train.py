"""Fold training (CPU, tiny random BERT): outputs, resume after an interruption, skipped
folds, swap modes, accumulation, early stopping, losses and length batching."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import Killed, kill_at
import torch
import torch.nn.functional as F

from prefkit.config import TrainConfig, load_config
from prefkit.testing.tiny import write_tiny_checkpoint
from prefkit.predictions import read_predictions
from prefkit.text.batching import collate, make_length_batches
from prefkit.errors import ConfigError
from prefkit.metrics import log_loss
from prefkit.train.batches import TrainItems, epoch_batches
from prefkit.train.engine import train_folds
from prefkit.train.losses import soft_cross_entropy

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    import transformers

    transformers.logging.set_verbosity_error()
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "bert", "bert")



def _cfg(tmp_path, bert, *overrides):
    return load_config(
        None,
        [
            "name=tiny",
            f"output_dir={tmp_path / 'runs'}",
            f"model.name_or_path={bert}",
            "render.max_length=48",
            "train.batch_size=8",
            "train.eval_batch_size=16",
            "train.lr=1e-3",
            "train.warmup_ratio=0",
            "train.device=cpu",
            *overrides,
        ],
    )


# -- losses ----------------------------------------------------------------------------
def test_soft_label_loss_equals_cross_entropy_on_one_hot():
    torch.manual_seed(0)
    logits = torch.randn(10, 3)
    y = torch.randint(0, 3, (10,))
    onehot = F.one_hot(y, 3).float()
    torch.testing.assert_close(soft_cross_entropy(logits, onehot), F.cross_entropy(logits, y))
    torch.testing.assert_close(
        soft_cross_entropy(logits, onehot, label_smoothing=0.1), F.cross_entropy(logits, y, label_smoothing=0.1)
    )
    w = torch.rand(10)
    expected = (F.cross_entropy(logits, y, reduction="none") * w).sum() / w.sum()
    torch.testing.assert_close(soft_cross_entropy(logits, onehot, weights=w), expected)
    # soft targets: the minimum is at the target distribution
    soft = torch.tensor([[0.6, 0.3, 0.1]])
    at_target = soft_cross_entropy(soft.log(), soft)
    assert at_target < soft_cross_entropy(torch.zeros(1, 3), soft)
    np.testing.assert_allclose(log_loss(onehot.numpy(), torch.softmax(logits, -1).numpy()), float(F.cross_entropy(logits, y)), rtol=1e-5)


# -- batching --------------------------------------------------------------------------
def test_length_batches_cover_every_row_once_and_respect_caps():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 300, size=257)
    for kw in ({"batch_size": 16}, {"max_tokens": 1024}, {"batch_size": 8, "max_tokens": 900}):
        for shuffle in (False, True):
            batches = make_length_batches(lengths, shuffle=shuffle, seed=1, bucket_batches=4, **kw)
            flat = sorted(i for b in batches for i in b)
            assert flat == list(range(len(lengths)))
            for b in batches:
                if "batch_size" in kw:
                    assert len(b) <= kw["batch_size"]
                if "max_tokens" in kw and len(b) > 1:
                    assert len(b) * lengths[b].max() <= kw["max_tokens"]
    inference = make_length_batches(lengths, batch_size=16)
    flat = [i for b in inference for i in b]
    assert list(lengths[flat]) == sorted(lengths, reverse=True)  # sorted, longest first
    # training batches: shuffled, yet each batch of similar lengths
    train = make_length_batches(lengths, batch_size=16, shuffle=True, seed=3, bucket_batches=50)
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in train])
    assert spread < 0.3 * (lengths.max() - lengths.min())
    assert train != make_length_batches(lengths, batch_size=16, shuffle=True, seed=4, bucket_batches=50)


def test_collate_right_pads():
    batch = collate([{"input_ids": [5, 6, 7], "index": 0}, {"input_ids": [8], "index": 1}], pad_id=0, pad_to_multiple_of=4)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0], [8, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]


def test_paired_swap_batches_hold_each_pair_with_its_swap():
    n = 20
    seqs = [[1] * (i + 3) for i in range(n)] * 2
    items = TrainItems(seqs, np.zeros((2 * n, 3), np.float32), np.ones(2 * n, np.float32), n)
    tc = TrainConfig(batch_size=8, swap="paired")
    batches = epoch_batches(items, tc, "paired", seed=0)
    assert sorted(i for b in batches for i in b) == list(range(2 * n))
    for b in batches:
        originals = [i for i in b if i < n]
        assert sorted(i - n for i in b if i >= n) == sorted(originals)
        assert len(b) <= 8
    double = epoch_batches(items, TrainConfig(batch_size=8), "double", seed=0)
    assert sorted(i for b in double for i in b) == list(range(2 * n))
    off = epoch_batches(items, TrainConfig(batch_size=8, swap="off"), "off", seed=0)
    assert sorted(i for b in off for i in b) == list(range(n))


# -- whole runs ------------------------------------------------------------------------
def test_fold_run_writes_oof_test_checkpoints_and_log(tmp_path, bert, data):
    pairs, folds, test = data
    cfg = _cfg(tmp_path, bert, "train.max_steps=4", "train.evals_per_epoch=2", "train.swap=paired")
    res = train_folds(cfg, pairs, folds, test_table=test)
    run = cfg.run_dir
    for k in range(3):
        fd = run / f"fold_{k}"
        assert (fd / "checkpoint" / "prefkit_checkpoint.json").exists()
        assert (fd / "done.json").exists() and not (fd / "state").exists()
        oof_k = read_predictions(fd / "oof.csv")
        assert set(oof_k["id"]) == set(pairs["id"][folds == k]) and (oof_k["fold"] == k).all()
    oof = read_predictions(run / "oof.csv")
    assert sorted(oof["id"]) == sorted(pairs["id"]) and (oof["model"] == "tiny").all()
    tst = read_predictions(run / "test.csv")
    assert list(tst["id"]) == list(test["id"]) and (tst["fold"] == -1).all()
    assert np.isfinite(res.oof_metric) and res.oof_metric == pytest.approx(
        log_loss(pairs.set_index("id").loc[oof["id"], ["p_a", "p_b", "p_tie"]].to_numpy(), oof[["p_a", "p_b", "p_tie"]].to_numpy())
    )
    log = (run / "train.log").read_text()
    assert "first training example" in log and "[CLS]" in log and "val log loss" in log
    assert (run / "config.yaml").exists()
    done = json.loads((run / "fold_0" / "done.json").read_text())
    assert done["steps"] == 4 and done["train_pairs_per_second"] > 0
    assert done["evals"][-1]["step"] == 4 and all(e["train_loss"] > 0 for e in done["evals"])
    for plot in ("learning_curves.png", "reliability.png"):
        assert (run / plot).read_bytes().startswith(b"\x89PNG")
    # The fold records what produced it, since a resumed run may carry another config.yaml.
    assert done["device"] == "cpu x1" and done["mixed_precision"] == "no"
    assert done["model"] == cfg.model.name_or_path and done["max_length"] == cfg.render.max_length


def test_resume_after_interruption_gives_the_same_oof(tmp_path, bert, data):
    pairs, folds, test = data
    common = ["train.max_steps=6", "train.state_every_steps=2", "train.evals_per_epoch=2", "train.folds=[1]"]
    full = train_folds(_cfg(tmp_path / "a", bert, *common), pairs, folds, test_table=test)

    cfg = _cfg(tmp_path / "b", bert, *common)

    with pytest.raises(Killed):
        train_folds(cfg, pairs, folds, test_table=test, on_step=kill_at(5))
    state = cfg.run_dir / "fold_1" / "state"
    assert json.loads((state / "progress.json").read_text())["step"] == 4
    assert not (cfg.run_dir / "fold_1" / "done.json").exists()

    steps = []
    resumed = train_folds(cfg, pairs, folds, test_table=test, on_step=lambda f, s, p: steps.append(s))
    assert steps == [5, 6]  # steps 1-4 are not repeated
    np.testing.assert_allclose(resumed.oof[["p_a", "p_b", "p_tie"]].to_numpy(), full.oof[["p_a", "p_b", "p_tie"]].to_numpy(), atol=1e-6)
    np.testing.assert_allclose(resumed.test[["p_a", "p_b", "p_tie"]].to_numpy(), full.test[["p_a", "p_b", "p_tie"]].to_numpy(), atol=1e-6)
    log = (cfg.run_dir / "train.log").read_text()
    assert "resuming at step 4" in log


def test_finished_folds_are_skipped(tmp_path, bert, data):
    pairs, folds, _ = data
    cfg = _cfg(
        tmp_path, bert, "train.max_steps=2", "train.folds=[0]", "train.swap=off", "train.tta_swap=false", "train.max_train_pairs=16"
    )
    first = train_folds(cfg, pairs, folds)
    assert [r.fold for r in first.folds] == [0]
    assert json.loads((cfg.run_dir / "fold_0" / "done.json").read_text())["train_pairs"] == 16

    def must_not_train(fold, step, progress):
        raise AssertionError(f"fold {fold} trained again")

    trained_with = (cfg.run_dir / "config.yaml").read_text()
    # settings that do not change what a fold learns (evaluation batch size, logging) reuse it
    relaunched = cfg.model_copy(update={"train": cfg.train.model_copy(update={"eval_batch_size": 3, "log_every_steps": 1})})
    again = train_folds(relaunched, pairs, folds, on_step=must_not_train)
    assert (cfg.run_dir / "config.yaml").read_text() == trained_with  # combining keeps the training config
    pd.testing.assert_frame_equal(again.oof, first.oof)
    # The log says how the skipped fold was produced (it may come from another machine).
    assert "fold 0: finished earlier, skipped (val log loss" in (cfg.run_dir / "train.log").read_text()
    assert "cpu x1, no, max_length" in (cfg.run_dir / "train.log").read_text()

    trained = []
    cfg2 = cfg.model_copy(update={"train": cfg.train.model_copy(update={"folds": [0, 2]})})
    both = train_folds(cfg2, pairs, folds, on_step=lambda f, s, p: trained.append(f))
    assert set(trained) == {2}
    assert sorted(set(both.oof["fold"])) == [0, 2]


def test_grad_accumulation_and_early_stopping(tmp_path, bert, data):
    pairs, folds, _ = data
    # 24 training pairs doubled by swaps = 48 items = 6 batches of 8; accumulation 2 -> 3 steps/epoch
    cfg = _cfg(
        tmp_path,
        bert,
        "train.grad_accum=2",
        "train.epochs=4",
        "train.evals_per_epoch=3",
        "train.early_stopping_patience=1",
        "train.lr=0.5",  # far too high: validation loss gets worse and training stops early
        "train.folds=[0]",
        "train.tta_swap=false",
    )
    train_folds(cfg, pairs, folds)
    done = json.loads((cfg.run_dir / "fold_0" / "done.json").read_text())
    assert done["total_steps"] == 12
    assert done["stopped_early"] and done["steps"] < 12
    assert done["best_step"] < done["steps"]
    best = min(e["val_log_loss"] for e in done["evals"])
    assert done["val_log_loss"] == pytest.approx(best)
    oof = read_predictions(cfg.run_dir / "fold_0" / "oof.csv")
    y = pairs.set_index("id").loc[oof["id"], ["p_a", "p_b", "p_tie"]].to_numpy()
    assert log_loss(y, oof[["p_a", "p_b", "p_tie"]].to_numpy()) == pytest.approx(best, rel=1e-5)


def test_accelerator_settings_can_change_within_a_process():
    from prefkit.train.engine import make_accelerator

    make_accelerator(TrainConfig(device="cpu"))
    acc = make_accelerator(TrainConfig(device="cpu", mixed_precision="bf16", grad_accum=3))
    assert acc.mixed_precision == "bf16" and acc.gradient_accumulation_steps == 3
    make_accelerator(TrainConfig(device="cpu"))  # back to the defaults for later tests


# -- what a finished fold may be reused for --------------------------------------------
@pytest.mark.parametrize(
    "change, named",
    [
        ("folds.seed=7", "folds.seed=42, now 7"),
        ("render.max_length=40", "render.max_length=48, now 40"),
        ("train.lr=0.5", "train.lr=0.001, now 0.5"),
    ],
)
def test_a_finished_fold_is_never_reused_under_other_settings(tmp_path, bert, data, change, named):
    pairs, folds, _ = data
    common = ["train.max_steps=1", "train.folds=[0]", "train.swap=off", "train.tta_swap=false"]
    train_folds(_cfg(tmp_path, bert, *common), pairs, folds)
    with pytest.raises(ConfigError) as err:
        train_folds(_cfg(tmp_path, bert, *common, change), pairs, folds)
    line = str(err.value)
    assert "fold 0" in line and named in line and "delete" in line and "\n" not in line


def test_other_training_rows_are_not_reused_silently(tmp_path, bert, data):
    pairs, folds, _ = data
    common = ["train.max_steps=1", "train.folds=[0]", "train.swap=off", "train.tta_swap=false"]
    train_folds(_cfg(tmp_path, bert, *common), pairs, folds)
    moved = folds.copy()
    moved[[0, 1]] = moved[[1, 0]]  # another fold map: a row of fold 0 and one of fold 1 trade places
    with pytest.raises(ConfigError, match="other (training|validation|training and validation) rows"):
        train_folds(_cfg(tmp_path, bert, *common), pairs, moved)
    relabelled = pairs.copy()
    tie = relabelled.loc[3, "p_tie"] == 1
    relabelled.loc[3, ["p_a", "p_b", "p_tie"]] = [1.0, 0.0, 0.0] if tie else [0.0, 0.0, 1.0]
    with pytest.raises(ConfigError, match="other (training|validation|training and validation) rows"):
        train_folds(_cfg(tmp_path, bert, *common), relabelled, folds)


def test_validation_metrics_use_sample_weights(tmp_path, bert, data):
    pairs, folds, _ = data
    weighted = pairs.copy()
    weighted["weight"] = np.where(np.arange(len(pairs)) % 2 == 0, 5.0, 0.2)
    cfg = _cfg(tmp_path, bert, "train.max_steps=2", "train.folds=[0]", "train.swap=off", "train.tta_swap=false")
    res = train_folds(cfg, weighted, folds)
    done = json.loads((cfg.run_dir / "fold_0" / "done.json").read_text())
    oof = res.oof.set_index("id").loc[weighted["id"][folds == 0]]
    y = weighted.set_index("id").loc[oof.index, ["p_a", "p_b", "p_tie"]].to_numpy()
    w = weighted.set_index("id").loc[oof.index, "weight"].to_numpy()
    probs = oof[["p_a", "p_b", "p_tie"]].to_numpy()
    assert done["val_log_loss"] == pytest.approx(log_loss(y, probs, w), rel=1e-6)
    assert done["val_log_loss"] != pytest.approx(log_loss(y, probs), rel=1e-4)
    assert res.oof_metric == pytest.approx(log_loss(y, probs, w), rel=1e-6)


def test_rows_of_fold_minus_one_always_train_and_are_never_validated(tmp_path, bert, data):
    pairs, folds, _ = data
    folds = folds.copy()
    folds[:6] = -1
    cfg = _cfg(tmp_path, bert, "train.max_steps=1", "train.swap=off", "train.tta_swap=false")
    res = train_folds(cfg, pairs, folds)
    assert sorted(r.fold for r in res.folds) == [0, 1, 2]
    assert set(res.oof["id"]) == set(pairs["id"][folds >= 0])
    done = json.loads((cfg.run_dir / "fold_0" / "done.json").read_text())
    assert done["train_pairs"] == int((folds != 0).sum())  # the -1 rows among them


def test_cli_rerun_with_another_fold_seed_stops_with_one_line(tmp_path, bert, capsys):
    from prefkit.cli import main
    from prefkit.data.synthetic import write_synthetic_arena

    data_dir = tmp_path / "syn"
    write_synthetic_arena(data_dir, n_train=60, n_test=6, seed=0)
    args = ["train-transformer", f"data.dir={data_dir}", f"model.name_or_path={bert}", f"output_dir={tmp_path / 'runs'}",
            "name=r", "train.folds=[0]", "train.max_steps=1", "render.max_length=48", "train.device=cpu"]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "folds.seed=7"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: fold 0 in ") and "folds.seed=42, now 7" in err[-1]
    assert not any("Traceback" in line for line in err)
    assert (tmp_path / "runs" / "r" / "fold_0" / "done.json").exists()  # the finished fold is kept, not overwritten


# -- the run folder is one unit ------------------------------------------------------------
def test_a_killed_call_leaves_no_combined_outputs_of_an_earlier_call(tmp_path, bert, data):
    from prefkit.rundir import read_marker

    pairs, folds, _ = data
    common = ["train.max_steps=2", "train.swap=off", "train.tta_swap=false", "train.state_every_steps=1"]
    cfg0 = _cfg(tmp_path, bert, *common, "train.folds=[0]")
    train_folds(cfg0, pairs, folds)
    run = cfg0.run_dir
    assert (run / "oof.csv").exists() and read_marker(run)["status"] == "running"  # folds 1, 2 still to come
    with pytest.raises(Killed):
        train_folds(_cfg(tmp_path, bert, *common), pairs, folds, on_step=kill_at(1))
    assert not (run / "oof.csv").exists()  # fold 0's combined file went before fold 1 started
    assert read_marker(run)["status"] == "running"
    done = train_folds(_cfg(tmp_path, bert, *common), pairs, folds)
    assert sorted(r.fold for r in done.folds) == [0, 1, 2]
    assert read_marker(run)["status"] == "complete" and (run / "folds.csv").exists()


def test_a_second_run_into_a_locked_folder_stops_with_one_line(tmp_path, bert, data):
    from prefkit.errors import InputError
    from prefkit.rundir import RunLock

    pairs, folds, _ = data
    cfg = _cfg(tmp_path, bert, "train.max_steps=1", "train.folds=[0]")
    holder = RunLock(cfg.run_dir).acquire()
    try:
        with pytest.raises(InputError, match="run folder is in use by") as err:
            train_folds(cfg.model_copy(update={"train": cfg.train.model_copy(update={"folds": None})}), pairs, folds)
        assert "\n" not in str(err.value)
    finally:
        holder.release()
    assert not (cfg.run_dir / "fold_0").exists()  # nothing was trained or written


def test_missing_or_broken_model_is_one_line_before_any_work(tmp_path, bert, data):
    from prefkit.errors import InputError

    pairs, folds, _ = data
    with pytest.raises(InputError, match="not found"):
        train_folds(_cfg(tmp_path, tmp_path / "no-such-model"), pairs, folds)
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in bert.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: len(weights.read_bytes()) // 2])
    with pytest.raises(InputError, match="truncated"):
        train_folds(_cfg(tmp_path, broken), pairs, folds)
    assert not (tmp_path / "runs").exists()


def test_predict_never_writes_over_its_input(tmp_path, bert, data, capsys):
    from prefkit.cli import main

    pairs, folds, test = data
    cfg = _cfg(tmp_path, bert, "train.max_steps=1", "train.folds=[0]", "train.swap=off", "train.tta_swap=false")
    train_folds(cfg, pairs, folds)
    data_file = tmp_path / "pairs.jsonl"
    pairs.head(4).to_json(data_file, orient="records", lines=True)
    before = data_file.read_bytes()
    ckpt = str(cfg.run_dir / "fold_0" / "checkpoint")
    capsys.readouterr()
    assert main(["predict", ckpt, str(data_file), "--out", str(data_file), "--format", "jsonl"]) == 2
    assert capsys.readouterr().err.strip().startswith("error:") and data_file.read_bytes() == before
    assert main(["predict", ckpt, str(data_file), "--batch-size", "0", "--out", str(tmp_path / "p.csv")]) == 2
