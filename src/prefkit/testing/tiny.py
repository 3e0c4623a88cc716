"""Tiny random transformer checkpoints, made offline, for tests, demos and benchmarks.

``write_tiny_checkpoint(path, family)`` writes a folder that loads exactly like a real
pretrained checkpoint (``config.json`` + weights + tokenizer files): an encoder
backbone (``BertModel``, ``DebertaV2Model``) or a causal LM (``LlamaForCausalLM``,
...), so loading it as a 3-way sequence classifier initialises a fresh head, as with
real weights. The tokenizer is a byte-level BPE trained on a few sentences: any text
encodes, to many short tokens.
"""

from __future__ import annotations

from pathlib import Path

ENCODER_FAMILIES = ("bert", "deberta-v2", "modernbert")
DECODER_FAMILIES = ("llama", "gemma", "qwen2", "mistral")
FAMILIES = ENCODER_FAMILIES + DECODER_FAMILIES

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Which response is better? Response A, response B, or is it a tie?",
    "def add(x, y):\n    return x + y  # a small function",
    "Here is a list:\n1. first item\n2. second item\n3. third item",
    "I am sorry, but I cannot help with that request.",
    "The capital of France is Paris. The capital of Italy is Rome.",
    "prompt response turn assistant user system model answer question",
    "<prompt>:\n<response_a>:\n<response_b>:\n[turn 1] [turn 2]",
]

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def tiny_tokenizer(kind: str = "encoder", vocab_size: int = 400, chat_template: bool = True):
    """A byte-level BPE tokenizer. ``encoder``: [CLS]/[SEP]/[PAD] (BERT-like);
    ``decoder``: <s>/</s>/<unk>, BOS added in front, no pad token (Llama-like)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if kind == "encoder":
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    elif kind == "decoder":
        specials = ["<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>"]
    else:
        raise ValueError(f"kind must be encoder or decoder, not {kind!r}")
    tok = Tokenizer(models.BPE(unk_token=specials[1] if kind == "encoder" else specials[0]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer)
    ids = {s: tok.token_to_id(s) for s in specials}
    if kind == "encoder":
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
        )
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]"
        )
    else:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", ids["<s>"])])
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
        fast.add_special_tokens({"additional_special_tokens": ["<|user|>", "<|assistant|>"]})
        if chat_template:
            fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "right"
    return fast


def tiny_config(family: str, vocab_size: int, hidden: int = 32, layers: int = 2, **extra):
    """A small transformers config of ``family`` (random weights when instantiated)."""
    import transformers as tf

    common = dict(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, intermediate_size=2 * hidden, max_position_embeddings=1024)
    common.update(extra)
    if family == "bert":
        cfg = tf.BertConfig(num_attention_heads=2, type_vocab_size=2, **common)
    elif family == "deberta-v2":
        cfg = tf.DebertaV2Config(
            num_attention_heads=2,
            relative_attention=True,
            position_buckets=32,
            max_relative_positions=-1,
            pos_att_type=["p2c", "c2p"],
            norm_rel_ebd="layer_norm",
            share_att_key=True,
            position_biased_input=False,
            type_vocab_size=0,
            pooler_hidden_size=hidden,
            **common,
        )
    elif family == "modernbert":
        # mean pooling, as answerdotai/ModernBERT-base's config.json has (its CLS pooling
        # learns the toy task too slowly for a test at this size)
        cfg = tf.ModernBertConfig(
            num_attention_heads=2, global_attn_every_n_layers=1, local_attention=64, classifier_pooling="mean", **common
        )
    elif family == "llama":
        cfg = tf.LlamaConfig(num_attention_heads=2, num_key_value_heads=1, **common)
    elif family == "gemma":
        cfg = tf.GemmaConfig(num_attention_heads=2, num_key_value_heads=1, head_dim=hidden // 2, **common)
    elif family == "qwen2":
        cfg = tf.Qwen2Config(num_attention_heads=2, num_key_value_heads=1, **common)
    elif family == "mistral":
        cfg = tf.MistralConfig(num_attention_heads=2, num_key_value_heads=1, sliding_window=None, **common)
    else:
        raise ValueError(f"unknown family {family!r}; one of {FAMILIES}")
    return cfg


def write_tiny_checkpoint(path: str | Path, family: str = "bert", seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    """Write a random tiny ``family`` checkpoint + tokenizer to ``path`` (a folder)."""
    import torch
    import transformers as tf

    path = Path(path)
    kind = "encoder" if family in ENCODER_FAMILIES else "decoder"
    tok = tiny_tokenizer(kind)
    extra = {}
    if kind == "encoder":
        extra.update(
            pad_token_id=tok.pad_token_id,
            cls_token_id=tok.cls_token_id,
            sep_token_id=tok.sep_token_id,
            bos_token_id=tok.cls_token_id,
            eos_token_id=tok.sep_token_id,
        )
    else:
        extra.update(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=None)
    # room beyond the tokenizer, as real checkpoints have (and for tokens a tokenizer
    # class adds on loading, e.g. Qwen2's <|endoftext|> pad)
    vocab = -(-(len(tok) + 8) // 16) * 16
    cfg = tiny_config(family, vocab_size=vocab, hidden=hidden, layers=layers, **extra)
    torch.manual_seed(seed)
    model = tf.AutoModel.from_config(cfg) if kind == "encoder" else tf.AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def toy_pairs(n: int = 64, seed: int = 0, multi_turn_every: int = 5):
    """A learnable toy pair table: the longer response wins (ties when equal length);
    every ``multi_turn_every``-th pair has two turns. Labels are one-hot."""
    import numpy as np

    from prefkit.schema import make_pairs

    rng = np.random.default_rng(seed)
    words = "the quick brown fox jumps over lazy dog answer question list item code function capital".split()

    def text(k: int) -> str:
        return " ".join(rng.choice(words, size=k))

    prompts, ra, rb, labels = [], [], [], []
    for i in range(n):
        turns = 2 if multi_turn_every and i % multi_turn_every == multi_turn_every - 1 else 1
        la, lb = int(rng.integers(1, 40)), int(rng.integers(1, 40))
        if i % 11 == 0:
            lb = la
        prompts.append([text(int(rng.integers(3, 12))) for _ in range(turns)])
        ra.append([text(la) for _ in range(turns)])
        rb.append([text(lb) for _ in range(turns)])
        labels.append([1.0, 0.0, 0.0] if la > lb else [0.0, 1.0, 0.0] if lb > la else [0.0, 0.0, 1.0])
    return make_pairs([f"p{i}" for i in range(n)], prompts, ra, rb, np.array(labels), groups=[f"g{i}" for i in range(n)])


def swap_pairs(pairs):
    """A and B exchanged, label exchanged (ties stay ties), ids kept: the oracle of the
    swap-symmetry tests of features, rendering and embeddings."""
    out = pairs.copy()
    out["response_a"], out["response_b"] = pairs["response_b"], pairs["response_a"]
    out["p_a"], out["p_b"] = pairs["p_b"], pairs["p_a"]
    for a, b in (("model_a", "model_b"), ("item_a", "item_b")):
        if a in pairs.columns and b in pairs.columns:
            out[a], out[b] = pairs[b], pairs[a]
    return out
