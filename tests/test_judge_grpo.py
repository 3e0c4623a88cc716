"""Generative judge trained with GRPO: the verdict parser, the rewards, prompts and data,
two GRPO steps through TRL on a tiny random causal LM, and the sampled-verdict evaluation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from prefkit.cli import main
from prefkit.config import load_config
from prefkit.errors import ConfigError
from prefkit.judge.parse import parse_judgement, parse_verdict
from prefkit.judge.rewards import (
    consistency_reward,
    correct_reward,
    format_reward,
    make_strength_reward,
    reward_functions,
    strength_weight,
)

GOOD = "<analysis>B misses the second step.</analysis><preference>A</preference>"


# -- parser --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, verdict",
    [
        (GOOD, "A"),
        ("<ANALYSIS>x</ANALYSIS>\n<Preference> b </Preference>", "B"),
        ("<analysis>x</analysis><preference>a</preference>", "A"),
        ("<preference>Response A</preference>", "A"),
        ("<preference>response b is better</preference>", "B"),
        ("<preference>[[B]]</preference>", "B"),
        ("<preference>Tie</preference>", "tie"),
        ("<preference>both are equally good</preference>", "tie"),
        ("<preference>A or B</preference>", "unknown"),  # the template's placeholder copied
        ("<preference>A|B|tie</preference>", "unknown"),
        ("Sure! " + GOOD + " Hope this helps.", "A"),  # extra text around
        ("<preference>A</preference> on second thought <preference>B</preference>", "B"),  # the last tag wins
        ("<analysis>long reasoning</analysis><preference>B", "B"),  # cut off before the closing tag
        ("A is more helpful at first.\nFinal verdict: B", "B"),  # no tags: a verdict line
        ("Preference: tie", "tie"),
        ("The better response is Response A.", "A"),
        ("[[B]]", "B"),
        ("Response B", "B"),
        ("This is a good answer with a clear structure overall.", "unknown"),  # "a" is an article
        ("I think both have merit and I cannot decide between them.", "unknown"),
        ("", "unknown"),
        (None, "unknown"),
    ],
)
def test_parser_reads_malformed_outputs(text, verdict):
    assert parse_verdict(text) == verdict


@pytest.mark.parametrize(
    "text, well_formed",
    [
        (GOOD, True),
        ("<analysis>x</analysis> <preference> tie </preference>", True),
        ("<preference>A</preference><analysis>x</analysis>", False),  # out of order
        ("<analysis>x</analysis><preference>Response A</preference>", False),  # more than the verdict
        ("<preference>A</preference>", False),  # no analysis
        ("Final verdict: A", False),
    ],
)
def test_format_is_exact_template_only(text, well_formed):
    assert parse_judgement(text).well_formed is well_formed


# -- rewards -------------------------------------------------------------------------------
def _chat(text):  # a completion as TRL passes it for conversational prompts
    return [{"role": "assistant", "content": text}]


def test_correct_reward_on_hand_made_cases():
    completions = [GOOD, "<preference>B</preference>", "gibberish", _chat("Final verdict: tie")]
    assert correct_reward(None, completions, label=["A", "A", "A", "tie"]) == [1.0, 0.0, 0.0, 1.0]


def test_strength_reward_weights_as_rm_gallery():
    reward = make_strength_reward()
    completions = [GOOD] * 5 + ["<preference>B</preference>"]
    strengths = [2, 1, 0, -3, float("nan"), 2]  # strong, weak, none, beyond the table (magnitude), unknown; wrong
    assert reward(None, completions, label=["A"] * 6, strength=strengths) == pytest.approx([1.0, 0.7, 0.3, 1.0, 1.0, 0.0])
    assert strength_weight(None) == 1.0
    custom = make_strength_reward({1: 0.5, 3: 2.0})
    assert custom(None, [GOOD, GOOD, GOOD], label=["A"] * 3, strength=[0, 2, 3]) == [0.5, 0.5, 2.0]


def test_format_reward_on_hand_made_cases():
    completions = [GOOD, "<preference>A</preference>", _chat(GOOD), "A"]
    assert format_reward(None, completions) == [1.0, 0.0, 1.0, 0.0]


def test_consistency_reward_needs_both_orders_right():
    # pair p: label A as given, so B when swapped. Two completions per order.
    completions = ["<preference>A</preference>", "<preference>A</preference>",  # given: both right
                   "<preference>B</preference>", "<preference>A</preference>",  # swapped: one right
                   "<preference>B</preference>", "<preference>A</preference>"]  # pair q, given order only
    labels = ["A", "A", "B", "B", "B", "B"]
    keys = ["p", "p", "p", "p", "q", "q"]
    orders = [0, 0, 1, 1, 0, 0]
    got = consistency_reward(None, completions, label=labels, pair_key=keys, order=orders)
    # given-order completions (right) times the swapped order's share right (1/2); a right
    # swapped one times 1, a wrong one 0; q has no swapped twin in the batch: no value
    assert got == [0.5, 0.5, 1.0, 0.0, None, None]


def test_rewards_by_name():
    names = ["correct", "strength", "format", "consistency"]
    assert len(reward_functions(names)) == 4
    with pytest.raises(ValueError, match="unknown reward 'nope'"):
        reward_functions(["nope"])
    with pytest.raises(ConfigError, match="unknown reward"):
        load_config(None, ["grpo.rewards={typo: 1}"])


# -- prompts and data ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory):
    from prefkit.testing.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("judge") / "tiny_llama", "llama")


def _pairs(n=8, seed=0):
    from prefkit.testing.tiny import toy_pairs

    return toy_pairs(n, seed=seed)


def test_prompts_fit_the_budget_and_swap_exactly(tiny_llm):
    from transformers import AutoTokenizer

    from prefkit.judge.grpo import JudgePrompts

    tok = AutoTokenizer.from_pretrained(tiny_llm)
    pairs = _pairs(4)
    pairs.at[0, "response_a"] = ["answer " * 3000]  # far longer than the budget
    prompts = JudgePrompts(tok, max_tokens=600)
    given, swapped = prompts.for_pairs(pairs)
    assert all(prompts.count_tokens(m) <= 600 for m in given + swapped)
    assert " ... " in given[0][0]["content"]  # cut head-tail, marked
    a_part = given[1][0]["content"].split("[Response A]\n")[1].split("\n\n[Response B]")[0]
    assert swapped[1][0]["content"].split("[Response B]\n")[1].startswith(a_part)


def test_records_hold_both_orders_side_by_side(tiny_llm):
    from transformers import AutoTokenizer

    from prefkit.judge.grpo import JudgePrompts, judge_records

    pairs = _pairs(6)
    pairs["preference_strength"] = [2, 1, 0, 2, 1, np.nan]
    rows = judge_records(pairs, JudgePrompts(AutoTokenizer.from_pretrained(tiny_llm), 450))
    assert len(rows) == 12
    swap = {"A": "B", "B": "A", "tie": "tie"}
    for given, swapped in zip(rows[::2], rows[1::2]):
        assert (given["order"], swapped["order"]) == (0, 1) and given["pair_key"] == swapped["pair_key"]
        assert swapped["label"] == swap[given["label"]]
    assert [r["strength"] for r in rows[::2]] == [2.0, 1.0, 0.0, 2.0, 1.0, None]


def test_batch_shape_is_checked_before_work():
    from prefkit.judge.grpo import check_batch_shape

    with pytest.raises(ConfigError, match="multiple of 2 \\* grpo.num_generations"):
        check_batch_shape(load_config(None, ["train.batch_size=12", "grpo.num_generations=4"]))
    check_batch_shape(load_config(None, ["train.batch_size=12", "grpo.num_generations=4", "grpo.rewards={correct: 1}"]))
    with pytest.raises(ConfigError, match="both_orders"):
        check_batch_shape(load_config(None, ["grpo.both_orders=false"]))


# -- evaluation metrics --------------------------------------------------------------------
def test_metrics_from_hand_made_verdicts():
    import pandas as pd

    from prefkit.judge.grpo import judge_metrics, verdict_counts

    pairs = pd.DataFrame({"id": ["x", "y"], "p_a": [1.0, 0.0], "p_b": [0.0, 0.0], "p_tie": [0.0, 1.0]})
    A, B, T = "<preference>A</preference>", "<preference>B</preference>", "<preference>tie</preference>"
    # x (label A): given A, A; swapped B, B (= A, A mapped back): consistent and right.
    # y (label tie): given A, junk; swapped A (= B mapped back), tie: flips half the time.
    counts = verdict_counts([[A, A], [A, "junk"]], [[B, B], [A, T]])
    m = judge_metrics(pairs, counts, smoothing=0.5)
    assert m["accuracy"] == pytest.approx(5 / 8)  # x: 4 right; y: 1 right of 4 (junk counts as wrong)
    assert m["unparseable"] == pytest.approx(1 / 8)
    assert m["flip_rate"] == pytest.approx((0.0 + 1.0) / 2)  # y: given always A, swapped never A
    p_x = np.array([4.5, 0.5, 0.5]) / 5.5
    p_y = np.array([1.5, 1.5, 1.5]) / 4.5
    assert m["log_loss"] == pytest.approx(-(math.log(p_x[0]) + math.log(p_y[2])) / 2)
    assert m["by_label"]["tie"]["accuracy"] == pytest.approx(1 / 4)
    # x: A is the most frequent (right); y: A, B and tie once each, a three-way tie: 1/3
    assert m["majority_accuracy"] == pytest.approx((1 + 1 / 3) / 2)


# -- GRPO through TRL ----------------------------------------------------------------------
def _grpo_overrides(ckpt, out_dir):
    """Two GRPO steps on a tiny random Llama that may only say "A" or "B" (one token), so the
    rewards vary within each group and the step has a gradient."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ckpt)
    keep = {tok.convert_tokens_to_ids("A"), tok.convert_tokens_to_ids("B")}
    vocab = json.loads((ckpt / "config.json").read_text())["vocab_size"]
    suppress = [i for i in range(vocab) if i not in keep]
    return [
        f"model.name_or_path={ckpt}", "model.lora.enabled=true", "model.lora.r=4", "train.device=cpu",
        "train.batch_size=8", "train.max_steps=2", "train.lr=0.05", "train.warmup_ratio=0", "train.log_every_steps=1",
        "grpo.num_generations=4", "grpo.max_prompt_length=450", "grpo.max_completion_length=1",
        f"grpo.generation_kwargs={{suppress_tokens: {suppress}}}", "grpo.eval_samples=2",
        f"output_dir={out_dir}", "name=judge", "data.format=parquet", f"data.train={out_dir / 'pairs.parquet'}",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def trained_judge(tiny_llm, tmp_path_factory):
    pytest.importorskip("trl", reason="GRPO training needs TRL (pip install 'prefkit[judge]')")
    out_dir = tmp_path_factory.mktemp("grpo_run")
    _pairs(8).to_parquet(out_dir / "pairs.parquet")
    overrides = _grpo_overrides(tiny_llm, out_dir)
    assert main(["judge", "train", *overrides]) == 0
    return out_dir / "judge", overrides


def test_two_grpo_steps_change_the_lora_weights(trained_judge):
    from safetensors.torch import load_file

    run_dir, _ = trained_judge
    weights = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    lora_b = {k: v for k, v in weights.items() if "lora_B" in k}
    assert lora_b, "the adapter holds LoRA weights"
    # LoRA's B matrices start at zero: any non-zero entry was written by the GRPO steps
    assert any(float(v.abs().max()) > 0 for v in lora_b.values())
    meta = json.loads((run_dir / "judge.json").read_text())
    assert meta["steps"] == 2 and meta["adapter"] is True
    history = json.loads((run_dir / "log_history.json").read_text())
    assert any("rewards/consistency_reward/mean" in h for h in history)
    assert (run_dir / "config.yaml").is_file() and not (run_dir / "trainer").exists()


def test_evaluate_a_trained_judge(trained_judge):
    import pandas as pd

    run_dir, overrides = trained_judge
    out = run_dir.parent / "eval"
    data = run_dir.parent / "pairs.parquet"
    code = main(["judge", "evaluate", str(data), "--format", "parquet", "--run", str(run_dir), "--out", str(out), "grpo.eval_samples=3"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["pairs"] == 8 and metrics["samples_per_order"] == 3
    assert metrics["unparseable"] == 0.0  # the tiny judge only says A or B
    assert 0.0 <= metrics["flip_rate"] <= 1.0 and math.isfinite(metrics["log_loss"])
    pred = pd.read_csv(out / "predictions.csv")
    assert np.allclose(pred[["p_a", "p_b", "p_tie"]].sum(axis=1), 1.0)
    assert (pred[["n_a", "n_b", "n_tie", "n_unknown"]].sum(axis=1) == 6).all()  # 3 samples x 2 orders


def test_paired_sampler_keeps_both_orders_in_one_generation_batch():
    pytest.importorskip("trl", reason="the sampler extends TRL's")
    from prefkit.judge.grpo import _paired_sampler_class

    sampler = _paired_sampler_class()(list(range(12)), mini_repeat_count=3, batch_size=4, repeat_count=1, shuffle=True, seed=0)
    indexes = list(sampler)
    assert len(indexes) == 12 * 3
    for start in range(0, len(indexes), 4 * 3):  # one generation batch: 4 prompts x 3 completions
        rows = set(indexes[start : start + 12])
        assert {r // 2 for r in rows} == {r // 2 for r in rows if r % 2 == 0} == {r // 2 for r in rows if r % 2 == 1}


def test_train_help_answers(capsys):
    assert main(["judge", "train", "--help"]) == 0
    assert "GRPO" in capsys.readouterr().out


def test_rm_gallery_records_carry_label_and_strength(tiny_llm, tmp_path):
    import pandas as pd
    from transformers import AutoTokenizer

    from prefkit.data.formats import read_pairs
    from prefkit.judge.grpo import JudgePrompts, judge_records

    def record(i, preferred, strength):
        answers = [{"answer": {"role": "assistant", "content": f"answer {i} {side}"}} for side in "xy"]
        return {"unique_id": f"r{i}", "input": [{"role": "user", "content": f"question {i}"}], "output": answers,
                "metadata": {"preferred": preferred, "preference_strength": strength}}  # fmt: skip

    path = tmp_path / "rm.parquet"
    pd.DataFrame([record(0, "A", 2), record(1, "B", -1), record(2, "tie", 0)]).to_parquet(path)
    rows = judge_records(read_pairs(path, "rm_gallery"), JudgePrompts(AutoTokenizer.from_pretrained(tiny_llm), 450))
    given = rows[::2]
    assert [r["label"] for r in given] == ["A", "B", "tie"]
    assert [r["strength"] for r in given] == [2.0, -1.0, 0.0]  # raw; the reward reads the magnitude
    assert "answer 0 x" in given[0]["prompt"][0]["content"].split("[Response A]")[1].split("[Response B]")[0]
