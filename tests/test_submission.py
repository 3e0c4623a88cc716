"""Submissions: built in the sample's order, clipped, validated before and after writing."""

import numpy as np
import pandas as pd
import pytest

from prefkit.errors import InputError
from prefkit.predictions import make_predictions, write_predictions
from prefkit.submission import (
    SUBMISSION_COLUMNS,
    clip_probs,
    read_probabilities,
    score_file,
    validate_submission,
    write_submission,
)

IDS = ["10", "11", "12", "13"]


@pytest.fixture
def sample(tmp_path):
    path = tmp_path / "sample_submission.csv"
    pd.DataFrame({"id": IDS, "winner_model_a": 1 / 3, "winner_model_b": 1 / 3, "winner_tie": 1 / 3}).to_csv(path, index=False)
    return path


def _preds(ids, probs=None):
    probs = np.tile([0.5, 0.3, 0.2], (len(ids), 1)) if probs is None else np.asarray(probs, dtype=float)
    return pd.DataFrame({"id": ids, "p_a": probs[:, 0], "p_b": probs[:, 1], "p_tie": probs[:, 2]})


def test_reordered_to_the_sample_clipped_and_normalised(tmp_path, sample):
    probs = np.array([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5], [0.0, 0.0, 1.0], [0.1, 0.9, 0.0]])
    shuffled = [3, 0, 2, 1]
    out = write_submission(_preds([IDS[i] for i in shuffled], probs[shuffled]), sample, tmp_path / "sub" / "submission.csv", clip=1e-4)
    table = pd.read_csv(out, dtype={"id": str})
    assert list(table.columns) == list(SUBMISSION_COLUMNS)
    assert list(table["id"]) == IDS
    values = table.iloc[:, 1:].to_numpy()
    assert np.allclose(values.sum(axis=1), 1.0, atol=1e-7)
    assert values.min() >= 1e-4 * 0.999 and values.max() <= 1 - 1e-4
    assert np.allclose(values[1], [0.2, 0.3, 0.5], atol=1e-6)  # untouched rows keep their values
    assert values[0].argmax() == 0 and values[2].argmax() == 2
    validate_submission(out, sample)


def test_clip_probs():
    p = clip_probs(np.array([[1.0, 0.0, 0.0]]), 0.01)
    assert np.isclose(p.sum(), 1.0) and p.min() > 0.0095


@pytest.mark.parametrize(
    "ids, probs, message",
    [
        (IDS[:3], None, "no prediction, first '13'"),
        (IDS + ["99"], None, "not in the sample submission"),
        (IDS + ["11"], None, "duplicate id '11'"),
        (IDS, [[0.5, 0.5, 0.0], [np.nan, 0.5, 0.5], [0.2, 0.3, 0.5], [0.2, 0.3, 0.5]], "row 2, column 'p_a'.*not a finite"),
        (IDS, [[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.2, np.inf, 0.5], [0.2, 0.3, 0.5]], "row 3, column 'p_b'"),
        (IDS, [[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [0.2, -0.3, 0.5]], "negative"),
    ],
)
def test_bad_predictions_are_refused_before_writing(tmp_path, sample, ids, probs, message):
    out = tmp_path / "submission.csv"
    with pytest.raises(InputError, match=message):
        write_submission(_preds(ids, probs), sample, out)
    assert not out.exists()


def test_repeated_sample_ids_repeat_the_prediction(tmp_path):
    path = tmp_path / "sample.csv"
    pd.DataFrame({"id": ["1", "2", "1"], "winner_model_a": 0.3, "winner_model_b": 0.3, "winner_tie": 0.4}).to_csv(path, index=False)
    out = write_submission(_preds(["2", "1"], [[0.1, 0.8, 0.1], [0.6, 0.3, 0.1]]), path, tmp_path / "s.csv")
    table = pd.read_csv(out, dtype={"id": str})
    assert list(table["id"]) == ["1", "2", "1"]
    assert table.iloc[0, 1] == table.iloc[2, 1] == pytest.approx(0.6)
    validate_submission(out, path)


def _write(tmp_path, rows, columns=SUBMISSION_COLUMNS):
    path = tmp_path / "candidate.csv"
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, index=False)
    return path


GOOD = [[i, 0.5, 0.3, 0.2] for i in IDS]


@pytest.mark.parametrize(
    "rows, message",
    [
        (GOOD[:3], "1 id\\(s\\) of the sample submission are missing, first '13'"),
        (GOOD + [["11", 0.5, 0.3, 0.2]], "row 5, column 'id': duplicate id '11'"),
        ([GOOD[1], GOOD[0], *GOOD[2:]], "row 1, column 'id': id '11' is out of order"),
        ([*GOOD[:3], ["77", 0.5, 0.3, 0.2]], "row 4, column 'id': id '77' is not in the sample"),
        ([GOOD[0], ["11", None, 0.3, 0.2], *GOOD[2:]], "row 2, column 'winner_model_a'"),
        ([GOOD[0], ["11", "abc", 0.3, 0.2], *GOOD[2:]], "row 2, column 'winner_model_a': 'abc' is not a finite"),
        ([*GOOD[:2], ["12", 0.5, 0.5, 0.5], GOOD[3]], "row 3.*sum to 1.5"),
        ([*GOOD[:2], ["12", 1.5, -0.5, 0.0], GOOD[3]], "row 3, column 'winner_model_a': probability 1.5 is outside"),
    ],
)
def test_validate_submission_names_the_problem(tmp_path, sample, rows, message):
    with pytest.raises(InputError, match=message):
        validate_submission(_write(tmp_path, rows), sample)


def test_validate_submission_columns_and_files(tmp_path, sample):
    with pytest.raises(InputError, match="missing column 'winner_tie'"):
        validate_submission(_write(tmp_path, [r[:3] for r in GOOD], SUBMISSION_COLUMNS[:3]), sample)
    with pytest.raises(InputError, match="unexpected column 'extra'"):
        validate_submission(_write(tmp_path, [[*r, 1] for r in GOOD], (*SUBMISSION_COLUMNS, "extra")), sample)
    with pytest.raises(InputError, match="not found"):
        validate_submission(tmp_path / "missing.csv", sample)
    assert len(validate_submission(_write(tmp_path, GOOD), sample)) == 4


def test_score_file_reads_predictions_and_submissions(tmp_path, sample):
    solution = tmp_path / "solution.csv"
    pd.DataFrame({"id": IDS, "winner_model_a": [1, 0, 0, 1], "winner_model_b": [0, 1, 0, 0], "winner_tie": [0, 0, 1, 0]}).to_csv(solution, index=False)
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4], [0.1, 0.8, 0.1]])
    preds = tmp_path / "preds.csv"
    write_predictions(make_predictions(IDS, probs, "m", -1), preds)
    sub = write_submission(_preds(IDS, probs), sample, tmp_path / "sub.csv")
    expected = -np.mean(np.log([0.7, 0.7, 0.4, 0.1]))
    for path in (preds, sub):
        scores, _, _ = score_file(path, solution)
        assert scores["log_loss"] == pytest.approx(expected, abs=1e-5)
        assert scores["accuracy"] == pytest.approx(0.75)
    write_predictions(make_predictions(IDS[:3], probs[:3], "m", -1), preds)
    with pytest.raises(InputError, match="no prediction, first '13'"):
        score_file(preds, solution)
    conflicting = _write(tmp_path, [*GOOD, ["10", 0.1, 0.1, 0.8]])
    with pytest.raises(InputError, match="repeats with different probabilities"):
        read_probabilities(conflicting)
