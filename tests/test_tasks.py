"""A model kind is a task on the engine: a Siamese item scorer defined here, in the test
alone (a task class, one registry line, the scalar head and the Bradley-Terry loss by name),
trains through the same engine and predicts through the same path as the pair classifier."""

import numpy as np
import pandas as pd
import pytest
import torch

from prefkit.config import load_config
from prefkit.infer.predict import predict_encoded
from prefkit.tasks import TASKS, Encoded, Task
from prefkit.testing.tiny import write_tiny_checkpoint
from prefkit.text.batching import BatchPlan
from prefkit.train.engine import train_folds
from prefkit.train.losses import bradley_terry

torch.set_num_threads(1)


class SiameseScorer(Task):
    """s(prompt, response) for each side, both in one forward; P(A beats B) = sigmoid(s_A - s_B)."""

    name = "toy_siamese"
    head = "scalar"
    loss = "bradley_terry"
    metric = "bce"
    output_columns = ("p_a",)

    def encode(self, renderer, table, labels=True, swapped=False):
        a = [renderer.render(p, x, "") for p, x in zip(table["prompt"], table["response_a"])]
        b = [renderer.render(p, x, "") for p, x in zip(table["prompt"], table["response_b"])]
        seqs = [s for pair in zip(a, b) for s in pair]
        seqs_sw = [s for pair in zip(b, a) for s in pair] if swapped else None
        if not labels:
            return Encoded(seqs, seqs_sw, per_row=2)
        return Encoded(seqs, seqs_sw, table[["p_a", "p_b", "p_tie"]].to_numpy(float), table["weight"].to_numpy(float), per_row=2)

    def swap_targets(self, targets):
        return targets[:, [1, 0, 2]]

    def combine(self, outputs):
        return outputs.reshape(-1, 2)[:, :1] - outputs.reshape(-1, 2)[:, 1:]  # s(A) - s(B), antisymmetric

    def predictions(self, outputs):
        return 1.0 / (1.0 + np.exp(-np.asarray(outputs, dtype=float)))

    def unswap(self, predictions):
        return 1.0 - predictions

    def metrics(self, targets, predictions, weights=None):
        win = targets[:, 0] + 0.5 * targets[:, 2]
        p = np.clip(predictions[:, 0], 1e-12, 1 - 1e-12)
        return {"bce": float(np.average(-(win * np.log(p) + (1 - win) * np.log(1 - p)), weights=weights))}

    def prediction_frame(self, ids, predictions, model, fold):
        return pd.DataFrame({"id": [str(i) for i in ids], "p_a": predictions[:, 0], "model": model, "fold": fold})


@pytest.fixture
def siamese(monkeypatch):
    monkeypatch.setitem(TASKS, SiameseScorer.name, SiameseScorer)
    return SiameseScorer()


def test_a_new_task_trains_on_the_engine_and_predicts_antisymmetrically(tmp_path, data, siamese):
    import transformers

    transformers.logging.set_verbosity_error()
    pairs, folds, test = data
    bert = write_tiny_checkpoint(tmp_path / "bert", "bert")
    cfg = load_config(None, [
        "task=toy_siamese", "name=siamese", f"output_dir={tmp_path / 'runs'}", f"model.name_or_path={bert}", "render.max_length=32",
        "train.batch_size=8", "train.lr=1e-3", "train.device=cpu", "train.max_steps=3", "train.folds=[0]",
    ])  # fmt: skip
    res = train_folds(cfg, pairs, folds, test_table=test)
    assert set(res.oof["id"]) == set(pairs["id"][folds == 0])
    assert np.isfinite(res.oof_metric) and res.oof_metric > 0
    assert ((res.oof["p_a"] > 0) & (res.oof["p_a"] < 1)).all()

    # antisymmetric by construction: the swapped pair gets 1 - P(A)
    from prefkit.infer.predict import Predictor

    predictor = Predictor(cfg.run_dir / "fold_0" / "checkpoint", device="cpu", tta_swap=False)
    assert predictor.model.config.num_labels == 1  # the scalar head, picked by the task's name
    enc = siamese.encode(predictor.renderer, test, labels=False, swapped=True)
    plan = BatchPlan(batch_size=4)
    p = predict_encoded(predictor.model, siamese, enc, predictor.tokenizer.pad_token_id, plan, tta_swap=False)
    p_sw = predict_encoded(predictor.model, siamese, Encoded(enc.seqs_swapped, per_row=2), predictor.tokenizer.pad_token_id, plan, tta_swap=False)
    np.testing.assert_allclose(p[:, 0], 1 - p_sw[:, 0], atol=1e-6)


def test_bradley_terry_loss_counts_a_tie_as_half_a_win():
    diff = torch.tensor([[0.0], [2.0]])
    targets = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    expected = (np.log(2) + np.log1p(np.exp(-2.0))) / 2
    assert float(bradley_terry(diff, targets)) == pytest.approx(expected, rel=1e-6)
