"""What determines a fold's result, recorded in ``done.json`` and the training state.

A finished fold is reused only when its fingerprint matches the current run: the settings
that change what the fold learns (task, model, rendering, training, fold settings, the run
seed) and hashes of the rows it trained and was validated on (ids, targets, weights: a new
fold seed, fold map or training file shows there). Settings that only change speed or
bookkeeping (device, evaluation batch sizes, logging, state saving, which folds a call
trains) are left out, so folds trained in parallel on one GPU combine as one run.
"""

from __future__ import annotations

import hashlib

import numpy as np

from prefkit.config import RunConfig
from prefkit.tasks import Encoded

# train.* keys that do not change what a fold learns
_TRAIN_KEYS_IGNORED = {
    "device", "folds", "eval_batch_size", "eval_max_tokens", "log_every_steps", "state_every_steps", "keep_state", "compile_layers",
}


def _rows_hash(ids, encoded: Encoded, rows: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update("\n".join(str(ids[i]) for i in rows).encode())
    if encoded.targets is not None:
        h.update(np.ascontiguousarray(encoded.targets[rows], dtype=np.float64).tobytes())
    if encoded.weights is not None:
        h.update(np.ascontiguousarray(encoded.weights[rows], dtype=np.float64).tobytes())
    h.update(str(int(encoded.lengths[rows].sum())).encode())  # the rendering's token count
    return h.hexdigest()[:16]


def fold_fingerprint(cfg: RunConfig, ids, encoded: Encoded, train_rows: np.ndarray, val_rows: np.ndarray) -> dict:
    """Flat ``{"model.name_or_path": ..., "data.train_rows": <hash>, ...}`` of one fold."""
    sections = {
        "model": cfg.model.model_dump(mode="json"),
        "render": cfg.render.model_dump(mode="json"),
        "train": {k: v for k, v in cfg.train.model_dump(mode="json").items() if k not in _TRAIN_KEYS_IGNORED},
        "folds": cfg.folds.model_dump(mode="json"),
    }
    from prefkit.tasks import TASKS

    own = TASKS[cfg.task].config_section  # the task's own settings (scorer.*, regression.*)
    if own is not None:
        sections[own] = getattr(cfg, own).model_dump(mode="json")
    flat = {"task": cfg.task, "seed": cfg.seed}
    for section, values in sections.items():
        for key, value in _flatten(values):
            flat[f"{section}.{key}"] = value
    flat["data.train_rows"] = _rows_hash(ids, encoded, train_rows)
    flat["data.validation_rows"] = _rows_hash(ids, encoded, val_rows)
    return flat


def _flatten(values: dict, prefix: str = ""):
    for key, value in values.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def fingerprint_changes(saved: dict | None, now: dict | None) -> list[str]:
    """What differs, one phrase per setting (``[]``: the same); a missing record differs."""
    if now is None:
        return []
    if saved is None:
        return ["no fingerprint (made by an older prefkit)"]
    keys = [k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
    out = [f"{k}={saved.get(k)!r}, now {now.get(k)!r}" for k in keys if not k.startswith("data.")]
    rows = [("training" if k == "data.train_rows" else "validation") for k in keys if k.startswith("data.")]
    if rows:  # named after the settings: a changed fold seed also changes the rows
        out.append(f"other {' and '.join(rows)} rows or labels (the data, folds.* or train.max_train_pairs changed)")
    return out
