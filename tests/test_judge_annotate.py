"""Zero/few-shot annotation of pairs by a causal LM (prefkit.judge.annotate), on tiny random
Llama checkpoints: option tokens, probabilities in both orders, order symmetry, the run
folder as a stacker base model and as Bradley-Terry input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from prefkit.cli import main
from prefkit.config import AnnotateConfig, RenderConfig, load_config
from prefkit.judge.annotate import annotate_pairs, fit_item_scores, load_causal_lm
from prefkit.judge.prompts import JudgePrompt, JudgeRenderer, option_continuation
from prefkit.testing.tiny import (
    swap_pairs,
    tiny_tokenizer,
    toy_pairs,
    write_tiny_checkpoint,
)

RENDER = RenderConfig(max_length=320)


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("lm") / "llama", "llama", seed=3)


@pytest.fixture(scope="module")
def judge(tiny_lm):
    cfg = load_config(None, [f"model.name_or_path={tiny_lm}"])
    model, tokenizer = load_causal_lm(cfg.model, "cpu")
    return model, tokenizer


def _renderer(tokenizer, pairs, **settings) -> JudgeRenderer:
    return JudgeRenderer(tokenizer, RENDER, JudgePrompt.from_config(AnnotateConfig(**settings), pairs))


def _blind(model, equal_sides_token_ids=None):
    """A copy of ``model`` that cannot see the text: attention and MLP outputs zeroed, so the
    answer position's logits depend on its own token only; with ``equal_sides_token_ids`` the
    output rows of the first- and second-side option tokens made equal as well."""
    import copy

    blind = copy.deepcopy(model)
    with torch.no_grad():
        for layer in blind.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        if equal_sides_token_ids is not None:
            first, second = equal_sides_token_ids
            head = blind.get_output_embeddings().weight
            if blind.get_output_embeddings().weight is blind.get_input_embeddings().weight:
                blind.config.tie_word_embeddings = False
                blind.lm_head.weight = torch.nn.Parameter(head.detach().clone())
                head = blind.lm_head.weight
            head[second] = head[first]
    return blind.eval()


@pytest.mark.parametrize("chat", ["auto", "off"])
def test_option_tokens_are_the_labels_continuing_the_prompt(judge, chat):
    _, tokenizer = judge
    pairs = toy_pairs(4)
    renderer = _renderer(tokenizer, pairs, chat_template=chat, tie="on")
    assert renderer.uses_chat_template == (chat == "auto")
    assert len(set(renderer.option_ids)) == 3
    last_piece = renderer.segments[-1]
    for option, token_id in zip(("A", "B", "tie"), renderer.option_ids):
        continued = renderer._encode(renderer.final_text + option_continuation(renderer.final_text, option))
        assert continued[: len(last_piece) + 1] == last_piece + [token_id]  # the next token, in context
        assert tokenizer.decode([token_id]).strip() == option[: len(tokenizer.decode([token_id]).strip())]
    ids, _ = renderer.render_pairs(pairs, swapped=False)
    assert all(seq[-len(last_piece):] == last_piece and len(seq) <= RENDER.max_length for seq in ids)


def test_texts_template_has_no_prompt_and_labels_one_two(judge):
    _, tokenizer = judge
    pairs = toy_pairs(3)
    pairs["prompt"] = [[""]] * len(pairs)
    renderer = _renderer(tokenizer, pairs, tie="off")
    assert renderer.prompt.kind == "texts" and renderer.prompt.options == ("1", "2")
    text = renderer.decode(renderer.render_pairs(pairs, swapped=False)[0][0])
    assert "Text 1:" in text and "Text 2:" in text and "tie" not in text


def test_a_label_sharing_the_first_token_is_refused(judge):
    from prefkit.errors import ConfigError

    _, tokenizer = judge
    with pytest.raises(ConfigError, match="share a first token|merges"):
        _renderer(tokenizer, toy_pairs(2), labels=["answer one", "answer two"], tie="off")


@pytest.mark.parametrize("tie", ["on", "off"])
def test_probabilities_sum_to_one_in_both_orders(judge, tie):
    model, tokenizer = judge
    pairs = toy_pairs(12, seed=1)
    ann = annotate_pairs(model, _renderer(tokenizer, pairs, tie=tie), pairs, batch_size=5)
    for probs in (ann.ab, ann.ba, ann.probs):
        assert probs.shape == (12, 3) and (probs >= 0).all()
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    if tie == "off":
        assert (ann.probs[:, 2] == 0).all()
    else:
        assert (ann.probs[:, 2] > 0).all()
    assert 0 <= ann.position_bias()["flip_rate"] <= 1


def test_head_tail_truncation_keeps_long_pairs(judge):
    model, tokenizer = judge
    pairs = toy_pairs(3, seed=2)
    pairs["response_a"] = [["word " * 2000]] * 3
    renderer = _renderer(tokenizer, pairs)
    ann = annotate_pairs(model, renderer, pairs, batch_size=4)
    assert np.isfinite(ann.probs).all() and len(ann.ids) == 3
    assert max(len(s) for s in renderer.render_pairs(pairs)[0]) <= RENDER.max_length


def test_mirrored_pairs_get_exactly_swapped_annotations(judge):
    """Asking both orders makes the judge's output independent of which side is called A."""
    model, tokenizer = judge
    pairs = toy_pairs(10, seed=4)
    renderer = _renderer(tokenizer, pairs)
    ann = annotate_pairs(model, renderer, pairs, batch_size=4)
    mirrored = annotate_pairs(model, renderer, swap_pairs(pairs), batch_size=4)
    np.testing.assert_allclose(mirrored.ab, ann.ba[:, [1, 0, 2]], atol=1e-6)
    np.testing.assert_allclose(mirrored.probs, ann.probs[:, [1, 0, 2]], atol=1e-6)
    assert (mirrored.flipped == ann.flipped).all()


def test_a_symmetric_model_gives_exactly_swapped_orders(judge):
    """A judge that cannot see the texts and scores both side options alike: the probabilities
    of the two orders are exactly each other's swap; no flips."""
    model, tokenizer = judge
    pairs = toy_pairs(8, seed=5)
    renderer = _renderer(tokenizer, pairs)
    sym = _blind(model, equal_sides_token_ids=renderer.option_ids[:2])
    ann = annotate_pairs(sym, renderer, pairs, batch_size=3)
    # exact up to float32 rounding (rows padded to other lengths in other batches)
    np.testing.assert_allclose(ann.ab, ann.ba[:, [1, 0, 2]], atol=1e-6)
    np.testing.assert_array_equal(ann.ab[:, 0], ann.ab[:, 1])
    assert ann.position_bias()["flip_rate"] == 0.0


def test_position_bias_of_a_judge_that_only_sees_positions(judge):
    """A judge blind to the texts answers by position: the combined P(A) equals P(B) exactly,
    every pair flips (unless it says tie), and mean P(first) is its constant first-side share."""
    model, tokenizer = judge
    pairs = toy_pairs(8, seed=6)
    renderer = _renderer(tokenizer, pairs)
    ann = annotate_pairs(_blind(model), renderer, pairs, batch_size=3)
    np.testing.assert_allclose(ann.ab[:, [1, 0, 2]], ann.ba, atol=1e-6)  # the same answer for every position
    np.testing.assert_allclose(ann.probs[:, 0], ann.probs[:, 1], atol=1e-6)
    bias = ann.position_bias()
    says_tie = ann.ab.argmax(axis=1) == 2
    assert bias["flip_rate"] == pytest.approx(float((~says_tie).mean()))
    assert bias["mean_p_first"] == pytest.approx(float(ann.ab[0, 0]), abs=1e-6)


def test_few_shot_examples_become_turns_before_the_pair(judge):
    _, tokenizer = judge
    pairs = toy_pairs(2)
    example = {"prompt": "two plus two", "response_a": "four", "response_b": "five", "answer": "first"}
    prompt = JudgePrompt.from_config(AnnotateConfig(examples=[example]), pairs)
    renderer = JudgeRenderer(tokenizer, RenderConfig(max_length=800), prompt)  # the example's turn takes room too
    text = renderer.decode(renderer.render_pairs(pairs, swapped=False)[0][0])
    assert text.index("two plus two") < text.index(pairs["prompt"].iloc[0][0][:20])
    assert "<|assistant|>\nA\n" in text  # the example's answer as the assistant's turn


def test_run_folder_feeds_the_stacker_and_the_bt_fitter(tmp_path, tiny_lm):
    from prefkit.data.synthetic import write_synthetic_arena
    from prefkit.predictions import read_predictions
    from prefkit.stacking import stack_runs

    data = tmp_path / "data"
    write_synthetic_arena(data, n_train=120, n_test=30, seed=1)
    run = tmp_path / "runs" / "judge"
    code = main(["judge", "annotate", f"data.dir={data}", f"model.name_or_path={tiny_lm}", "render.max_length=320",
                 f"output_dir={tmp_path / 'runs'}", "name=judge", "folds.n_folds=3", "annotate.batch_size=16", "--scores"])  # fmt: skip
    assert code == 0
    oof, test = read_predictions(run / "oof.csv"), read_predictions(run / "test.csv")
    folds = pd.read_csv(run / "folds.csv", dtype={"id": str})
    assert len(oof) == 120 and len(test) == 30 and (test["fold"] == -1).all()
    assert oof.set_index("id")["fold"].equals(folds.set_index("id")["fold"].loc[oof["id"]])
    table = pd.read_csv(run / "annotations.csv", dtype={"id": str})
    assert {"p_a_ab", "p_b_ba", "flipped", "model_a", "model_b"} <= set(table.columns)
    np.testing.assert_allclose(table[["p_a", "p_b", "p_tie"]].to_numpy(), oof[["p_a", "p_b", "p_tie"]].to_numpy(), atol=1e-7)
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["position_bias"]["flip_rate"] <= 1 and metrics["labels"]["weighted"]["n"] == 120
    assert json.loads((run / "run.json").read_text())["kind"] == "judge"

    # the stacker takes the folder as a base model (labels from its config.yaml)
    cfg = load_config(None, [f"output_dir={tmp_path / 'runs'}", "stack.name=stack"])
    stacked = stack_runs(cfg, [run])
    assert len(stacked.oof) == 120 and stacked.test is not None and len(stacked.test) == 30

    # item scores: written by --scores, and the same fit from the annotated pair table
    scores = pd.read_csv(run / "scores" / "scores.csv")
    pairs = pd.read_parquet(run / "annotated_pairs.parquet")
    items = set(pairs["model_a"]) | set(pairs["model_b"])
    assert set(scores["item"]) == items and np.isfinite(scores["score"]).all()
    assert main(["scores", "fit", "parquet", str(run / "annotated_pairs.parquet"), "--out", str(tmp_path / "bt"), "--top", "0"]) == 0
    again = pd.read_csv(tmp_path / "bt" / "scores.csv").set_index("item")["score"]
    np.testing.assert_allclose(again.loc[scores["item"]].to_numpy(), scores["score"].to_numpy(), atol=1e-6)


def test_item_scores_follow_the_judges_preferences(judge):
    """Bradley-Terry from annotations: the item the judge prefers scores higher."""
    from prefkit.judge.annotate import Annotations

    pairs = toy_pairs(6)
    pairs["model_a"] = ["good", "good", "mid", "good", "mid", "bad"]
    pairs["model_b"] = ["mid", "bad", "bad", "bad", "good", "good"]
    prefers_a = np.array([0.8, 0.9, 0.7, 0.85, 0.2, 0.1])
    probs = np.column_stack([prefers_a * 0.9, (1 - prefers_a) * 0.9, np.full(6, 0.1)])
    _, fitted = fit_item_scores(pairs, Annotations(list(pairs["id"]), probs, probs))
    table = fitted.table().set_index("item")["score"]
    assert table["good"] > table["mid"] > table["bad"]


def test_unknown_template_placeholder_is_one_line(tmp_path, tiny_lm, capsys):
    code = main(["judge", "annotate", f"data.dir={tmp_path}", f"model.name_or_path={tiny_lm}",
                 "annotate.template=Compare {response_a} with {response_c}"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:")


def test_plain_decoder_without_chat_template(tmp_path):
    """A tokenizer without a chat template gets the plain text prompt ending in 'Answer:'."""
    tok = tiny_tokenizer("decoder", chat_template=False)
    renderer = JudgeRenderer(tok, RENDER, JudgePrompt.from_config(AnnotateConfig(), toy_pairs(2)))
    assert not renderer.uses_chat_template and renderer.final_text.endswith("Answer:")
    ids, _ = renderer.render_pairs(toy_pairs(2), swapped=False)
    assert ids[0][0] == tok.bos_token_id
