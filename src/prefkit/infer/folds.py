"""Several fold checkpoints as one model: weight-level fold averaging.

:func:`average_checkpoints` writes one checkpoint whose weights are the element-wise mean of
the folds' weights: for LoRA checkpoints the adapter tensors (``lora_A``, ``lora_B``) and the
fully trained head (``modules_to_save``) of ``adapter_model.safetensors``, for full
checkpoints every floating tensor of ``model*.safetensors``. One model then runs once
instead of once per fold (the LMSYS 1st place averaged its folds' LoRA weights). The folds
must share the set-up (format, base model, adapter configuration, tensor names and shapes);
the rest of the first checkpoint (tokenizer, config, ``prefkit_checkpoint.json``) is copied,
the fixed outputs (:mod:`prefkit.infer.fixed`) are averaged, and ``averaged_from.json`` names
the sources. Averaging at the prediction level is ``infer.fold_average=predictions``
(:func:`prefkit.infer.predict.predict_checkpoints`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from prefkit.errors import InputError
from prefkit.infer.fixed import FIXED_OUTPUTS_FILE, FixedOutputs

AVERAGED_FROM_FILE = "averaged_from.json"
_ADAPTER_FILE = "adapter_model.safetensors"
# adapter_config.json fields that may differ between folds without changing the model
_ADAPTER_FIELDS_FREE = {"base_model_name_or_path", "revision", "inference_mode"}


def weight_files(ckpt_dir: Path, fmt: str) -> list[str]:
    """The weight files of a checkpoint of ``fmt`` (``lora`` or ``full``), by name."""
    if fmt == "lora":
        return [_ADAPTER_FILE]
    names = sorted(p.name for p in ckpt_dir.glob("model*.safetensors"))
    if not names:
        raise InputError("no model weights (model*.safetensors) in checkpoint", file=ckpt_dir)
    return names


def _same_setup(first: Path, other: Path, fmt: str) -> None:
    from prefkit.models.checks import read_json
    from prefkit.models.transformer import read_checkpoint_meta

    meta_a, meta_b = read_checkpoint_meta(first), read_checkpoint_meta(other)
    for key in ("format", "base_model", "task", "head", "num_labels"):
        if meta_a.get(key) != meta_b.get(key):
            raise InputError(f"cannot average with {first}: {key} is {meta_b.get(key)!r} here, {meta_a.get(key)!r} there", file=other)
    if fmt == "lora":
        cfg_a, cfg_b = (read_json(d / "adapter_config.json") for d in (first, other))
        differ = sorted(k for k in set(cfg_a) | set(cfg_b) if k not in _ADAPTER_FIELDS_FREE and cfg_a.get(k) != cfg_b.get(k))
        if differ:
            raise InputError(f"cannot average with {first}: the adapter configuration differs ({', '.join(differ)})", file=other / "adapter_config.json")


def mean_state(files: list[Path]) -> dict[str, torch.Tensor]:
    """The element-wise mean of the tensors of several safetensors files (same names and
    shapes); computed in float64 and stored in each tensor's own dtype; integer tensors
    must agree and are kept."""
    from safetensors.torch import load_file

    states = [load_file(str(f)) for f in files]
    names = set(states[0])
    out = {}
    for f, state in zip(files[1:], states[1:]):
        if set(state) != names:
            odd = sorted(names.symmetric_difference(state))[0]
            raise InputError(f"the tensor names differ from {files[0]} (first: {odd!r})", file=f)
    for name, first in states[0].items():
        tensors = [s[name] for s in states]
        for f, t in zip(files, tensors):
            if t.shape != first.shape:
                raise InputError(f"tensor {name!r} has shape {tuple(t.shape)}, {tuple(first.shape)} in {files[0]}", file=f)
        if first.is_floating_point():
            out[name] = torch.stack([t.double() for t in tensors]).mean(0).to(first.dtype)
        else:
            if any(not torch.equal(t, first) for t in tensors[1:]):
                raise InputError(f"integer tensor {name!r} differs between the checkpoints", file=files[0])
            out[name] = first.clone()
    return out


def average_checkpoints(ckpt_dirs: list[str | Path], out_dir: str | Path) -> Path:
    """One checkpoint at ``out_dir`` (replaced whole) holding the mean weights of
    ``ckpt_dirs`` (see module doc); it loads and predicts like any checkpoint."""
    from safetensors.torch import save_file

    from prefkit.atomic import atomic_directory
    from prefkit.models.checks import check_checkpoint
    from prefkit.models.transformer import read_checkpoint_meta

    dirs = [check_checkpoint(d) for d in ckpt_dirs]
    if not dirs:
        raise InputError("no checkpoint to average")
    out_dir = Path(out_dir)
    if any(out_dir.resolve() == d.resolve() for d in dirs):
        raise InputError("the averaged checkpoint would replace one of its sources", file=out_dir)
    fmt = read_checkpoint_meta(dirs[0])["format"]
    for d in dirs[1:]:
        _same_setup(dirs[0], d, fmt)
    names = weight_files(dirs[0], fmt)
    fixed = [f for f in (FixedOutputs.read(d) for d in dirs) if f is not None]
    with atomic_directory(out_dir) as tmp:
        for item in dirs[0].iterdir():
            if item.is_file() and item.name not in names and item.name not in (FIXED_OUTPUTS_FILE, AVERAGED_FROM_FILE):
                shutil.copy2(item, tmp / item.name)
        for name in names:
            save_file(mean_state([d / name for d in dirs]), str(tmp / name), metadata={"format": "pt"})
        if fixed:
            (tmp / FIXED_OUTPUTS_FILE).write_text(FixedOutputs.mean(fixed).to_json())
        (tmp / AVERAGED_FROM_FILE).write_text(json.dumps({"checkpoints": [str(d) for d in dirs], "format": fmt}, indent=2) + "\n")
    return out_dir
