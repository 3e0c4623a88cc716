"""Warm start (``model.init_from``): a new model begins from a checkpoint prefkit wrote for
another task (stage 1 of a two-stage run: a pair scorer, then a regressor on the same backbone).

* A full checkpoint: its weights load wherever name and shape match the new model (the
  backbone; the head too when it has the same shape, else the head starts afresh). With
  ``model.lora.enabled`` fresh adapters go on top.
* A LoRA checkpoint (adapters + head on a base model, which must be the new model's base):
  ``model.init_mode=warm`` with ``model.lora.enabled`` goes on training the stage-1 adapters
  (same rank and targets); ``stack`` (or warm without adapters of its own) merges them into
  the backbone, and fresh adapters (when enabled) train on top of the merged weights.

A checkpoint of the new run saved as LoRA holds only its own adapters and head: loading it
(:func:`prefkit.models.transformer.load_checkpoint`) rebuilds the same base from
``init_from`` first (:func:`stage_one_backbone`), so the stage-1 checkpoint must still be there.
"""

from __future__ import annotations

import logging
from pathlib import Path

from prefkit.errors import ConfigError, InputError

ADAPTER_FILE = "adapter_model.safetensors"
log = logging.getLogger("prefkit.models")


def _fitting(own: dict, state: dict) -> dict:
    """The tensors of ``state`` with a name in ``own`` and the same shape there."""
    return {k: v for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}


def load_matching(model, state: dict) -> tuple[int, list[str]]:
    """Load the tensors of ``state`` whose name and shape match ``model``'s; returns (loaded,
    names left out because their shape differs: a head of another size)."""
    own = model.state_dict()
    keep = _fitting(own, state)
    other_shape = [k for k, v in state.items() if k in own and k not in keep]
    model.load_state_dict(keep, strict=False)
    return len(keep), other_shape


def _read_weights(ckpt: Path, pattern: str) -> dict:
    from safetensors.torch import load_file

    files = sorted(ckpt.glob(pattern))
    if not files:
        raise InputError(f"model.init_from: no weights ({pattern}) in the checkpoint", file=ckpt)
    state: dict = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def _same_base(meta: dict, model_cfg, ckpt: Path) -> None:
    def resolved(p):
        return str(Path(p).resolve()) if Path(p).exists() else str(p)

    bases = {resolved(meta["base_model"]), meta.get("base_model_abs") or resolved(meta["base_model"])}
    if resolved(model_cfg.name_or_path) not in bases:
        raise ConfigError(
            f"model.init_from: the LoRA checkpoint {ckpt} was trained on {meta['base_model']!r}, not on "
            f"model.name_or_path={model_cfg.name_or_path!r}: use the same base model"
        )


def _merge_adapters(model, ckpt: Path, weights: dict):
    """The stage-1 adapters of ``ckpt`` merged into ``model``'s weights (its head loaded too
    when of the same shape); returns the merged model."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    stage_one = LoraConfig.from_pretrained(str(ckpt))
    # the head is loaded below, where its shape fits (a SEQ_CLS peft model would add it to
    # modules_to_save and expect it in the adapters)
    stage_one.modules_to_save, stage_one.task_type = None, None
    peft = get_peft_model(model, stage_one)
    set_peft_model_state_dict(peft, {k: v for k, v in weights.items() if "lora_" in k})
    merged = peft.merge_and_unload()
    head = {k.removeprefix("base_model.model."): v for k, v in weights.items() if "lora_" not in k}
    load_matching(merged, head)
    return merged


def stage_one_backbone(model, model_cfg):
    """``model`` (freshly loaded, no adapters yet) with the stage-1 weights of
    ``model_cfg.init_from`` in it, as the module doc says. Returns ``(model, adapters)``:
    ``adapters`` are stage-1 adapter weights still to load once the new adapters exist
    (:func:`load_stage_one_adapters`; warm mode), else None."""
    from prefkit.models.transformer import read_checkpoint_meta

    ckpt = Path(model_cfg.init_from)
    if not ckpt.is_dir():
        raise InputError("model.init_from: checkpoint folder not found", file=ckpt)
    meta = read_checkpoint_meta(ckpt)
    quantized = model_cfg.load_in_4bit or model_cfg.load_in_8bit
    if meta["format"] == "full":
        if quantized:
            raise ConfigError("model.init_from: a full checkpoint cannot load into a 4/8-bit model; train stage 1 with LoRA")
        loaded, fresh = load_matching(model, _read_weights(ckpt, "model*.safetensors"))
        log.info("warm start from %s: %d tensors loaded%s", ckpt, loaded, f", {len(fresh)} of another shape left fresh (the head)" if fresh else "")
        return model, None
    _same_base(meta, model_cfg, ckpt)
    weights = _read_weights(ckpt, ADAPTER_FILE)
    if model_cfg.init_mode == "warm" and model_cfg.lora.enabled:
        return model, weights
    if quantized:
        raise ConfigError("model.init_mode=stack merges the stage-1 adapters into the backbone: not with 4/8-bit loading")
    log.info("warm start from %s: stage-1 adapters merged into the backbone", ckpt)
    return _merge_adapters(model, ckpt, weights), None


def load_stage_one_adapters(model, weights: dict, ckpt) -> None:
    """Warm mode: the stage-1 adapters (and the head, when of the same shape) into the new
    adapters of ``model`` (a peft model of the same rank and targets)."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    own = get_peft_model_state_dict(model)
    missing = [k for k in weights if "lora_" in k and k not in own]
    wrong = [k for k in weights if "lora_" in k and k in own and tuple(own[k].shape) != tuple(weights[k].shape)]
    if missing or wrong:
        first = (missing or wrong)[0]
        raise ConfigError(
            f"model.init_mode=warm: the stage-1 adapters of {ckpt} do not fit model.lora ({first!r} "
            f"{'is not among the new adapters' if missing else 'has another shape'}); use the same lora.r and "
            "target_modules, or model.init_mode=stack"
        )
    keep = _fitting(own, weights)
    set_peft_model_state_dict(model, keep)
    log.info("warm start from %s: %d adapter tensors loaded (%d of another shape left fresh)", ckpt, len(keep), len(weights) - len(keep))
