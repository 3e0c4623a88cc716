"""A fold's resumable training state: progress counters, and the accelerate state folder.

Every ``train.state_every_steps`` optimizer steps the engine saves ``fold_<k>/state``:
accelerate's ``save_state`` (trainable weights only, optimizer, scheduler, RNG) plus
``progress.json`` (:class:`Progress`: steps, position in the epoch's batches, best
evaluation so far, the fold's fingerprint). A state saved under another setup (batches,
process count, accumulation, fingerprint) is refused before it is loaded.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prefkit.errors import ConfigError

PROGRESS_FILE = "progress.json"
BEST_VAL_FILE = "best_val.npy"
BEST_SHARDED_FILE = "best_trainable.safetensors"  # FSDP: the best step's trainable weights, for a resume


@dataclass
class Progress:
    step: int = 0  # optimizer steps done
    micro: int = 0  # micro-batches done
    epoch: int = 0
    pos: int = 0  # next batch within the epoch
    best_loss: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    stopped_early: bool = False
    pairs_seen: int = 0
    tokens_seen: int = 0
    train_seconds: float = 0.0
    packed: bool = False
    # The batch order and step count depend on these: a resume must keep them.
    processes: int | None = None
    grad_accum: int | None = None
    fingerprint: dict | None = None
    evals: list = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2)

    @classmethod
    def read(cls, path: Path) -> "Progress":
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in json.loads(path.read_text()).items() if k in known})


def check_resumable(saved: Progress, now: Progress, state_dir: Path) -> None:
    """Refuse to resume a fold under a setup that would change its batches, step count or result."""
    from prefkit.train.fingerprint import fingerprint_changes

    names = {False: "padded", True: "packed"}
    changed = []
    if saved.packed != now.packed:
        changed.append(f"{names[saved.packed]} batches, now {names[now.packed]} (train.packing)")
    if saved.processes is not None and saved.processes != now.processes:
        changed.append(f"{saved.processes} process(es), now {now.processes}")
    if saved.grad_accum is not None and saved.grad_accum != now.grad_accum:
        changed.append(f"train.grad_accum={saved.grad_accum}, now {now.grad_accum}")
    changed += fingerprint_changes(saved.fingerprint, now.fingerprint)
    if changed:
        raise ConfigError(
            f"the training state in {state_dir} was saved with {'; '.join(changed)}: "
            f"run as it was saved, or delete {state_dir} to start the fold afresh"
        )


def unwrapped_name(name: str) -> str:
    for wrapper in ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module."):  # FSDP1 / activation checkpointing
        name = name.replace(wrapper, "")
    return name.removeprefix("module.")  # DDP


def trainable_state(model, state: dict) -> dict:
    """The entries of a state dict that training changes: what the training state keeps and
    what going back to the best step restores (LoRA: adapters and head, a few MB)."""
    names = {unwrapped_name(n) for n, p in model.named_parameters() if p.requires_grad}
    return {name: tensor for name, tensor in state.items() if unwrapped_name(name) in names}


def register_trainable_only(accelerator, model):
    """Keep only trainable weights in accelerate's saved state; returns the hook handle."""
    has_trainable = any(p.requires_grad for p in model.parameters())

    def save_hook(models, weights, output_dir):
        for i, sd in enumerate(weights):
            weights[i] = trainable_state(model, sd)  # names compared without wrapper prefixes (DDP's "module.")
            if has_trainable and not weights[i]:
                raise RuntimeError(f"training state would hold no weights: none of {len(sd)} state-dict names is a trainable parameter")

    return accelerator.register_save_state_pre_hook(save_hook)


def restore_sharded_state(model, state: dict) -> None:
    """Load full tensors held by the main process (the others may hold none) into an FSDP-sharded
    ``model``: broadcast, then each process keeps its shard. Entries absent stay as they are."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    from torch.distributed.fsdp import FSDPModule

    # Modules sharded with reshard_after_forward=False (accelerate's root) still hold plain
    # unsharded tensors after the last evaluation's forward; loading needs them sharded.
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=False)
    set_model_state_dict(model, state, options=options)


def save_state(accelerator, state_dir: Path, progress: Progress, best_val=None, best_sharded: dict | None = None) -> None:
    """Write the state to ``<state>.tmp``, then swap it in: a kill never leaves half a state."""
    accelerator.wait_for_everyone()
    tmp = state_dir.with_name(state_dir.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / PROGRESS_FILE).write_text(progress.to_json())
        if best_val is not None:
            np.save(tmp / BEST_VAL_FILE, best_val)
        if best_sharded:
            from safetensors.torch import save_file

            save_file({name: t.contiguous() for name, t in best_sharded.items()}, str(tmp / BEST_SHARDED_FILE))
        old = state_dir.with_name(state_dir.name + ".old")
        if state_dir.exists():
            shutil.rmtree(old, ignore_errors=True)
            state_dir.rename(old)
        tmp.rename(state_dir)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def load_state(accelerator, state_dir: Path) -> tuple[Progress, np.ndarray | None, dict | None]:
    """(progress, best validation predictions, FSDP best trainable weights) of a saved state."""
    accelerator.load_state(str(state_dir), strict=False)
    progress = Progress.read(state_dir / PROGRESS_FILE)
    best_val = np.load(state_dir / BEST_VAL_FILE) if progress.best_step is not None and (state_dir / BEST_VAL_FILE).exists() else None
    best_sharded = None
    if progress.best_step is not None and (state_dir / BEST_SHARDED_FILE).exists():
        from safetensors.torch import load_file

        best_sharded = load_file(str(state_dir / BEST_SHARDED_FILE)) if accelerator.is_main_process else {}
    return progress, best_val, best_sharded
