"""Typed configuration of the two-stage absolute-scoring runner (``prefkit absolute``).

Defaults live here; experiment files (``configs/absolute/*.yaml``) hold only what differs
and dotted overrides (``head.hidden=128``) go on top, as for run configs. The resolved
config is saved as ``config.yaml`` next to the outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from prefkit.config import ConfigError, Section, _read_yaml, deep_merge, parse_override

STAGE2_MODES = ("warm", "stack", "fusion")


class AbsoluteData(Section):
    dir: str | None = None  # a folder: train.csv* (+ fold_map.json); explicit paths override
    train: str | None = None
    test: str | None = None
    fold_map: str | None = None  # default: the folder's fold map; none there -> made folds
    id_column: str | None = None  # None: found (see prefkit.absolute.data)
    text_column: str | None = None
    targets: list[str] | None = None
    n_folds: int = Field(default=5, ge=2)
    fold_seed: int = 42
    label_step: float | None = Field(default=0.5, gt=0)  # the label grid for QWK (None: no QWK)


class EmbedConfig(Section):
    """The frozen encoder whose embeddings the heads train on (cached per model and text)."""

    model: str = "checkpoints/pretrained/all-MiniLM-L6-v2"
    max_length: int = Field(default=256, ge=2)  # MiniLM was trained on 256-token inputs; head-tail truncated
    batch_size: int = Field(default=16, ge=1)
    head_fraction: float = Field(default=0.5, ge=0, le=1)
    device: str = "cpu"
    cache_dir: str = "runs/cache/embeddings"


class HeadConfig(Section):
    """Projection (Linear + GELU + dropout) then one scalar per target."""

    hidden: int = Field(default=256, ge=1)
    dropout: float = Field(default=0.1, ge=0, lt=1)


class FitConfig(Section):
    """One head's training: AdamW, mini-batches, early stopping on a held-back share."""

    epochs: int = Field(default=60, ge=1)
    batch_size: int = Field(default=128, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-2, ge=0)
    patience: int = Field(default=8, ge=1)
    valid_share: float = Field(default=0.1, gt=0, lt=1)  # of the training fold, for early stopping


class PairsConfig(Section):
    """Stage 1: soft-BT pairs within the training fold."""

    k: int = Field(default=8, ge=1)  # partners per item
    gamma: float = Field(default=2.0, gt=0)  # targets sigmoid(gamma * (y_i - y_j)), y standardised


class ComparativeConfig(Section):
    """Scoring unseen items by comparisons with anchors (``prefkit absolute compare``)."""

    target: str | None = None  # default: the first target
    anchors_per_item: int = Field(default=4, ge=1, le=4)  # ~4N comparisons
    n_anchors: int = Field(default=16, ge=2)
    anchor_weight: float = Field(default=20.0, gt=0)  # each anchor pair counts as this many comparisons
    dense_subset: int = Field(default=100, ge=0)  # unseen items compared all-pairs as the reference (0: skip)


class FinetuneConfig(Section):
    """``mode: finetune``: run configs (prefkit train-transformer YAML) of the two stages."""

    stage1_config: str | None = None  # task item_scorer
    stage2_config: str | None = None  # task regression, model.init_from = stage 1's checkpoint
    overrides: list[str] = Field(default_factory=list)


class AbsoluteConfig(Section):
    mode: Literal["frozen", "finetune"] = "frozen"
    data: AbsoluteData = Field(default_factory=AbsoluteData)
    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    head: HeadConfig = Field(default_factory=HeadConfig)
    fit: FitConfig = Field(default_factory=FitConfig)
    pairs: PairsConfig = Field(default_factory=PairsConfig)
    pair_fit: FitConfig = Field(default_factory=lambda: FitConfig(epochs=30, batch_size=512, patience=4))
    stage2: list[str] = Field(default_factory=lambda: ["warm", "stack", "fusion"])  # the first is the headline
    comparative: ComparativeConfig = Field(default_factory=ComparativeConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    seed: int = 0
    threads: int = Field(default=1, ge=1)  # torch threads for the heads: tiny models, one thread is fastest (and no waits on a shared CPU)
    out: str = "runs/absolute"

    @model_validator(mode="after")
    def _known_stage2(self):
        bad = [m for m in self.stage2 if m not in STAGE2_MODES]
        if bad or not self.stage2:
            raise ValueError(f"stage2 must list modes among {', '.join(STAGE2_MODES)} (got {self.stage2})")
        return self


def load_absolute_config(path: str | Path | None = None, overrides: list[str] | None = None) -> AbsoluteConfig:
    tree: dict = _read_yaml(path) if path else {}
    for text in overrides or []:
        tree = deep_merge(tree, parse_override(text))
    try:
        return AbsoluteConfig.model_validate(tree, strict=False)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{loc}: {msg}", file=str(path) if path else "overrides") from None


def save_absolute_config(cfg: AbsoluteConfig, folder: str | Path) -> Path:
    path = Path(folder) / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return path
