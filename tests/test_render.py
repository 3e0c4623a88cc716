"""Pair rendering: token budget, head-tail truncation, templates, multi-turn, swap symmetry."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prefkit.config import RenderConfig
from prefkit.errors import ConfigError
from prefkit.schema import make_pairs
from prefkit.testing.tiny import swap_pairs, tiny_tokenizer
from prefkit.text.render import PairRenderer, allocate, field_text, head_tail

MINILM = Path("checkpoints/pretrained/all-MiniLM-L6-v2")
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


@pytest.fixture(scope="module")
def enc_tok():
    return tiny_tokenizer("encoder")


@pytest.fixture(scope="module")
def dec_tok():
    return tiny_tokenizer("decoder")


def _text(rng, n):
    return " ".join(rng.choice(WORDS, size=n)) if n else ""


# -- budget allocation ----------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 3000), st.integers(0, 3000), st.integers(0, 3000), st.integers(0, 2000), st.floats(0.01, 0.99)
)
def test_allocation_properties(lp, la, lb, budget, share):
    kp, ka, kb = allocate((lp, la, lb), budget, share)
    assert 0 <= kp <= lp and 0 <= ka <= la and 0 <= kb <= lb
    assert kp + ka + kb <= budget
    # unused room flows on: at most one token (kept for A/B symmetry) is wasted
    assert kp + ka + kb >= min(budget, lp + la + lb) - 1
    # swapping A and B swaps their allowances
    assert allocate((lp, lb, la), budget, share) == (kp, kb, ka)


def test_unused_budget_flows_to_other_fields():
    budget = 100
    # all long: prompt gets its share, responses split the rest
    assert allocate((1000, 1000, 1000), budget, 0.2) == (20, 40, 40)
    # short prompt: responses take its room
    assert allocate((4, 1000, 1000), budget, 0.2) == (4, 48, 48)
    # short A: B takes A's room
    assert allocate((1000, 10, 1000), budget, 0.2) == (20, 10, 70)
    # short responses: the prompt takes theirs
    assert allocate((1000, 5, 7), budget, 0.2) == (88, 5, 7)
    # everything fits: nothing is cut
    assert allocate((10, 20, 30), budget, 0.2) == (10, 20, 30)


def test_head_tail_keeps_both_ends():
    ids = list(range(100))
    assert head_tail(ids, 10, 0.5) == [0, 1, 2, 3, 4, 95, 96, 97, 98, 99]
    assert head_tail(ids, 10, 1.0) == list(range(10))
    assert head_tail(ids, 10, 0.0) == list(range(90, 100))
    assert head_tail(ids, 10, 0.5, marker=[-1]) == [0, 1, 2, 3, -1, 95, 96, 97, 98, 99]
    assert head_tail(ids, 200, 0.5) == ids
    assert head_tail(ids, 0, 0.5) == []
    assert head_tail(list(range(10)), 5, 0.2) == [0, 6, 7, 8, 9]  # round(5 * 0.2) from the start


def test_field_text_marks_turns_only_when_several():
    assert field_text(["hello"]) == "hello"
    assert field_text([]) == ""
    two = field_text(["first question", "second question"])
    assert "[turn 1] first question" in two and "[turn 2] second question" in two
    assert field_text([None, "x"]).startswith("[turn 1] \n\n[turn 2] x")


# -- rendering with real tokenizers ----------------------------------------------------
@pytest.mark.parametrize("kind,template", [("encoder", "plain"), ("decoder", "plain"), ("decoder", "chat")])
def test_rendered_length_never_exceeds_budget(kind, template, enc_tok, dec_tok):
    tok = enc_tok if kind == "encoder" else dec_tok
    rng = np.random.default_rng(0)
    for max_length in (48, 64, 97, 200) if template == "plain" else (72, 97, 200):
        r = PairRenderer(tok, RenderConfig(max_length=max_length, template=template, prompt_share=0.3, head_fraction=0.6))
        for _ in range(40):
            lens = rng.integers(0, 300, size=3)
            turns = int(rng.integers(1, 4))
            prompt = [_text(rng, int(lens[0]) // turns) for _ in range(turns)]
            a = [_text(rng, int(lens[1]) // turns) for _ in range(turns)]
            b = [_text(rng, int(lens[2]) // turns) for _ in range(turns)]
            ids = r.render(prompt, a, b)
            assert len(ids) <= max_length
            if sum(lens) > 3 * max_length:  # long enough to fill the budget (one token may stay unused)
                assert len(ids) >= max_length - 1


def test_encoder_layout_and_head_tail(enc_tok):
    r = PairRenderer(enc_tok, RenderConfig(max_length=64, truncation_marker=""))
    assert r.style == "encoder"
    long_a = "START " + " ".join(["gamma"] * 300) + " FINISH"
    ids = r.render(["short prompt"], [long_a], ["tiny"])
    cls, sep = enc_tok.cls_token_id, enc_tok.sep_token_id
    assert ids[0] == cls and ids[-1] == sep and ids.count(sep) == 3
    text = r.decode(ids)
    a_part = text.split("[SEP]")[1]
    assert a_part.startswith("START") and a_part.rstrip().endswith("FINISH")
    assert len(ids) == 64  # A took everything the prompt and B left


def test_truncation_marker_between_head_and_tail(enc_tok):
    r = PairRenderer(enc_tok, RenderConfig(max_length=64))
    text = r.decode(r.render(["p"], ["START " + "gamma " * 300 + "FINISH"], ["b"]))
    a_part = text.split("[SEP]")[1]
    assert a_part.startswith("START") and " ... " in a_part and a_part.rstrip().endswith("FINISH")


def test_decoder_layout_ends_with_eos(dec_tok):
    r = PairRenderer(dec_tok, RenderConfig(max_length=128))
    assert r.style == "decoder"
    ids = r.render(["what is two plus two"], ["four"], ["five"])
    assert ids[0] == dec_tok.bos_token_id  # the tokenizer adds a BOS by itself
    assert ids[-1] == dec_tok.eos_token_id
    text = r.decode(ids)
    assert text.index("<prompt>:") < text.index("<response_a>:") < text.index("<response_b>:")
    assert "four" in text.split("<response_a>:")[1].split("<response_b>:")[0]


def test_chat_template_wraps_the_fields(dec_tok):
    r = PairRenderer(dec_tok, RenderConfig(max_length=128, template="chat"))
    text = r.decode(r.render(["hello there"], ["answer one"], ["answer two"]))
    assert text.startswith("<s><|user|>") and text.rstrip().endswith("<|assistant|>")
    assert "answer one" in text and "Which response" in text


def test_chat_template_missing_is_a_config_error():
    tok = tiny_tokenizer("decoder", chat_template=False)
    with pytest.raises(ConfigError, match="no chat template"):
        PairRenderer(tok, RenderConfig(template="chat"))


def test_budget_too_small_for_template(dec_tok):
    with pytest.raises(ConfigError, match="leaves no room"):
        PairRenderer(dec_tok, RenderConfig(max_length=32, template="chat"))


def test_multi_turn_markers_and_truncation_of_whole_field(enc_tok):
    r = PairRenderer(enc_tok, RenderConfig(max_length=200, truncation_marker=""))
    text = r.decode(r.render(["q1", "q2"], ["a1", "a2"], ["b1", "b2"]))
    assert "[turn 1]" in text and "[turn 2]" in text
    # a long middle turn is cut; the first and last turns survive
    a = ["FIRST turn", " ".join(["delta"] * 400), "LAST turn"]
    text = r.decode(r.render(["q1", "q2", "q3"], a, ["b"] * 3))
    a_part = text.split("[SEP]")[1]
    assert "FIRST" in a_part and "LAST" in a_part


def test_render_pairs_swapped_matches_swap_pairs(enc_tok):
    rng = np.random.default_rng(1)
    n = 12
    pairs = make_pairs(
        range(n),
        [[_text(rng, int(rng.integers(1, 50)))] for _ in range(n)],
        [[_text(rng, int(rng.integers(1, 200)))] for _ in range(n)],
        [[_text(rng, int(rng.integers(1, 200)))] for _ in range(n)],
    )
    r = PairRenderer(enc_tok, RenderConfig(max_length=96))
    ids, ids_sw = r.render_pairs(pairs)
    ids_of_swapped, _ = r.render_pairs(swap_pairs(pairs), swapped=False)
    assert ids_sw == ids_of_swapped
    for i in range(n):  # the same tokens, the sides exchanged
        assert sorted(ids[i]) == sorted(ids_sw[i])


@pytest.mark.skipif(not MINILM.exists(), reason="all-MiniLM-L6-v2 not fetched")
def test_real_minilm_tokenizer_budget():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(MINILM)
    r = PairRenderer(tok, RenderConfig(max_length=128))
    ids = r.render(["Tell me a story"], ["Once upon a time " * 200], ["No."])
    assert len(ids) == 128 and ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
