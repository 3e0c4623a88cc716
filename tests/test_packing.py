"""Packed (padding-free) classification forward: batches, collation, and equality with the
padded forward on a tiny random Llama with LoRA (CPU; the CUDA kernel test is marked gpu)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from prefkit.models import packing
from prefkit.text.batching import pack_batches

pytest.importorskip("transformers")
peft = pytest.importorskip("peft")


def tiny_llama(layers: int = 2, lora: bool = True, seed: int = 0):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    torch.manual_seed(seed)
    cfg = AutoConfig.for_model(
        "llama",
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=500,
        max_position_embeddings=512,
        rope_theta=500000.0,
        tie_word_embeddings=False,
        pad_token_id=499,
        num_labels=3,
    )
    model = AutoModelForSequenceClassification.from_config(cfg, dtype=torch.float32, attn_implementation="sdpa")
    if lora:
        model = peft.get_peft_model(
            model,
            peft.LoraConfig(task_type=peft.TaskType.SEQ_CLS, r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
        )
        # LoRA B starts at zero; make the adapters matter so that their gradients are compared for real
        for name, p in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.05)
    return model


def random_seqs(lengths, seed: int = 1, high: int = 499):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, high, (n,), generator=gen) for n in lengths]


def padded(seqs, pad_id: int = 499):
    ids = torch.full((len(seqs), max(len(s) for s in seqs)), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return ids, mask


LENGTHS = [7, 33, 1, 64, 12, 2]


# -- batches ---------------------------------------------------------------------------------
@pytest.mark.parametrize("shuffle", [False, True])
def test_pack_batches_cover_rows_once_within_budget(shuffle):
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 300, size=500)
    lengths[3] = 900  # longer than the budget: a pack of its own
    packs = pack_batches(lengths, max_tokens=512, shuffle=shuffle, seed=5)
    flat = sorted(i for p in packs for i in p)
    assert flat == list(range(len(lengths)))
    for p in packs:
        assert lengths[p].sum() <= 512 or len(p) == 1
    assert [3] in packs
    # first-fit decreasing leaves little room unused
    fill = lengths.sum() / (512 * len(packs))
    assert fill > 0.9


def test_pack_batches_seeded_and_max_pairs():
    lengths = np.arange(1, 200)
    a = pack_batches(lengths, 256, shuffle=True, seed=3)
    b = pack_batches(lengths, 256, shuffle=True, seed=3)
    c = pack_batches(lengths, 256, shuffle=True, seed=4)
    assert a == b and a != c
    capped = pack_batches(lengths, 10_000, max_pairs=7)
    assert max(len(p) for p in capped) <= 7
    assert pack_batches([], 100) == []


def test_collate_packed_layout():
    seqs = [[5, 6, 7], [8], [9, 10]]
    b = packing.collate_packed(seqs, pad_id=0, index=[10, 11, 12], targets=np.eye(3))
    assert b.input_ids.tolist() == [[5, 6, 7, 8, 9, 10]]
    assert b.position_ids.tolist() == [[0, 1, 2, 0, 0, 1]]
    assert b.cu_seqlens.dtype == torch.int32 and b.cu_seqlens.tolist() == [0, 3, 4, 6]
    assert b.last_index.tolist() == [2, 3, 5]
    assert (b.n_pairs, b.n_tokens, b.max_seqlen) == (3, 6, 3)
    assert b.index.tolist() == [10, 11, 12] and b.targets.shape == (3, 3)
    # a fixed pack length adds one padding segment that attends only to itself
    p = packing.collate_packed(seqs, pad_id=0, pad_to=10)
    assert p.input_ids.shape == (1, 10) and p.n_tokens == 6
    assert p.cu_seqlens.tolist() == [0, 3, 4, 6, 10]
    assert p.position_ids[0, 6:].tolist() == [0, 1, 2, 3]
    assert p.last_index.tolist() == [2, 3, 5]
    assert packing.collate_packed(seqs, pad_to_multiple_of=4).input_ids.shape == (1, 8)


def test_cu_seqlens_from_position_ids():
    cu, longest = packing.cu_seqlens_from_position_ids(torch.tensor([[0, 1, 2, 0, 0, 1]]))
    assert cu.tolist() == [0, 3, 4, 6] and longest == 3


# -- forward ---------------------------------------------------------------------------------
def test_segment_sdpa_matches_dense_per_segment():
    torch.manual_seed(0)
    q, k, v = torch.randn(10, 4, 8), torch.randn(10, 2, 8), torch.randn(10, 2, 8)
    cu = torch.tensor([0, 4, 10], dtype=torch.int32)
    out = packing.segment_sdpa(q, k, v, cu, causal=True)
    for s, e in [(0, 4), (4, 10)]:
        kk = packing._repeat_heads(k[s:e], 2).transpose(0, 1)
        vv = packing._repeat_heads(v[s:e], 2).transpose(0, 1)
        ref = torch.nn.functional.scaled_dot_product_attention(q[s:e].transpose(0, 1), kk, vv, is_causal=True)
        torch.testing.assert_close(out[s:e], ref.transpose(0, 1))


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


@pytest.mark.parametrize("pad_to", [None, 160])
def test_packed_logits_and_grads_match_padded(pad_to):
    model = tiny_llama()
    model.train()
    seqs = random_seqs(LENGTHS)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    ids, mask = padded(seqs)

    ref = packing.padded_logits(model, ids, mask)
    torch.nn.functional.cross_entropy(ref, labels).backward()
    ref_grads = _grads(model)
    model.zero_grad(set_to_none=True)
    # the reference is the model's own (head on all tokens, pad-token pooling) forward too
    torch.testing.assert_close(ref, model(input_ids=ids, attention_mask=mask).logits.float(), rtol=1e-5, atol=1e-6)

    assert packing.enable_packed_attention(model) == packing.ATTN_NAME
    batch = packing.collate_packed(seqs, pad_id=499, pad_to=pad_to)
    out = packing.packed_logits(model, batch)
    torch.nn.functional.cross_entropy(out, labels).backward()
    got = _grads(model)

    assert out.shape == (len(LENGTHS), 3) and out.dtype == torch.float32
    torch.testing.assert_close(out, ref.detach(), rtol=1e-4, atol=1e-5)
    assert set(got) == set(ref_grads) and any("lora_A" in n for n in got)
    for name in ref_grads:
        torch.testing.assert_close(got[name], ref_grads[name], rtol=1e-3, atol=1e-6, msg=name)


def test_packed_with_gradient_checkpointing_and_position_ids_only():
    model = tiny_llama(lora=False)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    seqs = random_seqs(LENGTHS, seed=3)
    ref = packing.padded_logits(model, *padded(seqs))
    packing.enable_packed_attention(model)
    batch = packing.collate_packed(seqs, pad_id=499)
    torch.testing.assert_close(packing.packed_logits(model, batch), ref, rtol=1e-4, atol=1e-5)
    # without cu_seqlens the attention function splits the pack by its position ids
    backbone, head = packing.split_backbone_head(model)
    hidden = backbone(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False).last_hidden_state
    torch.testing.assert_close(head(hidden[0, batch.last_index]).float(), ref, rtol=1e-4, atol=1e-5)


def test_padded_batches_still_right_after_enabling_varlen():
    """Right-padded batches (no cu_seqlens) go to causal SDPA: exact for the real tokens."""
    model = tiny_llama().eval()
    seqs = random_seqs(LENGTHS, seed=4)
    ids, mask = padded(seqs)
    with torch.no_grad():
        ref = packing.padded_logits(model, ids, mask)
        packing.enable_packed_attention(model)
        torch.testing.assert_close(packing.padded_logits(model, ids, mask), ref, rtol=1e-4, atol=1e-5)


def test_transformers_native_packed_sdpa_matches():
    """transformers' own packed-sequence support (position_ids -> block-diagonal mask)."""
    model = tiny_llama().eval()
    seqs = random_seqs(LENGTHS, seed=5)
    with torch.no_grad():
        ref = packing.padded_logits(model, *padded(seqs))
        assert packing.enable_packed_attention(model, "sdpa") == "sdpa"
        out = packing.packed_logits(model, packing.collate_packed(seqs, pad_id=499))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_flash_path_wrapper_with_cpu_stand_in(monkeypatch):
    """The CUDA branch (argument mapping to torch's varlen_attn: int32 cu_seqlens, causal
    window, grouped kv heads, scale) checked on CPU with a stand-in kernel."""
    calls = []

    def fake_varlen(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, return_aux=None, scale=None, window_size=(-1, -1)):
        calls.append((query.shape[1], key.shape[1], tuple(window_size), cu_seq_q.dtype, max_q))
        return packing.segment_sdpa(query, key, value, cu_seq_q, causal=tuple(window_size) == (-1, 0), scale=scale)

    impl = {"fn": fake_varlen, "params": frozenset(inspect.signature(fake_varlen).parameters), "force": True}
    monkeypatch.setattr(packing, "_VARLEN_IMPL", impl)
    model = tiny_llama().eval()
    seqs = random_seqs(LENGTHS, seed=6)
    with torch.no_grad():
        ref = packing.padded_logits(model, *padded(seqs))
        packing.enable_packed_attention(model)
        out = packing.packed_logits(model, packing.collate_packed(seqs, pad_id=499))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    assert calls and all(c[:4] == (4, 2, (-1, 0), torch.int32) for c in calls)
    assert calls[0][4] == max(LENGTHS)


def test_split_backbone_head_and_supports_packing():
    model = tiny_llama()
    backbone, head = packing.split_backbone_head(model)
    assert type(backbone).__name__ == "LlamaModel"
    assert packing.supports_packing(model)
    assert not packing.supports_packing(torch.nn.Linear(2, 2))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_varlen_kernel_matches_sdpa():
    mode = packing.probe_varlen("cuda", torch.bfloat16)
    assert mode in ("native", "repeat")
    model = tiny_llama().to("cuda", torch.bfloat16).eval()
    seqs = random_seqs(LENGTHS, seed=7)
    ids, mask = padded(seqs)
    with torch.no_grad():
        ref = packing.padded_logits(model, ids.cuda(), mask.cuda())
        packing.enable_packed_attention(model)
        out = packing.packed_logits(model, packing.collate_packed(seqs, pad_id=499).to("cuda"))
    torch.testing.assert_close(out, ref, rtol=3e-2, atol=3e-2)


def test_adapter_input_casting_toggle_and_layers():
    model = tiny_llama()
    assert packing.set_adapter_input_casting(model, enabled=False) == 2 * 4  # q, k, v, o in 2 layers
    flags = [m.cast_input_dtype_enabled for m in model.modules() if hasattr(m, "cast_input_dtype_enabled")]
    assert flags and not any(flags)
    packing.set_adapter_input_casting(model, enabled=True)
    assert all(m.cast_input_dtype_enabled for m in model.modules() if hasattr(m, "cast_input_dtype_enabled"))
    assert len(packing.decoder_layers(model)) == 2


def test_packed_classifier_module_matches_function():
    model = tiny_llama().eval()
    seqs = random_seqs(LENGTHS, seed=8)
    batch = packing.collate_packed(seqs, pad_id=499)
    wrapped = packing.PackedClassifier(model)
    with torch.no_grad():
        packing.enable_packed_attention(model)
        ref = packing.packed_logits(model, batch)
        out = wrapped(**packing.PackedClassifier.inputs(batch))
    torch.testing.assert_close(out, ref)
    assert sum(p.numel() for p in wrapped.parameters()) == sum(p.numel() for p in model.parameters())
