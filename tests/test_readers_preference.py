"""Preference data (prompt/chosen/rejected in its text and chat shapes), pair tables in any
layout through a column mapping, RM-Gallery Parquet with its preference strength, and
unpairing pairs into items."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from prefkit.config import build_config
from prefkit.data import get_report, read_pairs, read_rm_gallery
from prefkit.data.preference import chosen_on_a, unpair
from prefkit.data.run_data import load_run_data
from prefkit.errors import ConfigError, InputError
from prefkit.schema import label_matrix, validate_pairs


def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def user(text):
    return {"role": "user", "content": text}


def bot(text):
    return {"role": "assistant", "content": text}


def sides_by_label(df):
    """(chosen, rejected) turn lists of each row, read back through its label."""
    on_a = df["p_a"].to_numpy() == 1.0
    chosen = [a if w else b for a, b, w in zip(df["response_a"], df["response_b"], on_a)]
    rejected = [b if w else a for a, b, w in zip(df["response_a"], df["response_b"], on_a)]
    return chosen, rejected


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "prefkit", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120)


# --------------------------------------------------------------------------- preference


def test_string_preference_labels_follow_chosen_and_the_coin_is_seeded(tmp_path):
    recs = [{"prompt": f"question {i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(60)]
    path = write_jsonl(tmp_path / "prefs.jsonl", recs)
    df = read_pairs(path, "preference")
    validate_pairs(df, require_labels=True)
    chosen, rejected = sides_by_label(df)
    assert chosen == [[f"good {i}"] for i in range(60)] and rejected == [[f"bad {i}"] for i in range(60)]
    assert df["prompt"].tolist() == [[f"question {i}"] for i in range(60)]
    share_a = df["p_a"].mean()
    assert 0.25 < share_a < 0.75  # not all A: a model cannot learn "A always wins"
    again = read_pairs(path, "preference")
    assert again["p_a"].tolist() == df["p_a"].tolist()  # a reread gives the same sides
    other = read_pairs(path, "preference", seed=1)
    assert other["p_a"].tolist() != df["p_a"].tolist()
    assert df["p_a"].tolist() == [1.0 if chosen_on_a(str(i + 1), 0) else 0.0 for i in range(60)]


def test_chat_message_shapes_from_jsonl_json_list_and_parquet(tmp_path):
    recs = [
        # TRL conversational: the prompt as messages, the sides as answers
        {"id": "trl", "prompt": [user("Hi")], "chosen": [bot("Hello!")], "rejected": [bot("Go away.")]},
        # UltraFeedback-binarised: a prompt string and whole conversations
        {"id": "uf", "prompt": "Sum 2+2", "chosen": [user("Sum 2+2"), bot("4")], "rejected": [user("Sum 2+2"), bot("5")]},
        # HH-RLHF as messages: no prompt field, a shared multi-turn history
        {
            "id": "hh",
            "chosen": [user("Q1"), bot("R1"), user("Q2"), bot("kind answer")],
            "rejected": [user("Q1"), bot("R1"), user("Q2"), bot("rude answer")],
        },
        # HH-RLHF as published: dialogue text with Human:/Assistant: markers
        {
            "id": "hh_text",
            "chosen": "\n\nHuman: Q1\n\nAssistant: R1\n\nHuman: Q2\n\nAssistant: yes",
            "rejected": "\n\nHuman: Q1\n\nAssistant: R1\n\nHuman: Q2\n\nAssistant: no",
        },
    ]
    expected = {
        "trl": (["Hi"], ["Hello!"], ["Go away."]),
        "uf": (["Sum 2+2"], ["4"], ["5"]),
        "hh": (["Q1", "Q2"], ["R1", "kind answer"], ["R1", "rude answer"]),
        "hh_text": (["Q1", "Q2"], ["R1", "yes"], ["R1", "no"]),
    }
    jsonl = write_jsonl(tmp_path / "chat.jsonl", recs)
    json_list = tmp_path / "chat.json"
    json_list.write_text(json.dumps(recs))
    for path in (jsonl, json_list):
        df = read_pairs(path, "preference")
        chosen, rejected = sides_by_label(df)
        got = {i: (p, c, r) for i, p, c, r in zip(df["id"], df["prompt"], chosen, rejected)}
        assert got == expected, path
        assert df.set_index("id").loc["hh", "group"] == df.set_index("id").loc["hh_text", "group"]  # same prompt, same fold group
    # Parquet holds one type per column: UltraFeedback's layout (nested messages), one row without a prompt
    parquet = tmp_path / "chat.parquet"
    pd.DataFrame([recs[1], {**recs[2], "prompt": None}]).to_parquet(parquet)
    df = read_pairs(parquet, "preference")
    chosen, rejected = sides_by_label(df)
    assert {i: (p, c, r) for i, p, c, r in zip(df["id"], df["prompt"], chosen, rejected)} == {k: expected[k] for k in ("uf", "hh")}


def test_hh_prompt_text_with_an_open_assistant_turn(tmp_path):
    recs = [{"prompt": "\n\nHuman: Name a colour.\n\nAssistant:", "chosen": " Blue.", "rejected": " No."}]
    df = read_pairs(write_jsonl(tmp_path / "p.jsonl", recs), "preference")
    assert df["prompt"].iloc[0] == ["Name a colour."]
    assert sorted([df["response_a"].iloc[0], df["response_b"].iloc[0]]) == [[" Blue."], [" No."]]


def test_preference_bad_rows_name_file_row_and_column(tmp_path):
    recs = [{"prompt": "p", "chosen": "c", "rejected": "r"}, {"prompt": "p", "chosen": "c"}, {"prompt": "p", "chosen": 5, "rejected": "r"}]
    path = write_jsonl(tmp_path / "bad.jsonl", recs)
    with pytest.raises(InputError) as err:
        read_pairs(path, "preference")
    assert (err.value.file, err.value.row, err.value.column) == (path, 2, "rejected")
    df = read_pairs(path, "preference", on_bad_row="skip")
    assert len(df) == 1 and get_report(df).skipped == {"missing_field": 1, "bad_response": 1}


# --------------------------------------------------------------------------- column-mapped pairs


def test_llmbar_csv_through_a_column_mapping(tmp_path):
    path = tmp_path / "llmbar.csv"
    pd.DataFrame(
        {"input": ["Write a haiku", "Add 1+1"], "output_1": ["five seven five", "3"], "output_2": ["a limerick", "2"], "label": [1, 2]}
    ).to_csv(path, index=False)
    df = read_pairs(path, "pairs", columns="prompt=input,a=output_1,b=output_2,label=label", labels="a=1,b=2")
    assert df["prompt"].tolist() == [["Write a haiku"], ["Add 1+1"]]
    assert df["response_a"].tolist() == [["five seven five"], ["3"]]
    assert label_matrix(df).tolist() == [[1, 0, 0], [0, 1, 0]]
    assert df["id"].tolist() == ["1", "2"]


def test_auto_j_zero_based_codes_and_default_columns(tmp_path):
    recs = [
        {"prompt": "q", "response_a": "x", "response_b": "y", "label": 0},
        {"prompt": "q", "response_a": "x", "response_b": "z", "label": 1},
        {"prompt": "q", "response_a": "y", "response_b": "z", "label": 2},
    ]
    df = read_pairs(write_jsonl(tmp_path / "autoj.jsonl", recs), "pairs", labels={"a": 0, "b": 1, "tie": 2})
    assert label_matrix(df).tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    unlabelled = read_pairs(write_jsonl(tmp_path / "test.jsonl", [{k: v for k, v in r.items() if k != "label"} for r in recs]), "pairs")
    assert np.isnan(label_matrix(unlabelled)).all()


def test_mt_bench_two_turn_conversations_models_and_tie_codes(tmp_path):
    def conv(answer1, answer2):
        return [user("Plan a trip"), bot(answer1), user("Shorter"), bot(answer2)]

    table = pd.DataFrame(
        {
            "question_id": [81, 81, 82],
            "model_a": ["gpt-4", "vicuna", "gpt-4"],
            "model_b": ["vicuna", "llama", "llama"],
            "winner": ["model_a", "tie (bothbad)", "tie"],
            "conversation_a": [conv("A1", "A2"), conv("B1", "B2"), conv("A1", "A2")],
            "conversation_b": [conv("B1", "B2"), conv("C1", "C2"), conv("C1", "C2")],
        }
    )
    path = tmp_path / "mt_bench.parquet"
    table.to_parquet(path)
    df = read_pairs(
        path,
        "pairs",
        columns="a=conversation_a,b=conversation_b,label=winner,model_a=model_a,model_b=model_b",
        labels="a=model_a,b=model_b,tie=tie|tie (bothbad)",
    )
    assert df["prompt"].iloc[0] == ["Plan a trip", "Shorter"]
    assert df["response_a"].iloc[0] == ["A1", "A2"] and df["response_b"].iloc[0] == ["B1", "B2"]
    assert label_matrix(df).tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 1]]
    assert df["model_b"].tolist() == ["vicuna", "llama", "llama"]


def test_column_pair_errors_are_one_line_with_file_row_and_column(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"q": "p", "o1": "x", "o2": "y", "winner": "1"}, {"q": "p", "o1": "x", "o2": "y", "winner": "3"}])
    mapping = "prompt=q,a=o1,b=o2,label=winner"
    with pytest.raises(InputError) as err:
        read_pairs(path, "pairs", columns=mapping, labels="a=1,b=2")
    assert (err.value.row, err.value.column) == (2, "winner") and "a=1, b=2" in str(err.value)
    with pytest.raises(InputError, match="no such column for 'b'") as err:
        read_pairs(path, "pairs", columns="prompt=q,a=o1,b=output_2")
    assert err.value.column == "output_2"
    with pytest.raises(InputError, match="unknown column key 'answer'"):
        read_pairs(path, "pairs", columns="answer=o1,a=o1,b=o2")
    res = cli("read", "pairs", path, "--columns", mapping, "--labels", "a=1,b=2", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [f"error: {path}, row 2, column 'winner': label '3' is not one of a=1, b=2"]


def test_config_data_columns_and_labels_reach_the_reader(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [{"q": f"p{i}", "o1": "x", "o2": "y", "y": i % 2} for i in range(4)])
    cfg = build_config(
        {"data": {"train": path, "format": "pairs", "columns": {"prompt": "q", "a": "o1", "b": "o2", "label": "y"}, "labels": {"a": 1, "b": 0}}}
    )
    train, test = load_run_data(cfg)
    assert test is None and label_matrix(train)[:, 0].tolist() == [0, 1, 0, 1]
    with pytest.raises(ConfigError, match="columns is for data.format pairs"):
        build_config({"data": {"format": "kaggle", "columns": {"a": "o1"}}})
    with pytest.raises(ConfigError, match="stands for both"):
        build_config({"data": {"format": "pairs", "labels": {"a": 1, "b": "1"}}})


# --------------------------------------------------------------------------- RM-Gallery Parquet


def rm_record(uid, prompt, a, b, preferred, strength=None):
    meta = {"preferred": preferred, "preference_strength": strength}
    return {
        "unique_id": uid,
        "input": [user(prompt)],
        "output": [{"answer": bot(a)}, {"answer": bot(b)}],
        "metadata": meta,
    }


def test_rm_gallery_parquet_keeps_preference_strength_through_read_out(tmp_path):
    path = tmp_path / "rm.parquet"
    pd.DataFrame([rm_record("u1", "Hi", "Hello", "Go", "A", -3.0), rm_record("u2", "Q", "x", "y", "tie", None)]).to_parquet(path)
    df = read_rm_gallery(path)
    assert df["preference_strength"].iloc[0] == -3.0 and np.isnan(df["preference_strength"].iloc[1])
    assert label_matrix(df).tolist() == [[1, 0, 0], [0, 0, 1]]
    out = tmp_path / "pairs.parquet"
    res = cli("read", "rm_gallery", path, "--out", out, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert read_pairs(out, "parquet")["preference_strength"].iloc[0] == -3.0


# --------------------------------------------------------------------------- unpairing


def test_unpair_counts_wins_losses_ties_per_distinct_text():
    from prefkit.schema import make_pairs

    pairs = make_pairs(
        ["1", "2", "3", "4"],
        [["p"], ["p"], ["p"], ["other"]],
        [["x"], ["y"], ["x"], ["x"]],
        [["y"], ["z"], ["z"], ["y"]],
        labels=np.array([[1, 0, 0], [0, 0, 1], [0.25, 0.75, 0], [np.nan] * 3]),
    )
    items = unpair(pairs).set_index(["prompt", "text"])
    assert len(items) == 5  # (p, x), (p, y), (p, z), (other, x), (other, y)
    assert items.loc[("p", "x"), ["n_pairs", "wins", "losses", "ties"]].tolist() == [2, 1.25, 0.75, 0]
    assert items.loc[("p", "y"), ["n_pairs", "wins", "losses", "ties"]].tolist() == [2, 0, 1, 1]
    assert items.loc[("p", "z"), ["wins", "losses", "ties"]].tolist() == [0.75, 0.25, 1]
    assert items.loc[("other", "x"), ["n_pairs", "wins", "losses", "ties"]].tolist() == [1, 0, 0, 0]
    assert items["wins"].sum() == items["losses"].sum()
    assert items["id"].is_unique and (unpair(pairs.iloc[::-1])["id"].sort_values().tolist() == items["id"].sort_values().tolist())


def test_unpair_command_writes_items_and_uses_document_ids(tmp_path):
    (tmp_path / "docs.csv").write_text("document_id,text\nd1,one\nd2,two\nd3,three\n")
    (tmp_path / "comparisons.csv").write_text("doc_a,doc_b,winner\nd1,d2,a\nd2,d3,b\nd1,d3,a\n")
    out = tmp_path / "items.csv"
    res = cli("unpair", tmp_path / "comparisons.csv", "--format", "comparisons", "--out", out, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    items = pd.read_csv(out).set_index("id")
    assert items.loc["d1", ["n_pairs", "wins", "losses"]].tolist() == [2, 2, 0]
    assert items.loc["d3", ["n_pairs", "wins", "losses"]].tolist() == [2, 1, 1]
    res = cli("unpair", tmp_path / "comparisons.csv", "--format", "comparisons", "--out", tmp_path / "docs.csv", cwd=tmp_path)
    assert res.returncode == 2 and "not a prefkit items file" in res.stderr


def test_answers_that_look_like_json_stay_text(tmp_path):
    recs = [{"prompt": "List three numbers", "chosen": "[1, 2, 3]", "rejected": '{"answer": 4}'}]
    df = read_pairs(write_jsonl(tmp_path / "p.jsonl", recs), "preference")
    chosen, rejected = sides_by_label(df)
    assert chosen == [["[1, 2, 3]"]] and rejected == [['{"answer": 4}']]


def test_margin_and_weight_columns_and_the_bad_side_named(tmp_path):
    recs = [{"prompt": "p", "chosen": "c", "rejected": "r", "margin": 1.5}, {"prompt": "q", "chosen": "c", "rejected": "r"}]
    df = read_pairs(write_jsonl(tmp_path / "m.jsonl", recs), "preference")
    assert df["margin"].tolist() == [1.5, 0.0]  # the winner's margin, whichever side it landed on
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "chosen": "c", "rejected": 7}])
    with pytest.raises(InputError) as err:
        read_pairs(bad, "preference")
    assert (err.value.row, err.value.column) == (1, "rejected")
    rows = [{"x": "a", "y": "b", "w": 3, "gap": 0.5}, {"x": "a", "y": "c", "w": -1, "gap": 0}]
    path = write_jsonl(tmp_path / "w.jsonl", rows)
    with pytest.raises(InputError, match=">= 0") as err:
        read_pairs(path, "pairs", columns="a=x,b=y,weight=w,margin=gap")
    assert (err.value.row, err.value.column) == (2, "w")
    df = read_pairs(path, "pairs", columns="a=x,b=y,weight=w,margin=gap", on_bad_row="skip")
    assert df["weight"].tolist() == [3.0] and df["margin"].tolist() == [0.5]
