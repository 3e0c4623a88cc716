"""Frozen-encoder features, on a tiny random BERT with a word-level tokenizer built offline."""

import json

import numpy as np
import pandas as pd
import pytest

from prefkit.errors import InputError
from prefkit.features import embeddings
from prefkit.features.embeddings import (
    embed_texts,
    features_from_embeddings,
    fit_diff_projection,
    pair_embedding_features,
    write_features,
)
from prefkit.schema import make_pairs
from prefkit.testing.tiny import swap_pairs

WORDS = "the a cat dog sat on mat ran fast slow red blue green is was and or not very big small house tree why how what".split()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {tok: i for i, tok in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]"
    )
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64, pad_token_id=0,
    )  # fmt: skip
    BertModel(config).save_pretrained(folder)
    return folder


def sentence(rng, n):
    return " ".join(rng.choice(WORDS, n))


@pytest.fixture
def pairs():
    rng = np.random.default_rng(0)
    n = 12
    prompts = [[sentence(rng, 5)] for _ in range(n)]
    prompts[3] = ["why is the cat red", "and the dog"]  # multi-turn
    a = [[sentence(rng, int(rng.integers(1, 30)))] for _ in range(n)]
    b = [[sentence(rng, int(rng.integers(1, 30)))] for _ in range(n)]
    a[3], b[3] = ["it is", "it was"], ["not", ""]
    b[5] = a[5]  # identical responses
    labels = np.eye(3)[rng.integers(0, 3, n)]
    return make_pairs([f"p{i}" for i in range(n)], prompts, a, b, labels=labels)


def test_tokenize_truncates_with_special_tokens_kept(tiny_model):
    encoder = embeddings._load_encoder(tiny_model)
    assert (encoder.prefix, encoder.suffix) == ([2], [3])  # [CLS] ... [SEP], found by probing
    long_text = " ".join(["cat"] * 10 + ["dog"] * 10)
    (ids,) = embeddings.tokenize(encoder, [long_text], max_length=8)
    cat, dog = 5 + WORDS.index("cat"), 5 + WORDS.index("dog")
    assert ids == [2, cat, cat, cat, dog, dog, dog, 3]


def test_embeddings_shape_and_unit_norm(tiny_model):
    texts = ["the cat sat", "a dog ran fast on the mat", "", "the cat sat"]
    emb = embed_texts(texts, tiny_model, max_length=16, batch_size=2, progress=False)
    assert emb.shape == (4, 16) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(emb[0], emb[3])


def test_mean_pooling_ignores_padding(tiny_model):
    short = "the cat sat"
    alone = embed_texts([short], tiny_model, max_length=32, batch_size=1, progress=False)
    long_ = " ".join(WORDS)
    batched = embed_texts([long_, short], tiny_model, max_length=32, batch_size=2, progress=False)
    np.testing.assert_allclose(batched[1], alone[0], atol=1e-5)


def test_embeddings_are_mean_pooled_hidden_states(tiny_model):
    import torch
    from transformers import AutoModel, AutoTokenizer

    text = "a red house and a tree"
    tok, model = AutoTokenizer.from_pretrained(tiny_model), AutoModel.from_pretrained(tiny_model).eval()
    with torch.no_grad():
        hidden = model(**tok(text, return_tensors="pt")).last_hidden_state[0]
    expected = hidden.mean(0) / hidden.mean(0).norm()
    got = embed_texts([text], tiny_model, max_length=32, progress=False)[0]
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)


def test_cache_hit_does_not_run_the_model(tiny_model, tmp_path, monkeypatch):
    texts = ["the cat sat", "a dog ran", "the cat sat", "red tree"]
    stats = {}
    first = embed_texts(texts, tiny_model, max_length=16, cache_dir=tmp_path, progress=False, stats=stats)
    assert stats["unique"] == 3 and stats["computed"] == 3

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded on a cache hit")

    monkeypatch.setattr(embeddings, "_load_encoder", no_model)
    again = embed_texts(texts, tiny_model, max_length=16, cache_dir=tmp_path, progress=False, stats=stats)
    np.testing.assert_array_equal(again, first)
    assert stats["computed"] == 0 and stats["cached"] == 3
    # another max_length is another key: it must compute (and so reach the model)
    with pytest.raises(AssertionError, match="cache hit"):
        embed_texts(texts, tiny_model, max_length=8, cache_dir=tmp_path, progress=False)


def test_cache_computes_only_new_texts(tiny_model, tmp_path, monkeypatch):
    embed_texts(["the cat sat", "a dog ran"], tiny_model, max_length=16, cache_dir=tmp_path, progress=False)
    seen = []
    real_tokenize = embeddings.tokenize
    monkeypatch.setattr(embeddings, "tokenize", lambda enc, texts, *a, **k: seen.extend(texts) or real_tokenize(enc, texts, *a, **k))
    stats = {}
    out = embed_texts(["a dog ran", "blue tree", "the cat sat"], tiny_model, max_length=16, cache_dir=tmp_path, progress=False, stats=stats)
    assert seen == ["blue tree"] and stats["cached"] == 2
    fresh = embed_texts(["a dog ran", "blue tree", "the cat sat"], tiny_model, max_length=16, progress=False)
    np.testing.assert_allclose(out, fresh, atol=1e-6)


def test_pair_features_columns_and_values(tiny_model, pairs):
    feats = pair_embedding_features(pairs, tiny_model, max_length=32, progress=False)
    assert list(feats["id"]) == list(pairs["id"])
    assert list(feats.columns[:5]) == ["id", "a_emb_cos_prompt", "b_emb_cos_prompt", "diff_emb_cos_prompt", "emb_cos_ab"]
    assert [c for c in feats.columns if c.startswith("diff_emb_") and c != "diff_emb_cos_prompt"] == [f"diff_emb_{i}" for i in range(16)]
    assert all(feats[c].dtype == np.float32 for c in feats.columns[1:])
    np.testing.assert_allclose(feats["diff_emb_cos_prompt"], feats["a_emb_cos_prompt"] - feats["b_emb_cos_prompt"], atol=1e-6)
    row = feats.iloc[5]  # identical responses
    assert row["emb_cos_ab"] == pytest.approx(1.0, abs=1e-5) and abs(row["diff_emb_0"]) < 1e-6


def test_swapped_pair_negates_differences_and_swaps_cosines(tiny_model, pairs):
    for svd_dim in (0, 4):
        fwd = pair_embedding_features(pairs, tiny_model, max_length=32, progress=False, svd_dim=svd_dim)
        # the projection fitted on the original pairs, applied to the swapped ones
        swp = pair_embedding_features(swap_pairs(pairs), tiny_model, max_length=32, progress=False, projection=fwd.attrs["projection"])
        np.testing.assert_allclose(swp["a_emb_cos_prompt"], fwd["b_emb_cos_prompt"], atol=1e-6)
        np.testing.assert_allclose(swp["b_emb_cos_prompt"], fwd["a_emb_cos_prompt"], atol=1e-6)
        np.testing.assert_allclose(swp["emb_cos_ab"], fwd["emb_cos_ab"], atol=1e-6)
        for col in fwd.columns:
            if col.startswith("diff_"):
                np.testing.assert_allclose(swp[col], -fwd[col], atol=1e-6)
        # the swap convention shared with the hand-crafted features
        from prefkit.features.pair_features import swap_features

        np.testing.assert_allclose(swap_features(fwd.set_index("id")).to_numpy(), swp.set_index("id").to_numpy(), atol=1e-6)


def test_projection_fit_is_the_same_on_swapped_training_pairs():
    rng = np.random.default_rng(1)
    diff = rng.normal(size=(50, 10)) * np.linspace(3, 0.1, 10)
    p, q = fit_diff_projection(diff, 4), fit_diff_projection(-diff, 4)
    np.testing.assert_allclose(p.components, q.components, atol=1e-10)
    np.testing.assert_allclose(p.components @ p.components.T, np.eye(4), atol=1e-10)
    assert np.all(np.diff(p.explained) <= 1e-12) and 0 < p.explained.sum() <= 1


def test_projection_is_fitted_on_training_pairs_only(tiny_model, pairs):
    train, test = pairs.iloc[:8].reset_index(drop=True), pairs.iloc[8:].reset_index(drop=True)
    feats = pair_embedding_features(test, tiny_model, max_length=32, progress=False, svd_dim=3, fit_pairs=train)
    _, ea, eb = embeddings.pair_embeddings(train, tiny_model, max_length=32, progress=False)
    expected = fit_diff_projection(ea - eb, 3)
    np.testing.assert_allclose(feats.attrs["projection"].components, expected.components, atol=1e-6)
    assert list(feats["id"]) == list(test["id"])
    assert [c for c in feats.columns if "svd" in c] == ["diff_emb_svd_0", "diff_emb_svd_1", "diff_emb_svd_2"]


def test_features_from_embeddings_by_hand():
    ep = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    ea = np.array([[1.0, 0.0], [0.6, 0.8]], dtype=np.float32)
    eb = np.array([[0.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    f = features_from_embeddings(["x", "y"], ep, ea, eb)
    np.testing.assert_allclose(f["a_emb_cos_prompt"], [1.0, 0.8])
    np.testing.assert_allclose(f["b_emb_cos_prompt"], [0.0, 1.0])
    np.testing.assert_allclose(f["emb_cos_ab"], [0.0, 0.8])
    np.testing.assert_allclose(f[["diff_emb_0", "diff_emb_1"]].to_numpy(), [[1.0, -1.0], [0.6, -0.2]], atol=1e-6)


def test_write_features_round_trip(tiny_model, pairs, tmp_path):
    feats = pair_embedding_features(pairs, tiny_model, max_length=32, progress=False, svd_dim=2)
    path = write_features(feats, tmp_path / "f.parquet", meta={"svd_dim": 2})
    back = pd.read_parquet(path)
    pd.testing.assert_frame_equal(back, feats.reset_index(drop=True), check_like=False)
    assert pd.api.types.is_string_dtype(back["id"]) and json.loads((tmp_path / "f.parquet.json").read_text())["svd_dim"] == 2


def test_bad_settings_are_input_errors(tiny_model, tmp_path):
    with pytest.raises(InputError, match="exceeds the model's 64 positions"):
        embed_texts(["the cat"], tiny_model, max_length=128, progress=False)
    with pytest.raises(InputError, match="model folder not found"):
        embed_texts(["the cat"], tmp_path / "missing", cache_dir=tmp_path, progress=False)


def _kaggle_csv(path, pairs, labelled=True):
    df = pd.DataFrame(
        {
            "id": pairs["id"],
            "prompt": [json.dumps(t) for t in pairs["prompt"]],
            "response_a": [json.dumps(t) for t in pairs["response_a"]],
            "response_b": [json.dumps(t) for t in pairs["response_b"]],
        }
    )
    if labelled:
        df["winner_model_a"], df["winner_model_b"], df["winner_tie"] = (pairs[c].astype(int) for c in ("p_a", "p_b", "p_tie"))
    df.to_csv(path, index=False)
    return path


def test_cli_embed_train_and_test(tiny_model, pairs, tmp_path, capsys):
    from prefkit.cli import main
    from prefkit.commands import models  # noqa: F401  (registers the commands)

    train = _kaggle_csv(tmp_path / "train.csv", pairs.iloc[:8])
    test = _kaggle_csv(tmp_path / "test.csv", pairs.iloc[8:], labelled=False)
    common = ["--model", str(tiny_model), "--max-length", "32", "--cache-dir", str(tmp_path / "cache"), "--svd-dim", "3"]
    out = tmp_path / "both.parquet"
    assert main(["embed", str(train), str(test), "--out", str(out), *common]) == 0
    both = pd.read_parquet(out)
    assert list(both["id"]) == list(pairs["id"]) and both.shape[1] == 1 + 4 + 3

    # test alone needs the training file for the fit; then it matches the joint run exactly
    assert main(["embed", str(test), "--out", str(tmp_path / "t.parquet"), *common]) == 2
    assert "--fit-on" in capsys.readouterr().err
    assert main(["embed", str(test), "--fit-on", str(train), "--out", str(tmp_path / "t.parquet"), *common]) == 0
    alone = pd.read_parquet(tmp_path / "t.parquet")
    pd.testing.assert_frame_equal(alone, both.iloc[8:].reset_index(drop=True), atol=1e-6)
    meta = json.loads((tmp_path / "t.parquet.json").read_text())
    assert meta["fit_on"] == str(train) and meta["stats"]["computed"] == 0  # all from the cache
