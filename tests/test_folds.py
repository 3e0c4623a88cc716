"""Folds: grouped, stratified, deterministic; fold maps saved, imported and checked."""

import json

import numpy as np
import pandas as pd
import pytest

from prefkit.config import build_config
from prefkit.data.folds import fold_table, folds_for, import_fold_map, make_folds, save_fold_map
from prefkit.errors import InputError
from prefkit.schema import make_pairs


def _pairs(n=900, n_groups=180, seed=0, unlabelled=0):
    rng = np.random.default_rng(seed)
    classes = rng.choice(3, size=n, p=[0.42, 0.38, 0.20])
    labels = np.eye(3)[classes]
    labels[:unlabelled] = np.nan
    groups = [f"g{int(g)}" for g in rng.integers(0, n_groups, n)]
    return make_pairs(
        [f"id{i}" for i in range(n)],
        [["p"]] * n,
        [["a"]] * n,
        [["b"]] * n,
        labels=labels,
        groups=groups,
    )


def test_every_row_one_fold_and_no_group_split():
    pairs = _pairs()
    folds = make_folds(pairs, n_folds=5, seed=42)
    assert folds.shape == (len(pairs),)
    assert set(folds.tolist()) == {0, 1, 2, 3, 4}
    per_group = pd.Series(folds).groupby(pairs["group"].to_numpy()).nunique()
    assert (per_group == 1).all()
    sizes = np.bincount(folds)
    assert sizes.min() > 0.6 * len(pairs) / 5


def test_stratified_class_shares():
    pairs = _pairs(n=2000, n_groups=600)
    folds = make_folds(pairs, n_folds=5, seed=1)
    y = pairs[["p_a", "p_b", "p_tie"]].to_numpy().argmax(axis=1)
    overall = np.bincount(y, minlength=3) / len(y)
    for k in range(5):
        share = np.bincount(y[folds == k], minlength=3) / (folds == k).sum()
        assert np.abs(share - overall).max() < 0.03


def test_deterministic_under_seed():
    pairs = _pairs()
    a = make_folds(pairs, n_folds=5, seed=7)
    b = make_folds(pairs, n_folds=5, seed=7)
    c = make_folds(pairs, n_folds=5, seed=8)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_unlabelled_rows_and_missing_groups():
    pairs = _pairs(unlabelled=100)
    folds = make_folds(pairs, n_folds=4)
    assert set(folds.tolist()) == {0, 1, 2, 3}
    table = fold_table(pairs, folds)
    assert table["unlabelled"].iloc[-1] == 100
    assert table["rows"].iloc[-1] == len(pairs)
    no_group = pairs.drop(columns=["group"])
    assert set(make_folds(no_group, n_folds=3).tolist()) == {0, 1, 2}


def test_too_few_groups():
    with pytest.raises(InputError, match="cannot fill 5 folds"):
        make_folds(_pairs(n=50, n_groups=3), n_folds=5)


@pytest.mark.parametrize("name", ["map.csv", "map.json"])
def test_save_and_load_round_trip(tmp_path, name):
    pairs = _pairs()
    folds = make_folds(pairs, n_folds=5)
    path = save_fold_map(pairs["id"], folds, tmp_path / name)
    shuffled = pairs["id"].sample(frac=1.0, random_state=0)
    loaded = import_fold_map(path, shuffled).folds
    assert np.array_equal(loaded, folds[shuffled.index.to_numpy()])


def test_group_keyed_map(tmp_path):
    pairs = _pairs()
    folds = make_folds(pairs, n_folds=5)
    path = save_fold_map(pairs["group"], folds, tmp_path / "groups.json")
    assert len(json.loads(path.read_text())) == pairs["group"].nunique()
    assert np.array_equal(import_fold_map(path, pairs["group"]).folds, folds)
    with pytest.raises(InputError, match="more than one fold"):
        save_fold_map(["x", "x"], [0, 1], tmp_path / "bad.csv")


def test_letter_keyed_json_map(tmp_path):
    mapping = {"E1": "C", "E2": "A", "E3": "E", "E4": "B", "E5": "D", "E6": "A", "extra": "B"}
    path = tmp_path / "fold_map.json"
    path.write_text(json.dumps(mapping))
    result = import_fold_map(path, ["E2", "E1", "E6", "E3"])
    assert result.folds.tolist() == [0, 2, 0, 4]
    assert result.fold_values == ["A", "B", "C", "D", "E"]
    assert result.n_unused_keys == 3
    assert "not in the data" in result.describe()


def test_int_map_csv_with_other_key_name(tmp_path):
    path = tmp_path / "map.csv"
    path.write_text("text_id,fold\nx,0\ny,1\nz,2\n")
    assert import_fold_map(path, ["z", "x", "y"]).folds.tolist() == [2, 0, 1]


def test_missing_id_names_the_first(tmp_path):
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"a": 0, "b": 1}))
    with pytest.raises(InputError, match=r"id 'c' \(data row 2\) is not in the fold map \(2 of 3"):
        import_fold_map(path, ["a", "c", "d"])


def test_bad_map_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        import_fold_map(tmp_path / "nope.csv", ["a"])
    bad_ext = tmp_path / "map.txt"
    bad_ext.write_text("a 0\n")
    with pytest.raises(InputError, match=r"\.csv or \.json"):
        import_fold_map(bad_ext, ["a"])
    one_fold = tmp_path / "one.json"
    one_fold.write_text(json.dumps({"a": 0, "b": 0}))
    with pytest.raises(InputError, match="distinct fold"):
        import_fold_map(one_fold, ["a"])
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        import_fold_map(broken, ["a"])


def test_folds_for_config(tmp_path):
    pairs = _pairs()
    made = folds_for(build_config({"folds": {"n_folds": 3, "seed": 5}}), pairs)
    assert np.array_equal(made, make_folds(pairs, n_folds=3, seed=5))
    path = save_fold_map(pairs["id"], made, tmp_path / "m.csv")
    imported = folds_for(build_config({"folds": {"fold_map": str(path)}}), pairs)
    assert np.array_equal(imported, made)
    by_group = save_fold_map(pairs["group"], made, tmp_path / "g.json")
    assert np.array_equal(folds_for(build_config({"folds": {"fold_map": str(by_group)}}), pairs), made)


def test_cli_synth_and_folds(tmp_path, capsys):
    from prefkit.cli import main

    out = tmp_path / "syn"
    assert main(["synth", str(out), "--n-train", "300", "--n-test", "60", "--seed", "1"]) == 0
    assert "Bayes-optimal" in capsys.readouterr().out
    fold_map = tmp_path / "folds.csv"
    assert main(["folds", "make", str(out / "train.csv"), "--out", str(fold_map), "--n-folds", "3"]) == 0
    printed = capsys.readouterr().out
    assert "tie" in printed and "all" in printed
    table = pd.read_csv(fold_map, dtype={"id": str})
    assert len(table) == 300 and set(table["fold"]) == {0, 1, 2}
    again = tmp_path / "again.json"
    assert main(["folds", "import", str(fold_map), "--train", str(out / "train.csv"), "--out", str(again)]) == 0
    assert json.loads(again.read_text()) == dict(zip(table["id"], table["fold"].tolist()))
    assert main(["folds", "import", str(fold_map), "--train", str(out / "test.csv")]) == 2
    assert "not in the fold map" in capsys.readouterr().err
