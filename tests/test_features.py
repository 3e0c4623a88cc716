"""Hand-crafted pair features: counts on known text, the swap property, cached extra features."""

import math

import numpy as np
import pandas as pd
import pytest

from prefkit.data.kaggle import read_kaggle_csv
from prefkit.data.synthetic import write_synthetic_arena
from prefkit.errors import InputError
from prefkit.features import SIDE_FEATURES, join_extra_features, pair_features, swap_features
from prefkit.schema import make_pairs
from prefkit.testing.tiny import swap_pairs

RICH = (
    "# Title\n"
    "\n"
    "Some **bold** text with `code` here. Why?\n"
    "\n"
    "- item one\n"
    "- item two\n"
    "1. first step\n"
    "\n"
    "```python\n"
    "print(1)\n"
    "```\n"
    "See https://example.com for more! I'm sorry, but I cannot do 42 things."
)


def _pairs(a_turns, b_turns, prompt=("Explain the title please",)):
    return make_pairs(["x1"], [list(prompt)], [list(a_turns)], [list(b_turns)], labels=np.array([[1.0, 0.0, 0.0]]))


def test_counts_on_a_known_string():
    f = pair_features(_pairs([RICH], ["plain answer"])).iloc[0]
    assert f["a_chars"] == len(RICH)
    assert f["a_words"] == len(RICH.split())
    assert f["a_lines"] == RICH.count("\n") + 1
    assert f["a_paragraphs"] == 4  # blocks separated by blank lines
    assert f["a_headers"] == 1
    assert f["a_bold"] == 1
    assert f["a_inline_code"] == 1
    assert f["a_code_blocks"] == 1
    assert f["a_list_items"] == 3  # two bullets, one numbered
    assert f["a_urls"] == 1
    assert f["a_questions"] == 1
    assert f["a_exclamations"] == 1
    assert f["a_refusals"] == 2  # "sorry", "i cannot"
    assert f["a_turns"] == 1
    assert f["a_digit_share"] == pytest.approx(sum(c.isdigit() for c in RICH) / len(RICH))
    assert f["b_words"] == 2 and f["b_lines"] == 1 and f["b_paragraphs"] == 1
    assert f["b_list_items"] == 0 and f["b_headers"] == 0 and f["b_refusals"] == 0
    assert f["diff_words"] == len(RICH.split()) - 2
    assert f["logratio_chars"] == pytest.approx(math.log1p(len(RICH)) - math.log1p(len("plain answer")), rel=1e-6)
    assert f["prompt_words"] == 4 and f["prompt_turns"] == 1


def test_overlap_ratio_turns_and_empty_sides():
    pairs = make_pairs(
        ["p"],
        [["tell me about cats", "and dogs"]],
        [["tell me about cats", "and dogs"]],  # the prompt's own words: overlap 1
        [["", "dogs dogs dogs dogs"]],
        labels=np.array([[0.0, 0.0, 1.0]]),
    )
    f = pair_features(pairs).iloc[0]
    assert f["a_prompt_overlap"] == pytest.approx(1.0)
    assert f["b_prompt_overlap"] == pytest.approx(1 / 6)  # {dogs} of 6 distinct words
    assert f["a_unique_word_ratio"] == pytest.approx(1.0)
    assert f["b_unique_word_ratio"] == pytest.approx(0.25)
    assert f["a_turns"] == 2 and f["b_empty_turns"] == 1 and f["a_empty_turns"] == 0
    empty = pair_features(_pairs([""], ["   "])).iloc[0]
    assert empty["a_lines"] == 0 and empty["a_paragraphs"] == 0 and empty["b_words"] == 0


def test_one_float32_row_per_pair_indexed_by_id():
    pairs = make_pairs(["a", "b", "c"], [["q"]] * 3, [["x"], ["y y"], [RICH]], [["z"]] * 3)
    f = pair_features(pairs)
    assert list(f.index) == ["a", "b", "c"]
    assert set(f.dtypes) == {np.dtype("float32")}
    assert np.isfinite(f.to_numpy()).all()
    for name in SIDE_FEATURES:
        assert {f"a_{name}", f"b_{name}", f"diff_{name}", f"logratio_{name}"} <= set(f.columns)


@pytest.fixture(scope="module")
def synthetic_pairs(tmp_path_factory):
    out = tmp_path_factory.mktemp("arena")
    write_synthetic_arena(out, n_train=300, n_test=0, seed=5)
    return read_kaggle_csv(out / "train.csv")


def test_features_of_swapped_pairs_are_the_exchanged_features(synthetic_pairs):
    handmade = make_pairs(
        ["h1", "h2"], [["q?"], ["write code"]], [[RICH], ["short", "two turns"]], [["plain"], ["```\nx\n```", ""]]
    )
    for pairs in (synthetic_pairs, handmade):
        f = pair_features(pairs)
        swapped = pair_features(swap_pairs(pairs))
        pd.testing.assert_frame_equal(swapped, swap_features(f))
        assert (swapped["a_chars"].to_numpy() == f["b_chars"].to_numpy()).all()
        assert (swapped["diff_words"].to_numpy() == -f["diff_words"].to_numpy()).all()
        assert (swapped["prompt_chars"].to_numpy() == f["prompt_chars"].to_numpy()).all()
        pd.testing.assert_frame_equal(swap_features(swap_features(f)), f)


def test_swap_of_extra_columns_follows_their_names():
    f = pd.DataFrame(
        {"a_emb": [1.0], "b_emb": [2.0], "diff_emb_0": [3.0], "logratio_x": [0.5], "emb_cos_ab": [0.7], "a_lonely": [9.0]},
        index=pd.Index(["i"], name="id"),
    )
    s = swap_features(f).iloc[0]
    assert (s["a_emb"], s["b_emb"], s["diff_emb_0"], s["logratio_x"], s["emb_cos_ab"], s["a_lonely"]) == (2.0, 1.0, -3.0, -0.5, 0.7, 9.0)


def _extra(tmp_path, name, frame):
    path = tmp_path / name
    frame.to_parquet(path, index=False)
    return str(path)


def test_extra_features_join_on_id(tmp_path):
    pairs = make_pairs(["a", "b"], [["q"]] * 2, [["x"], ["y"]], [["z"], ["w"]])
    base = pair_features(pairs)
    path = _extra(tmp_path, "emb.parquet", pd.DataFrame({"id": ["b", "a", "extra"], "diff_emb_0": [2.0, 1.0, 5.0], "emb_cos_ab": [0.2, 0.1, 0.0]}))
    joined = join_extra_features(base, [path])
    assert list(joined.index) == ["a", "b"]
    assert joined["diff_emb_0"].tolist() == [1.0, 2.0]
    assert joined.shape[1] == base.shape[1] + 2


def test_extra_features_bad_files(tmp_path):
    base = pair_features(make_pairs(["a", "b"], [["q"]] * 2, [["x"], ["y"]], [["z"], ["w"]]))
    cases = {
        "no row here": pd.DataFrame({"id": ["a"], "v": [1.0]}),
        "numeric": pd.DataFrame({"id": ["a", "b"], "v": ["x", "y"]}),
        "already a feature": pd.DataFrame({"id": ["a", "b"], "a_chars": [1.0, 2.0]}),
        "duplicate id": pd.DataFrame({"id": ["a", "a", "b"], "v": [1.0, 2.0, 3.0]}),
    }
    for i, (expect, frame) in enumerate(cases.items()):
        with pytest.raises(InputError, match=expect):
            join_extra_features(base, [_extra(tmp_path, f"f{i}.parquet", frame)])
    with pytest.raises(InputError, match="not found"):
        join_extra_features(base, [str(tmp_path / "nope.parquet")])
    no_id = _extra(tmp_path, "noid.parquet", pd.DataFrame({"key": ["a"], "v": [1.0]}))
    with pytest.raises(InputError, match="'id'"):
        join_extra_features(base, [no_id])
