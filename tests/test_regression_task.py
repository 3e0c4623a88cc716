"""Text regression (task regression) on the engine, and warm start from another task's
checkpoint (model.init_from): the stage-1 weights really are in the new model."""

import numpy as np
import pandas as pd
import pytest
import torch

from prefkit.config import load_config
from prefkit.errors import ConfigError
from prefkit.models.transformer import build_model, load_checkpoint, load_tokenizer, save_checkpoint
from prefkit.train.engine import train_folds

torch.set_num_threads(1)


@pytest.fixture
def bert(tiny_bert):
    return tiny_bert


def essays(n: int = 48, seed: int = 0) -> pd.DataFrame:
    """Texts whose two scores follow their length (a learnable signal)."""
    rng = np.random.default_rng(seed)
    words = "the quick brown fox jumps over lazy dog answer question".split()
    lengths = rng.integers(2, 30, size=n)
    return pd.DataFrame({
        "id": [f"e{i}" for i in range(n)],
        "text": [" ".join(rng.choice(words, size=k)) for k in lengths],
        "cohesion": 1 + 4 * (lengths - 2) / 28,
        "syntax": 5 - 4 * (lengths - 2) / 28,
    })  # fmt: skip


def test_a_regressor_trains_on_several_targets_and_reports_absolute_metrics(bert, tmp_path):
    table = essays()
    folds = np.arange(len(table)) % 3
    cfg = load_config(None, [
        "task=regression", "regression.targets=[cohesion, syntax]", "regression.label_step=0.5", "name=reg",
        f"output_dir={tmp_path / 'runs'}", f"model.name_or_path={bert}", "render.max_length=48", "train.device=cpu",
        "train.batch_size=8", "train.lr=3e-3", "train.head_lr=5e-2", "train.max_steps=40", "train.folds=[0]",
    ])  # fmt: skip
    assert cfg.train.swap == "off"  # single texts have no sides
    res = train_folds(cfg, table, folds)
    assert list(res.oof.columns) == ["id", "cohesion", "syntax", "model", "fold"]
    assert set(res.oof["id"]) == set(table["id"][folds == 0])
    done = res.folds[0].evals[-1]
    assert {"val_mcrmse", "val_qwk_cohesion", "val_spearman_syntax", "val_pearson_cohesion"} <= set(done)
    # better than predicting the mean of the training targets
    train, val = table[folds != 0], table[folds == 0]
    baseline = np.mean([np.sqrt(np.mean((val[c] - train[c].mean()) ** 2)) for c in ("cohesion", "syntax")])
    assert res.oof_metric < baseline


def test_regression_refuses_an_explicit_swap():
    with pytest.raises(ConfigError, match="train.swap must be off"):
        load_config(None, ["task=regression", "train.swap=double"])


def stage_one(bert, tmp_path, lora: bool):
    """A stage-1 item scorer checkpoint as the engine saves it, its weights moved away from
    the pretrained ones (as training would)."""
    overrides = ["task=item_scorer", f"model.name_or_path={bert}", f"output_dir={tmp_path}"]
    if lora:
        overrides += ["model.lora.enabled=true", "model.lora.r=4", "model.lora.target_modules=[query, value]"]
    cfg = load_config(None, overrides)
    tok = load_tokenizer(cfg.model)
    model = build_model(cfg.model, head="scalar_tie", tokenizer=tok)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
    return save_checkpoint(model, tok, tmp_path / "stage1", cfg), model


def new_model(bert, ckpt, *overrides):
    cfg = load_config(None, ["task=regression", f"model.name_or_path={bert}", f"model.init_from={ckpt}", *overrides])
    return build_model(cfg.model, head="regression:2", tokenizer=load_tokenizer(cfg.model))


def backbone(model):
    from prefkit.models.transformer import unwrap_peft

    inner = unwrap_peft(model)
    return {k: v.detach().clone() for k, v in getattr(inner, inner.base_model_prefix).state_dict().items()}


def test_warm_start_loads_the_stage_one_backbone_and_a_fresh_head(bert, tmp_path):
    ckpt, trained = stage_one(bert, tmp_path, lora=False)
    pretrained = backbone(build_model(load_config(None, [f"model.name_or_path={bert}"]).model, head="regression:2"))
    warm = new_model(bert, ckpt)
    got, want = backbone(warm), backbone(trained)
    changed = [k for k in want if not torch.equal(want[k], pretrained[k])]
    assert len(changed) > 10  # stage 1 moved the backbone
    for k in changed:
        torch.testing.assert_close(got[k], want[k])  # ... and the new model starts from there
    assert warm.classifier.weight.shape[0] == 2  # the head of the new task, re-initialised
    # a LoRA run on top: the same stage-1 backbone under fresh adapters
    stacked = new_model(bert, ckpt, "model.lora.enabled=true", "model.lora.r=4", "model.lora.target_modules=[query, value]")
    torch.testing.assert_close(stacked.base_model.model.bert.encoder.layer[0].attention.self.query.base_layer.weight,
                               want["encoder.layer.0.attention.self.query.weight"])  # fmt: skip


def test_lora_warm_start_continues_or_stacks_on_the_stage_one_adapters(bert, tmp_path):
    ckpt, trained = stage_one(bert, tmp_path, lora=True)
    lora = ["model.lora.enabled=true", "model.lora.r=4", "model.lora.target_modules=[query, value]"]
    stage_a = trained.base_model.model.bert.encoder.layer[0].attention.self.query.lora_A["default"].weight

    warm = new_model(bert, ckpt, *lora)  # init_mode=warm: the same adapters go on training
    torch.testing.assert_close(warm.base_model.model.bert.encoder.layer[0].attention.self.query.lora_A["default"].weight, stage_a)

    stacked = new_model(bert, ckpt, *lora, "model.init_mode=stack")  # merged, fresh adapters on top
    query = stacked.base_model.model.bert.encoder.layer[0].attention.self.query
    trained_query = trained.base_model.model.bert.encoder.layer[0].attention.self.query
    merged = trained_query.base_layer.weight + trained_query.get_delta_weight("default")
    torch.testing.assert_close(query.base_layer.weight, merged)
    assert torch.count_nonzero(query.lora_B["default"].weight) == 0  # fresh adapters start at zero

    # a stacked run's own checkpoint reloads on the same merged base
    cfg = load_config(None, ["task=regression", "regression.targets=[a, b]", f"model.name_or_path={bert}", f"model.init_from={ckpt}",
                             "model.init_mode=stack", *lora])  # fmt: skip
    saved = save_checkpoint(stacked, load_tokenizer(cfg.model), tmp_path / "stage2", cfg)
    reloaded, _, _ = load_checkpoint(saved, device="cpu")
    x = torch.randint(5, 100, (2, 12))
    stacked.eval()
    torch.testing.assert_close(reloaded(input_ids=x).logits, stacked(input_ids=x).logits)


def test_lora_warm_start_refuses_adapters_of_another_rank(bert, tmp_path):
    ckpt, _ = stage_one(bert, tmp_path, lora=True)
    with pytest.raises(ConfigError, match="do not fit model.lora"):
        new_model(bert, ckpt, "model.lora.enabled=true", "model.lora.r=8", "model.lora.target_modules=[query, value]")
