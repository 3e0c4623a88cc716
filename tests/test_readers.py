"""Data readers: every format into the internal schema; every bad input an InputError
naming file, row and column; the CLI ends bad input in one line and exit code 2."""

from __future__ import annotations

import csv
import gzip
import json
import logging
import lzma
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from prefkit.data import (
    get_report,
    locate_kaggle_files,
    read_alpaca_eval,
    read_commonlit,
    read_comparisons,
    read_fb3_ell,
    read_kaggle_csv,
    read_pairs,
    read_pairs_parquet,
    read_pairwise_jsonl,
    read_rm_gallery,
    read_sample_submission,
    read_scores_csv,
    read_solution,
    read_votes,
)
from prefkit.errors import InputError
from prefkit.schema import label_matrix, validate_pairs

KAGGLE_HEADER = ["id", "model_a", "model_b", "prompt", "response_a", "response_b", "winner_model_a", "winner_model_b", "winner_tie"]


def j(*turns) -> str:
    return json.dumps(list(turns))


def write_csv(path, header, rows) -> str:
    """A CSV as Kaggle writes it (fully quoted text fields), compressed by suffix."""
    import io

    buf = io.StringIO()
    w = csv.writer(buf, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    data = buf.getvalue().encode("utf-8")
    name = str(path)
    if name.endswith(".xz"):
        data = lzma.compress(data)
    elif name.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return name


def kaggle_rows():
    return [
        ["1", "m1", "m2", j("Hi"), j("Hello!"), j("Hey."), 1, 0, 0],
        ["2", "m2", "m3", j("Q1", "Q2"), j("A1", "A2"), j("B1", "B2"), 0, 1, 0],
        ["3", "m3", "m1", j("Tie?"), j("x"), j("y"), 0, 0, 1],
    ]


def write_kaggle(tmp_path, rows=None, name="train.csv", header=KAGGLE_HEADER):
    return write_csv(tmp_path / name, header, kaggle_rows() if rows is None else rows)


# --------------------------------------------------------------------------- Kaggle


def test_kaggle_basic_labels_models_and_report(tmp_path):
    df = read_kaggle_csv(write_kaggle(tmp_path))
    validate_pairs(df, require_labels=True)
    assert df["id"].tolist() == ["1", "2", "3"]
    assert label_matrix(df).tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert df["model_a"].tolist() == ["m1", "m2", "m3"]
    assert df["prompt"].iloc[1] == ["Q1", "Q2"] and df["response_b"].iloc[1] == ["B1", "B2"]
    rep = get_report(df)
    assert (rep.rows_read, rep.rows_kept, rep.skipped, rep.format) == (3, 3, {}, "kaggle")


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".csv.xz"])
def test_kaggle_compression_inferred(tmp_path, suffix):
    df = read_kaggle_csv(write_kaggle(tmp_path, name="train" + suffix))
    assert len(df) == 3


def test_kaggle_multi_turn_aligned_and_padded(tmp_path):
    rows = [["1", "a", "b", j("Q1", "Q2", "Q3"), j("A1"), j("B1", "B2"), 1, 0, 0]]
    df = read_kaggle_csv(write_kaggle(tmp_path, rows))
    assert df["prompt"].iloc[0] == ["Q1", "Q2", "Q3"]
    assert df["response_a"].iloc[0] == ["A1", "", ""]
    assert df["response_b"].iloc[0] == ["B1", "B2", ""]
    assert get_report(df).notes["unaligned_turns_padded"] == 1


def test_kaggle_odd_cells_are_repaired_and_counted(tmp_path):
    rows = [
        ["1", "a", "b", "null", '["fine", null]', '["\\ud83d alone", "pair \\ud83d\\ude00"]', 1, 0, 0],
        ["2", "a", "b", "just plain text, not JSON", "", '"a JSON string"', 0, 1, 0],
        ["3", "a", "b", 'not [json', "[]", '[1, {"k": "v"}]', 0, 0, 1],
    ]
    df = read_kaggle_csv(write_kaggle(tmp_path, rows))
    p, a, b = (df[c].tolist() for c in ("prompt", "response_a", "response_b"))
    assert p[0] == ["", ""] and a[0] == ["fine", ""]  # null cell -> "", padded to 2 turns
    assert b[0] == ["\ufffd alone", "pair \U0001F600"]  # lone surrogate replaced, pair kept
    assert p[1] == ["just plain text, not JSON"] and a[1] == [""] and b[1] == ["a JSON string"]
    assert p[2] == ["not [json", ""] and a[2] == ["", ""] and b[2] == ["1", '{"k": "v"}']
    notes = get_report(df).notes
    assert notes["plain_text_cells"] == 2
    assert notes["null_cells"] == 1 and notes["null_turns"] == 1
    assert notes["lone_surrogates_replaced"] == 1
    assert notes["empty_cells"] == 1 and notes["empty_lists"] == 1 and notes["non_string_turns"] == 2
    # every string encodes (a lone surrogate would break parquet and tokenizers)
    df.to_parquet(tmp_path / "out.parquet")


def test_kaggle_unlabelled_test_file(tmp_path):
    header = ["id", "prompt", "response_a", "response_b"]
    df = read_kaggle_csv(write_csv(tmp_path / "test.csv", header, [["7", j("p"), j("a"), j("b")]]))
    assert np.isnan(label_matrix(df)).all() and "model_a" not in df.columns
    with pytest.raises(InputError, match="column 'winner_model_a'"):
        read_kaggle_csv(tmp_path / "test.csv", require_labels=True)


def test_kaggle_exact_duplicate_rows_dropped_under_any_policy(tmp_path):
    rows = kaggle_rows() + [kaggle_rows()[0]]
    df = read_kaggle_csv(write_kaggle(tmp_path, rows))
    assert df["id"].tolist() == ["1", "2", "3"]
    assert get_report(df).skipped == {"exact_duplicate": 1}


@pytest.mark.parametrize(
    "row, pattern",
    [
        (["9", "a", "b", j("p"), j("x"), j("y"), 1, 1, 0], r"row 4, column 'winner_model_a,winner_model_b,winner_tie': .*not one-hot"),
        (["9", "a", "b", j("p"), j("x"), j("y"), 0, 0, 0], r"row 4, column 'winner_model_a,winner_model_b,winner_tie'"),
        (["9", "a", "b", j("p"), j("x"), j("y"), 0, "yes", 0], r"row 4, column 'winner_model_b': .*not a number"),
        (["9", "a", "b", j("p"), j("x"), j("y"), 2, 0, 0], r"row 4, column 'winner_model_a': label 2 is not 0 or 1"),
        (["9", "a", "b", j("p"), j("x"), j("y"), "", "", ""], r"row 4, column 'winner_model_a': label missing"),
        (["1", "a", "b", j("other"), j("x"), j("y"), 1, 0, 0], r"row 4, column 'id': duplicate id '1'"),
        (["", "a", "b", j("p"), j("x"), j("y"), 1, 0, 0], r"row 4, column 'id': empty id"),
    ],
)
def test_kaggle_bad_rows_name_file_row_column(tmp_path, row, pattern):
    path = write_kaggle(tmp_path, kaggle_rows() + [row])
    with pytest.raises(InputError, match=pattern) as err:
        read_kaggle_csv(path)
    assert err.value.file == path


def test_kaggle_skip_policy_counts_reasons_and_warns(tmp_path, caplog):
    bad = [
        ["4", "a", "b", j("p"), j("x"), j("y"), 1, 1, 0],
        ["5", "a", "b", j("p"), j("x"), j("y"), "n/a", 0, 0],
        ["1", "a", "b", j("other"), j("x"), j("y"), 1, 0, 0],
    ]
    path = write_kaggle(tmp_path, kaggle_rows() + bad)
    with open(path, "a") as f:
        f.write('6,a,b,"[]","[]","[]",1,0,0,EXTRA\n')  # malformed line: one field too many
    with caplog.at_level(logging.WARNING, logger="prefkit.data"):
        df = read_kaggle_csv(path, on_bad_row="skip")
    rep = get_report(df)
    assert df["id"].tolist() == ["1", "2", "3"]
    assert rep.skipped == {"label_not_one_hot": 1, "label_not_numeric": 1, "duplicate_id": 1, "malformed_csv_line": 1}
    assert rep.rows_kept == 3 and "row 4" in rep.examples["label_not_one_hot"]
    assert "skipped 4 bad row(s)" in caplog.text
    with pytest.raises(InputError, match="malformed|Expected 9 fields"):
        read_kaggle_csv(path)


def test_kaggle_all_rows_bad_under_skip_is_an_error(tmp_path):
    path = write_kaggle(tmp_path, [["1", "a", "b", j("p"), j("x"), j("y"), 1, 1, 0]])
    with pytest.raises(InputError, match="no rows left after skipping 1"):
        read_kaggle_csv(path, on_bad_row="skip")


@pytest.mark.parametrize("drop", ["id", "response_b", "prompt"])
def test_kaggle_missing_required_column(tmp_path, drop):
    keep = [i for i, c in enumerate(KAGGLE_HEADER) if c != drop]
    rows = [[r[i] for i in keep] for r in kaggle_rows()]
    path = write_csv(tmp_path / "train.csv", [KAGGLE_HEADER[i] for i in keep], rows)
    with pytest.raises(InputError, match=rf"train.csv, column '{drop}': missing required column"):
        read_kaggle_csv(path)


def test_kaggle_partial_label_columns_is_an_error(tmp_path):
    header = KAGGLE_HEADER[:-1]
    path = write_csv(tmp_path / "train.csv", header, [r[:-1] for r in kaggle_rows()])
    with pytest.raises(InputError, match="column 'winner_tie': missing label column"):
        read_kaggle_csv(path)


def test_kaggle_unreadable_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty.csv: empty file"):
        read_kaggle_csv(empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text(",".join(KAGGLE_HEADER) + "\n")
    with pytest.raises(InputError, match="header.csv: no data rows"):
        read_kaggle_csv(header_only)
    corrupt = tmp_path / "train.csv.xz"
    corrupt.write_bytes(lzma.compress(b"id,prompt\n1,2\n" * 50)[:40] + b"garbage")
    with pytest.raises(InputError, match=r"train.csv.xz: cannot read as CSV"):
        read_kaggle_csv(corrupt)
    quote = tmp_path / "quote.csv"
    quote.write_text('id,prompt,response_a,response_b\n1,"[unterminated\n')
    with pytest.raises(InputError, match="quote.csv: cannot read as CSV"):
        read_kaggle_csv(quote)
    with pytest.raises(InputError, match="file not found"):
        read_kaggle_csv(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="expected a file"):
        read_kaggle_csv(tmp_path)


def test_kaggle_invalid_utf8_is_replaced_and_noted(tmp_path):
    path = tmp_path / "train.csv"
    data = ",".join(KAGGLE_HEADER).encode() + b'\n1,a,b,"[""caf\xe9""]","[""x""]","[""y""]",1,0,0\n'
    path.write_bytes(data)
    df = read_kaggle_csv(path)
    assert df["prompt"].iloc[0] == ["caf\ufffd"] and get_report(df).notes["invalid_utf8_file"] == 1


def test_sample_submission_and_solution(tmp_path):
    header = ["id", "winner_model_a", "winner_model_b", "winner_tie"]
    sub = read_sample_submission(write_csv(tmp_path / "sample_submission.csv", header, [[5, 0.3, 0.3, 0.4], [6, 0.3, 0.3, 0.4], [5, 0.3, 0.3, 0.4]]))
    assert sub["id"].tolist() == ["5", "6", "5"] and sub["winner_tie"].dtype == float
    assert get_report(sub).notes["repeated_ids"] == 1
    sol = read_solution(write_csv(tmp_path / "solution.csv.xz", header + ["Usage"], [[5, 0, 1, 0, "Public"], [6, 0, 0, 1, "Private"]]))
    assert sol.columns.tolist() == ["id", "p_a", "p_b", "p_tie", "usage"]
    assert sol[["p_a", "p_b", "p_tie"]].to_numpy().tolist() == [[0, 1, 0], [0, 0, 1]]
    bad = write_csv(tmp_path / "bad_solution.csv", header, [[5, 0, 1, 0], [6, 1, 1, 0]])
    with pytest.raises(InputError, match="bad_solution.csv, row 2"):
        read_solution(bad)
    conflict = write_csv(tmp_path / "conflict.csv", header, [[5, 0, 1, 0], [5, 1, 0, 0]])
    with pytest.raises(InputError, match="conflict.csv, row 2, column 'id'"):
        read_solution(conflict)
    bad_sub = write_csv(tmp_path / "bad_sub.csv", header, [[5, 0.3, "x", 0.4]])
    with pytest.raises(InputError, match="bad_sub.csv, row 1, column 'winner_model_b'"):
        read_sample_submission(bad_sub)


def test_locate_kaggle_files(tmp_path):
    write_kaggle(tmp_path, name="train.csv.xz")
    write_csv(tmp_path / "test.csv", ["id", "prompt", "response_a", "response_b"], [["7", j("p"), j("a"), j("b")]])
    files = locate_kaggle_files(tmp_path)
    assert files.train.name == "train.csv.xz" and files.test.name == "test.csv"
    assert files.sample_submission is None and files.solution is None
    assert len(read_pairs(tmp_path, "kaggle")) == 3  # a folder reads its train file
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no training file found"):
        locate_kaggle_files(empty)
    with pytest.raises(InputError, match="not found"):
        locate_kaggle_files(tmp_path / "missing")


# --------------------------------------------------------------------------- pairwise JSONL


def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_pairwise_jsonl_labels_items_and_groups(tmp_path):
    recs = [
        {"pair_id": "p1", "id1": "d1", "id2": "d2", "text1": "one", "text2": "two", "label": 1},
        {"pair_id": "p2", "id1": "d2", "id2": "d1", "text1": "two", "text2": "one", "label": 2},
        {"pair_id": "p3", "id1": "d1", "id2": "d3", "text1": "one", "text2": "three", "label": 0},
    ]
    df = read_pairwise_jsonl(write_jsonl(tmp_path / "pairs.jsonl", recs))
    assert df["id"].tolist() == ["p1", "p2", "p3"]
    assert label_matrix(df).tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert df["prompt"].tolist() == [[""]] * 3
    assert df["item_a"].tolist() == ["d1", "d2", "d1"] and df["response_b"].iloc[2] == ["three"]
    assert df["group"].iloc[0] == df["group"].iloc[1] != df["group"].iloc[2]  # unordered item pair
    with_prompt = read_pairs(write_jsonl(tmp_path / "p.jsonl", [{**recs[0], "prompt": "Which is kinder?"}]), "jsonl")
    assert with_prompt["prompt"].iloc[0] == ["Which is kinder?"]


def test_pairwise_jsonl_bad_records(tmp_path):
    ok = {"pair_id": "p1", "id1": "a", "id2": "b", "text1": "x", "text2": "y", "label": 1}
    path = write_jsonl(tmp_path / "bad.jsonl", [ok, {**ok, "pair_id": "p2", "label": "first"}])
    with pytest.raises(InputError, match=r"bad.jsonl, row 2, column 'label'"):
        read_pairwise_jsonl(path)
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(ok) + "\n{not json\n")
    with pytest.raises(InputError, match=r"broken.jsonl, row 2: not valid JSON"):
        read_pairwise_jsonl(path)
    df = read_pairwise_jsonl(path, on_bad_row="skip")
    assert len(df) == 1 and get_report(df).skipped == {"invalid_json": 1}
    missing = write_jsonl(tmp_path / "missing.jsonl", [{k: v for k, v in ok.items() if k != "text2"}])
    with pytest.raises(InputError, match=r"row 1, column 'text2': missing field"):
        read_pairwise_jsonl(missing)


# --------------------------------------------------------------------------- RM-Gallery


def rm_record(uid, messages, a, b, preferred, strength=None):
    meta = {"preferred": preferred}
    if strength is not None:
        meta["preference_strength"] = strength
    return {
        "unique_id": uid,
        "input": [{"role": r, "content": c} for r, c in messages],
        "output": [
            {"answer": {"role": "assistant", "content": a, "label": {"response_type": "A"}}},
            {"answer": {"role": "assistant", "content": b, "label": {"response_type": "B"}}},
        ],
        "metadata": meta,
    }


def rm_records():
    return [
        rm_record("u1", [("user", "Hi")], "Hello", "Go away", "A", -3),
        rm_record(
            "u2",
            [("system", "Be brief."), ("user", "Q1"), ("assistant", "R1"), ("user", "Q2")],
            "short",
            "long answer",
            "B",
            1,
        ),
        rm_record("u3", [("user", "Same?")], "x", "x", "tie", 0),
    ]


def test_rm_gallery_parquet_multi_turn_and_strength_weight(tmp_path):
    path = tmp_path / "rm.parquet"
    pd.DataFrame(rm_records()).to_parquet(path)
    df = read_rm_gallery(path)
    assert df["id"].tolist() == ["u1", "u2", "u3"]
    assert label_matrix(df).tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert df["weight"].tolist() == [3.0, 1.0, 1.0]  # |strength| for A/B, 1 for the tie
    assert df["prompt"].iloc[1] == ["Be brief.\n\nQ1", "Q2"]  # system text joins the next user turn
    assert df["response_a"].iloc[1] == ["R1", "short"] and df["response_b"].iloc[1] == ["R1", "long answer"]
    soft = read_rm_gallery(path, strength="soft")
    assert np.allclose(label_matrix(soft)[1], [1 / 3, 2 / 3, 0]) and soft["weight"].tolist() == [1.0] * 3
    assert np.allclose(label_matrix(soft)[0], [1, 0, 0])


def test_rm_gallery_jsonl_and_bad_preferred(tmp_path):
    recs = rm_records()
    recs[2]["metadata"]["preferred"] = "maybe"
    path = write_jsonl(tmp_path / "rm.jsonl", recs)
    with pytest.raises(InputError, match=r"rm.jsonl, row 3, column 'metadata.preferred'"):
        read_rm_gallery(path)
    df = read_rm_gallery(path, on_bad_row="skip")
    assert len(df) == 2 and get_report(df).skipped == {"label_invalid": 1}
    recs = rm_records()
    recs[0]["output"] = recs[0]["output"][:1]
    with pytest.raises(InputError, match=r"row 1, column 'output': expected exactly two outputs"):
        read_rm_gallery(write_jsonl(tmp_path / "one.jsonl", recs))


def test_rm_gallery_chosen_rejected_labels_and_missing_label(tmp_path):
    recs = rm_records()[:2]
    for rec in recs:
        del rec["metadata"]
    recs[0]["output"][0]["answer"]["label"] = {"preference": "rejected"}
    recs[0]["output"][1]["answer"]["label"] = {"preference": "chosen"}
    path = write_jsonl(tmp_path / "rmb.jsonl", recs)
    with pytest.raises(InputError, match=r"row 2, column 'metadata.preferred': label missing"):
        read_rm_gallery(path)
    df = read_rm_gallery(path, on_bad_row="skip")
    assert label_matrix(df).tolist() == [[0, 1, 0]]
    unlabelled = read_rm_gallery(write_jsonl(tmp_path / "test.jsonl", recs[1:]))
    assert np.isnan(label_matrix(unlabelled)).all()


# --------------------------------------------------------------------------- AlpacaEval


def test_alpaca_eval_preferences_soft_ties_and_nulls(tmp_path):
    base = {"instruction": "Do it", "output_1": "o1", "output_2": "o2", "generator_1": "g1", "generator_2": "g2"}
    prefs = [1, 2, 0, 1.5, 1.25, None]
    recs = [{**base, "output_1": f"o1-{i}", "preference": p} for i, p in enumerate(prefs)]
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(recs))
    df = read_alpaca_eval(path)
    assert np.allclose(label_matrix(df), [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1], [0.75, 0.25, 0]])
    assert df["model_a"].tolist() == ["g1"] * 5 and df["prompt"].iloc[0] == ["Do it"]
    assert get_report(df).skipped == {"preference_null": 1}
    assert df["id"].is_unique
    path.write_text(json.dumps(recs[:2] + [{**base, "preference": 3}]))
    with pytest.raises(InputError, match=r"annotations.json, row 3, column 'preference'"):
        read_alpaca_eval(path)
    path.write_text('[{"instruction": "x"')
    with pytest.raises(InputError, match="not valid JSON"):
        read_alpaca_eval(path)


# --------------------------------------------------------------------------- votes

VOTE_HEADER = ["pair_id", "worker", "winner", "left", "right", "prompt_text", "result_x", "result_y"]


def test_votes_aggregated_shares_weights_and_both_orders_merged(tmp_path):
    rows = [
        [0, 1, "left", "M1", "M2", "P", "t1", "t2"],
        [0, 2, "left", "M1", "M2", "P", "t1", "t2"],
        [0, 3, "tie", "M1", "M2", "P", "t1", "t2"],
        [7, 4, "left", "M2", "M1", "P", "t2", "t1"],  # the same pair, other order: a vote for M2
        [1, 1, "right", "M1", "M3", "P", "t1", "t3"],
    ]
    path = write_csv(tmp_path / "votes.csv.xz", VOTE_HEADER, rows)
    df = read_votes(path)
    assert df["id"].tolist() == ["0", "1"]
    assert np.allclose(label_matrix(df), [[0.5, 0.25, 0.25], [0, 1, 0]])
    assert df["weight"].tolist() == [4.0, 1.0] and df["n_votes"].tolist() == [4, 1]
    assert df["model_a"].tolist() == ["M1", "M1"] and df["response_b"].iloc[0] == ["t2"]
    assert get_report(df).notes["votes_in_reversed_order_merged"] == 1
    raw = read_votes(path, aggregate=False)
    assert len(raw) == 5 and label_matrix(raw)[3].tolist() == [1, 0, 0] and raw["model_a"].iloc[3] == "M2"
    bad = write_csv(tmp_path / "bad_votes.csv", VOTE_HEADER, rows + [[2, 1, "both", "M1", "M2", "P", "t1", "t2"]])
    with pytest.raises(InputError, match=r"bad_votes.csv, row 6, column 'winner'"):
        read_votes(bad)


# --------------------------------------------------------------------------- documents


def test_comparisons_pairs_and_items(tmp_path):
    docs = write_csv(tmp_path / "docs.csv.xz", ["document_id", "country", "text"], [[10, "X", "ten"], [11, "Y", "eleven"], [10, "Z", "ten"]])
    comps = write_csv(
        tmp_path / "comparisons.csv",
        ["comparison_id", "doc_a", "doc_b", "winner", "worker_id"],
        [[1, 10, 11, "a", "w"], [2, 10, 11, "b", "w"]],
    )
    pairs, items = read_comparisons(comps, docs)
    assert items["id"].tolist() == ["10", "11"] and get_report(items).notes == {"repeated_doc_ids_same_text": 1}
    assert pairs["id"].tolist() == ["1", "2"] and pairs["item_a"].tolist() == ["10", "10"]
    assert pairs["response_a"].iloc[0] == ["ten"] and pairs["prompt"].iloc[0] == [""]
    assert label_matrix(pairs).tolist() == [[1, 0, 0], [0, 1, 0]]
    v3 = write_csv(tmp_path / "v3.csv", ["ids", "country", "V3"], [[10, "X", "ten"], [11, "Y", "eleven"]])
    assert read_comparisons(comps, v3)[1]["text"].tolist() == ["ten", "eleven"]
    unknown = write_csv(tmp_path / "unknown.csv", ["doc_a", "doc_b", "winner"], [[10, 11, "a"], [10, 99, "b"]])
    with pytest.raises(InputError, match=r"unknown.csv, row 2, column 'doc_b': document id '99'"):
        read_comparisons(unknown, docs)


# --------------------------------------------------------------------------- scores


def test_scores_presets_and_bad_score(tmp_path):
    traits = ["cohesion", "syntax", "vocabulary", "phraseology", "grammar", "conventions"]
    fb3 = write_csv(tmp_path / "fb3.csv.xz", ["text_id", "full_text", *traits], [["E1", "An essay.", 3, 3.5, 3, 3, 4, 3]])
    items = read_fb3_ell(fb3)
    assert items.columns.tolist() == ["id", "text", *traits] and items["syntax"].iloc[0] == 3.5
    cl = write_csv(tmp_path / "cl.csv", ["id", "url_legal", "license", "excerpt", "target", "standard_error"], [["c1", "", "", "Text.", -0.3, 0.46]])
    assert read_commonlit(cl)["target"].iloc[0] == pytest.approx(-0.3)
    custom = read_scores_csv(cl, "id", "excerpt", ["target"])
    assert custom.columns.tolist() == ["id", "text", "target"]
    bad = write_csv(tmp_path / "bad.csv", ["text_id", "full_text", *traits], [["E1", "x", 3, 3, 3, 3, 3, 3], ["E2", "y", 3, "good", 3, 3, 3, 3]])
    with pytest.raises(InputError, match=r"bad.csv, row 2, column 'syntax': score 'good' is not a number"):
        read_fb3_ell(bad)
    assert len(read_fb3_ell(bad, on_bad_row="skip")) == 1


def test_read_pairs_unknown_format(tmp_path):
    with pytest.raises(InputError, match="unknown data format 'xml'"):
        read_pairs(tmp_path / "x", "xml")


# --------------------------------------------------------------------------- CLI


def write_bytes(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "prefkit", "read", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_cli_reads_summarises_and_writes(tmp_path):
    path = write_kaggle(tmp_path)
    out = tmp_path / "pairs.parquet"
    res = run_cli("kaggle", path, "--out", out, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "rows: 3" in res.stdout and "class balance" in res.stdout
    back = read_pairs_parquet(out)
    assert len(back) == 3 and back["prompt"].iloc[1] == ["Q1", "Q2"]
    assert get_report(back).rows_read == 3


@pytest.mark.parametrize(
    "make, expect",
    [
        (lambda p: write_kaggle(p, kaggle_rows() + [["9", "a", "b", j("p"), j("x"), j("y"), 1, 1, 0]]), "row 4, column 'winner_model_a,winner_model_b,winner_tie'"),
        (lambda p: write_kaggle(p, kaggle_rows() + [["9", "a", "b", j("p"), j("x"), j("y"), "?", 0, 0]]), "row 4, column 'winner_model_a'"),
        (lambda p: write_bytes(p / "empty.csv", b""), "empty file"),
        (lambda p: write_bytes(p / "t.csv.xz", b"\xfd7zXZ\x00garbage"), "cannot read as CSV"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, make, expect):
    path = make(tmp_path)
    res = run_cli("kaggle", path, cwd=tmp_path)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], res.stderr
    assert "Traceback" not in res.stderr + res.stdout


def test_kaggle_cell_that_starts_as_json_list_but_is_broken_is_a_bad_row(tmp_path):
    from prefkit.data.kaggle import read_kaggle_csv

    path = tmp_path / "train.csv"
    path.write_text(
        "id,prompt,response_a,response_b,winner_model_a,winner_model_b,winner_tie\n"
        '1,"[""hi""]","[""a""]","[""b""]",1,0,0\n'
        '2,"[""hey"" broken","[""a""]","[""bb""]",0,1,0\n'
    )
    with pytest.raises(InputError, match=r"row 2, column 'prompt'.*not valid JSON"):
        read_kaggle_csv(path)
    kept = read_kaggle_csv(path, on_bad_row="skip")
    assert kept["id"].tolist() == ["1"]
    assert kept.attrs["report"]["skipped"] == {"malformed_json": 1}


# --------------------------------------------------------------------------- the format registry


def test_parquet_format_reads_back_what_read_out_wrote(tmp_path):
    path = write_kaggle(tmp_path)
    out = tmp_path / "pairs.parquet"
    assert run_cli("kaggle", path, "--out", out, cwd=tmp_path).returncode == 0
    original = read_pairs(path, "kaggle")
    back = read_pairs(out, "parquet")
    pd.testing.assert_frame_equal(back[list(original.columns)], original)
    res = run_cli("parquet", out, cwd=tmp_path)
    assert res.returncode == 0 and "rows: 3" in res.stdout, res.stderr


def test_training_reads_a_parquet_pair_table(tmp_path):
    from prefkit.config import build_config
    from prefkit.data.run_data import load_run_data

    out = tmp_path / "pairs.parquet"
    original = read_pairs(write_kaggle(tmp_path), "kaggle")
    original.to_parquet(out, index=False)
    train, test = load_run_data(build_config({"data": {"train": str(out), "format": "parquet"}}))
    assert test is None and train["id"].tolist() == original["id"].tolist()
    assert train["response_a"].tolist() == original["response_a"].tolist()


@pytest.mark.parametrize("fmt", ["xml", "fb3_ell"])
def test_config_accepts_pair_formats_only_and_names_them(fmt):
    from prefkit.config import build_config
    from prefkit.data.formats import PAIR_FORMATS
    from prefkit.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        build_config({"data": {"format": fmt}})
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"config: data.format: unknown pair format {fmt!r}")
    assert all(name in message for name in PAIR_FORMATS)


def test_comparisons_find_the_document_table_beside_them(tmp_path):
    from prefkit.data.formats import read_input

    write_csv(tmp_path / "docs.csv.gz", ["document_id", "text"], [[10, "ten"], [11, "eleven"]])
    comps = write_csv(tmp_path / "comparisons.csv", ["doc_a", "doc_b", "winner"], [[10, 11, "a"], [11, 10, "tie"]])
    result = read_input(comps, "comparisons")
    assert result.documents["text"].tolist() == ["ten", "eleven"]
    assert result.table["response_b"].tolist() == [["eleven"], ["ten"]]
    res = run_cli("comparisons", comps, "--out", tmp_path / "c.parquet", cwd=tmp_path)
    assert res.returncode == 0 and (tmp_path / "c_items.parquet").is_file(), res.stderr
    res = run_cli("kaggle", comps, "--docs", tmp_path / "docs.csv.gz", cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.startswith("error: --docs is for document comparisons"), res.stderr
