"""An item scorer joins the stack as a base model: its score difference, both scores and its
tie signal are the stacker's inputs, fold by fold; pair models keep their log-probabilities."""

import numpy as np
import pandas as pd

from prefkit.config import load_config
from prefkit.predictions import make_predictions, write_predictions
from prefkit.schema import make_pairs
from prefkit.stacking import model_inputs, run_matrix, stack_runs
from prefkit.tasks.item_scorer import ItemScorer


def davidson_pairs(n: int, seed: int = 0):
    """Pairs whose outcome follows Davidson probabilities of latent item scores s_A, s_B (nu 0.4)."""
    rng = np.random.default_rng(seed)
    s_a, s_b = 1.5 * rng.normal(size=n), 1.5 * rng.normal(size=n)
    d = s_a - s_b
    z = np.stack([d / 2, -d / 2, np.full(n, np.log(0.4))], axis=1)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    outcome = np.array([rng.choice(3, p=row) for row in p])
    labels = np.eye(3)[outcome]
    ids = [f"p{i}" for i in range(n)]
    pairs = make_pairs(ids, [["q"]] * n, [["a"]] * n, [["b"]] * n, labels, groups=[f"g{i}" for i in range(n)])
    return pairs, s_a, s_b


def write_run(folder, frame):
    folder.mkdir(parents=True)
    if "score_a" in frame:
        ItemScorer().write_predictions(frame, folder / "oof.csv")
    else:
        write_predictions(frame, folder / "oof.csv")
    return folder


def test_an_item_scorer_run_is_a_base_model_of_the_stack(tmp_path):
    n = 900
    pairs, s_a, s_b = davidson_pairs(n)
    folds = np.arange(n) % 3
    # the item scorer: noisy scores on a per-fold offset (each fold's model centres differently)
    rng = np.random.default_rng(1)
    offset = np.array([0.0, 0.7, -0.4])[folds]
    noisy_a, noisy_b = s_a + 0.3 * rng.normal(size=n) + offset, s_b + 0.3 * rng.normal(size=n) + offset
    task = ItemScorer()
    outputs = np.column_stack([noisy_a - noisy_b, np.full(n, -1.0), noisy_a, noisy_b])
    scorer = task.prediction_frame(pairs["id"], task.predictions(outputs), "scorer", folds)
    # a pair model that knows nothing but the class prior
    prior = make_predictions(pairs["id"], np.tile([0.4, 0.4, 0.2], (n, 1)), "prior", folds)
    scorer_dir, prior_dir = write_run(tmp_path / "scorer", scorer), write_run(tmp_path / "prior", prior)

    matrix = run_matrix(pd.read_csv(scorer_dir / "oof.csv", dtype={"id": str}))
    x = model_inputs(matrix)
    assert x.shape == (n, 4)
    np.testing.assert_allclose(x[:, 0], noisy_a - noisy_b, atol=1e-6)  # the score difference first
    assert model_inputs(run_matrix(prior)).shape == (n, 3)  # a pair model: its log-probabilities, as before

    cfg = load_config(None, [f"output_dir={tmp_path / 'runs'}", "data.train=train.csv", "stack.inner_folds=3", "stack.calibration=none"])
    with_scorer = stack_runs(cfg.model_copy(update={"stack": cfg.stack.model_copy(update={"name": "with"})}), [prior_dir, scorer_dir], pairs=pairs)
    without = stack_runs(cfg.model_copy(update={"stack": cfg.stack.model_copy(update={"name": "without"})}), [prior_dir], pairs=pairs)
    assert set(with_scorer.oof["fold"]) == {0, 1, 2}  # honest OOF: each fold from a stacker fitted on the others
    assert with_scorer.metrics["oof"]["log_loss"] < without.metrics["oof"]["log_loss"] - 0.05
