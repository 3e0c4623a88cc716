"""Typed run configuration: defaults in code, experiment YAML files hold only differences.

``load_config(path, overrides)`` deep-merges the YAML file over the defaults, applies
dotted command-line overrides (``train.lr=3e-5``), and validates everything before any
work starts: unknown keys and wrong types are errors. ``save_config`` writes the resolved
config beside a run's outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from prefkit.errors import ConfigError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)


def yaml_on_off(value):
    """YAML reads bare ``on`` / ``off`` as booleans; give them back as the words."""
    return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


def one_of(value: str, known, what: str) -> str:
    """``value`` when it is a name in ``known`` (a registry); else a ValueError naming them,
    which the config reports as one line (``data.format: unknown pair format 'x'; known: ...``)."""
    if value not in known:
        raise ValueError(f"unknown {what} {value!r}; known: {', '.join(known)}")
    return value


class DataConfig(Section):
    """Where the data lives. ``dir`` is a folder in the Kaggle layout
    (train.csv, test.csv, sample_submission.csv; ``.xz``/``.gz`` allowed);
    explicit file paths override what is found there."""

    dir: str | None = None
    train: str | None = None
    test: str | None = None
    sample_submission: str | None = None
    format: str = "kaggle"  # a pair format of prefkit.data.formats
    # format "pairs": the file's column per key (prompt, a, b, label, id, model_a, model_b,
    # weight) and the label coding ({a: 1, b: 2, tie: 0}; a list for several codes)
    columns: dict[str, str] | None = None
    labels: dict[str, str | int | list[str | int]] | None = None
    seed: int | None = None  # format "preference": the coin that puts chosen on A or B
    max_train_rows: int | None = Field(default=None, ge=1)

    @field_validator("format")
    @classmethod
    def _known_pair_format(cls, value):
        from prefkit.data.formats import PAIR_FORMATS

        return one_of(value, PAIR_FORMATS, "pair format")

    @field_validator("columns")
    @classmethod
    def _column_mapping(cls, value):
        from prefkit.data.preference import parse_columns

        return value if value is None else parse_columns(value)

    @field_validator("labels")
    @classmethod
    def _label_coding(cls, value):
        from prefkit.data.preference import parse_labels

        return value if value is None else {k: list(v) for k, v in parse_labels(value).items()}

    @model_validator(mode="after")
    def _options_of_the_format(self):
        from prefkit.data.formats import FORMATS

        for name in ("columns", "labels", "seed"):
            if getattr(self, name) is not None and name not in FORMATS[self.format].options:
                takers = ", ".join(f.name for f in FORMATS.values() if name in f.options)
                raise ValueError(f"{name} is for data.format {takers}, not {self.format!r}")
        return self

    def reader_options(self) -> dict:
        """The options this section gives the reader of ``format``."""
        from prefkit.data.formats import FORMATS

        return {k: getattr(self, k) for k in FORMATS[self.format].options if getattr(self, k, None) is not None}


class FoldConfig(Section):
    n_folds: int = Field(default=5, ge=2)
    seed: int = 42
    fold_map: str | None = None  # import an existing map instead of making one
    allow_split_groups: bool = False  # accept an imported map that puts one prompt group in several folds (a leak)


class RenderConfig(Section):
    """How a pair becomes model input (token budget with head-tail truncation)."""

    max_length: int = Field(default=512, ge=32)
    prompt_share: float = Field(default=0.2, gt=0, lt=1)  # of the budget, before unused room flows on
    head_fraction: float = Field(default=0.5, ge=0, le=1)  # kept from the start of a truncated field
    truncation_marker: str = " ... "  # put between the head and the tail of a cut field ("" for none)
    template: Literal["plain", "chat"] = "plain"
    # encoder: [CLS] P [SEP] A [SEP] B [SEP]; decoder: text markers + EOS; auto: encoder
    # when the tokenizer has CLS and SEP tokens (see prefkit.text.render)
    style: Literal["auto", "encoder", "decoder"] = "auto"


class FeaturesConfig(Section):
    """Hand-crafted pair features + LightGBM."""

    swap_augment: bool = True
    learning_rate: float = Field(default=0.03, gt=0)
    num_boost_round: int = Field(default=3000, ge=1)
    early_stopping_rounds: int = Field(default=100, ge=1)
    num_leaves: int = Field(default=31, ge=2)
    min_data_in_leaf: int = Field(default=40, ge=1)
    feature_fraction: float = Field(default=0.8, gt=0, le=1)
    bagging_fraction: float = Field(default=0.8, gt=0, le=1)
    lambda_l2: float = Field(default=1.0, ge=0)
    num_threads: int = Field(default=0, ge=0)  # 0: LightGBM's default (all cores)
    extra_features: list[str] = Field(default_factory=list)  # cached feature files (e.g. frozen embeddings)
    tta_swap: bool = True  # predict as the mean over the pair and its A/B swap


class StackConfig(Section):
    method: Literal["logistic", "lgbm"] = "logistic"
    inner_folds: int = Field(default=5, ge=2)
    calibration: Literal["temperature", "none"] = "temperature"
    clip: float = Field(default=1e-6, gt=0, lt=0.1)
    name: str = "stack"  # the stack's run folder: <output_dir>/<stack.name>
    submission: str | None = None  # default: submissions/<stack.name>/submission.csv


class LoraConfig(Section):
    """LoRA adapters (peft). The classification head (and any other new head module,
    e.g. DeBERTa's pooler) is always trained in full and saved with the adapter."""

    enabled: bool = False
    r: int = Field(default=16, ge=1)
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    modules_to_save: list[str] | None = None  # None: the head modules, found automatically


class ModelConfig(Section):
    """A pretrained transformer read as a 3-way sequence classifier."""

    name_or_path: str = "checkpoints/pretrained/all-MiniLM-L6-v2"  # local folder or hub name
    tokenizer: str | None = None  # tokenizer folder/name when not beside the weights
    gguf_file: str | None = None  # a .gguf file inside name_or_path (needs the gguf package)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    load_in_4bit: bool = False
    load_in_8bit: bool = False
    attn_implementation: str | None = None
    gradient_checkpointing: bool = False
    lora: LoraConfig = Field(default_factory=LoraConfig)
    # The output head on the backbone, by name (prefkit.models.heads); None: the task's own.
    head: str | None = None
    # random: the architecture of name_or_path's config.json with fresh weights (speed
    # measurements of large models whose weights are not at hand); the tokenizer still loads.
    init: Literal["pretrained", "random"] = "pretrained"
    # Warm start from a checkpoint prefkit wrote for another task (runs/<r>/fold_<k>/checkpoint):
    # its backbone (and LoRA adapters) load into the new model, a head of another shape starts
    # afresh. warm: go on training the same weights (adapters included); stack: merge the
    # stage-1 adapters into the backbone and train fresh adapters on top (model.lora.enabled).
    init_from: str | None = None
    init_mode: Literal["warm", "stack"] = "warm"

    @field_validator("head")
    @classmethod
    def _known_head(cls, value):
        if value is not None:
            from prefkit.models.heads import head_spec

            head_spec(value)  # a ValueError naming the known heads
        return value

    @model_validator(mode="after")
    def _quantisation_needs_lora(self):
        if self.load_in_4bit and self.load_in_8bit:
            raise ValueError("choose one of load_in_4bit and load_in_8bit")
        if (self.load_in_4bit or self.load_in_8bit) and not self.lora.enabled:
            raise ValueError("4-bit/8-bit loading trains adapters only: set lora.enabled=true")
        return self


class ScorerConfig(Section):
    """The Siamese item scorer (``task: item_scorer``): s(prompt, item), P(A beats B) from
    s(A) - s(B). ``ties``: ``davidson`` (P(tie) = nu sqrt(pA pB) / (pA + pB + nu sqrt(pA pB)),
    nu learned per pair from the head unless ``tie_nu`` fixes it) or ``half`` (Bradley-Terry,
    a tie is half a win; ``tie_nu`` then only splits predictions into three columns, none: no
    tie predicted). ``margin``: use a ``margin`` column when the table has one (as TRL).
    ``center_rewards_coefficient``: + coef * mean((s_A + s_B)^2) (as TRL)."""

    ties: Literal["davidson", "half"] = "davidson"
    tie_nu: float | None = Field(default=None, gt=0)
    margin: bool = True
    center_rewards_coefficient: float = Field(default=0.0, ge=0)
    with_prompt: bool = True  # score s(prompt, item); false: s(item) alone


class RegressionConfig(Section):
    """The text regressor (``task: regression``): one text column -> the named target columns."""

    text_column: str = "text"
    targets: list[str] = Field(default_factory=lambda: ["target"], min_length=1)
    label_step: float | None = Field(default=None, gt=0)  # QWK after rounding to this grid (FB3: 0.5)


class TrainConfig(Section):
    epochs: float = Field(default=1.0, gt=0)
    max_steps: int | None = Field(default=None, ge=1)
    lr: float = Field(default=3e-5, gt=0)
    head_lr: float | None = Field(default=None, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    batch_size: int = Field(default=16, ge=1)
    eval_batch_size: int = Field(default=64, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    max_grad_norm: float = Field(default=1.0, gt=0)
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(default=0.05, ge=0, lt=1)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    swap: Literal["off", "double", "paired"] = "double"
    tta_swap: bool = True
    early_stopping_patience: int | None = Field(default=None, ge=1)
    evals_per_epoch: int = Field(default=1, ge=1)
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    length_batching: bool = True
    max_tokens: int | None = Field(default=None, ge=1)  # token budget per training batch (padded), instead of batch_size
    eval_max_tokens: int | None = Field(default=None, ge=1)  # likewise for inference batches
    bucket_batches: int = Field(default=50, ge=1)  # training: sort by length within chunks of this many batches
    pad_to_multiple_of: int = Field(default=1, ge=1)
    soft_labels: bool = True  # train on p_a/p_b/p_tie as given; false: on their argmax
    folds: list[int] | None = None  # train only these folds
    max_train_pairs: int | None = Field(default=None, ge=1)  # random subset of each fold's training rows
    state_every_steps: int = Field(default=200, ge=1)  # save optimizer/scheduler/RNG state (resume)
    log_every_steps: int = Field(default=10, ge=1)
    keep_state: bool = False  # keep fold_<k>/state after the fold finishes
    # Packed batches (prefkit.models.packing): whole pairs end to end, no padding, up to
    # max_tokens real tokens per batch, attention kept inside each pair. Decoder LLMs only.
    # auto: on for a decoder that supports it when max_tokens is set, else padded batches;
    # on: required (max_tokens needed; an encoder model is a ConfigError); off: padded.
    packing: Literal["auto", "on", "off"] = "auto"
    compile_layers: bool = False  # torch.compile each transformer block (packs padded to max_tokens)
    loss: str | None = None  # a loss by name (prefkit.train.losses); None: the task's own

    @property
    def transformers_scheduler(self) -> str:
        """transformers' name of ``scheduler``: its plain ``constant`` would ignore the warmup."""
        return "constant_with_warmup" if self.scheduler == "constant" else self.scheduler

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, value):
        if value is not None:
            from prefkit.train.losses import LOSSES

            one_of(value, sorted(LOSSES), "loss")
        return value

    @field_validator("swap", mode="before")
    @classmethod
    def _yaml_off(cls, value):
        return "off" if value is False else value  # YAML reads a bare `off` as false

    @field_validator("packing", mode="before")
    @classmethod
    def _yaml_on_off(cls, value):
        return yaml_on_off(value)

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no(cls, value):
        return "no" if value is False else value  # YAML reads a bare `no` as false

    @model_validator(mode="after")
    def _packing_needs_budget(self):
        if self.packing == "on" and self.max_tokens is None:
            raise ValueError("packing=on needs max_tokens (the token budget of a pack)")
        return self


class InferConfig(Section):
    """Inference (``prefkit predict``, a Kaggle kernel; :mod:`prefkit.infer.predict`). Batch sizes,
    the token budget of length-sorted batches and swap TTA stay where training evaluation reads
    them: ``train.eval_batch_size``, ``train.eval_max_tokens``, ``train.tta_swap``."""

    # auto: as trained (model.dtype, train.mixed_precision); fp16/bf16/fp32: weights cast to it
    # (bf16 is refused on a GPU without bf16, e.g. a T4: use fp16)
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    # auto: as trained (a QLoRA base 4/8-bit on a GPU); none: unquantised; 8bit/4bit: bitsandbytes (CUDA)
    quantize: Literal["auto", "none", "8bit", "4bit"] = "auto"
    devices: list[str] | None = None  # one model copy per device, e.g. [cuda:0, cuda:1]; None: one copy
    # split: batches shared among the copies; swap: the original order on even copies, the
    # A/B-swapped order (swap TTA) on odd ones, at the same time
    multi_device: Literal["split", "swap"] = "split"
    max_length: int | None = Field(default=None, ge=32)  # render.max_length at inference (None: as trained)
    fold_average: Literal["predictions", "weights"] = "predictions"  # several checkpoints: mean of outputs, or of weights
    fixed_outputs: bool = True  # empty / identical responses get the training data's label rates (fixed_outputs.json)

    @field_validator("multi_device", "precision", "quantize", mode="before")
    @classmethod
    def _yaml_words(cls, value):
        return {False: "none"}.get(value, value) if isinstance(value, bool) else value

    @field_validator("devices", mode="before")
    @classmethod
    def _comma_list(cls, value):
        return [d.strip() for d in value.split(",") if d.strip()] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _swap_needs_two(self):
        if self.multi_device == "swap" and len(self.devices or []) < 2:
            raise ValueError("multi_device=swap needs at least two devices (infer.devices)")
        return self


class GrpoConfig(Section):
    """A generative judge trained with GRPO (``prefkit judge train``, TRL's ``GRPOTrainer``).

    The policy is ``model`` (LoRA adapters from ``model.lora`` when enabled); the optimiser
    settings come from ``train`` (``lr``, ``max_steps`` or ``epochs``, ``batch_size`` =
    completions per device and step, ``grad_accum``, ``device``, ``mixed_precision``,
    ``log_every_steps``), the pairs from ``data``. Each step's completions
    (``batch_size * grad_accum``) hold whole groups of ``num_generations``, and with the
    ``consistency`` reward whole pairs in both orders (2 groups)."""

    num_generations: int = Field(default=4, ge=2)  # group size: completions per prompt
    beta: float = Field(default=0.04, ge=0)  # KL coefficient to the starting policy (0: no reference pass)
    max_prompt_length: int = Field(default=1024, ge=64)  # tokens; the pair's texts are cut head-tail to fit
    max_completion_length: int = Field(default=256, ge=1)
    temperature: float = Field(default=1.0, gt=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    # reward name -> weight (prefkit.judge.rewards: correct, strength, format, consistency)
    rewards: dict[str, float] = Field(default_factory=lambda: {"strength": 1.0, "format": 0.2, "consistency": 0.5})
    # |preference_strength| -> weight of the strength reward (RM-Gallery's 1.0 / 0.7 / 0.3)
    strength_weights: dict[int, float] = Field(default_factory=lambda: {0: 0.3, 1: 0.7, 2: 1.0})
    both_orders: bool = True  # every pair asked as given and with A and B swapped
    allow_tie: bool = True  # the template offers "tie" as a verdict
    max_pairs: int | None = Field(default=None, ge=1)  # a seeded random subset of the training pairs
    generation_kwargs: dict[str, Any] = Field(default_factory=dict)  # more arguments of generate (e.g. repetition_penalty)
    use_vllm: bool = False  # generate with vLLM (GPU, `pip install vllm`)
    vllm_mode: Literal["colocate", "server"] = "colocate"
    vllm_gpu_memory_utilization: float = Field(default=0.3, gt=0, le=1)
    save_steps: int | None = Field(default=None, ge=1)  # also keep adapter checkpoints every this many steps
    eval_samples: int = Field(default=4, ge=1)  # `judge evaluate`: sampled verdicts per pair and order
    eval_temperature: float = Field(default=1.0, gt=0)
    eval_smoothing: float = Field(default=0.5, gt=0)  # added to each verdict count before normalising

    @field_validator("rewards")
    @classmethod
    def _known_rewards(cls, value):
        from prefkit.judge.rewards import REWARDS

        if not value:
            raise ValueError("name at least one reward")
        for name in value:
            one_of(name, list(REWARDS), "reward")
        return value

    @field_validator("strength_weights", mode="before")
    @classmethod
    def _integer_levels(cls, value):
        # a saved config.yaml writes the levels as strings ('0': 0.3)
        if isinstance(value, dict):
            return {int(k) if isinstance(k, str) and k.strip().isdigit() else k: v for k, v in value.items()}
        return value

    @field_validator("strength_weights")
    @classmethod
    def _some_weights(cls, value):
        if not value or min(value) < 0:
            raise ValueError("strength weights need at least one strength level >= 0")
        return value


class JudgeExample(Section):
    """A worked example shown before the pair to judge (few-shot annotation)."""

    prompt: str = ""
    response_a: str
    response_b: str
    answer: Literal["first", "second", "tie"]


class AnnotateConfig(Section):
    """Zero/few-shot annotation of pairs by a local causal LM (``prefkit judge annotate``,
    :mod:`prefkit.judge.annotate`): the pair shown in a prompt template (the tokenizer's chat
    template applied when it has one), the verdict read from the next-token probabilities of
    the option tokens, both orders asked and averaged. The model is ``model`` (a folder or
    ``model.gguf_file``), the texts cut head-tail under ``render.max_length``."""

    # responses: prompt + response A/B; texts: text 1/2 (document comparisons, no prompt);
    # auto: texts when every prompt is empty; or a custom text with {response_a} and
    # {response_b} (and {prompt}, {first_label}, {second_label}, {options}).
    template: str = "auto"
    system: str | None = None  # the system message (None: the template's own; "" for none)
    labels: list[str] | None = None  # option texts of the first and second side (None: A/B, or 1/2 for texts)
    tie: Literal["auto", "on", "off"] = "auto"  # offer a tie option; auto: when the labelled pairs hold ties
    tie_label: str = "tie"
    answer_prefix: str = ""  # text after the start of the answer, right before the option token
    chat_template: Literal["auto", "off"] = "auto"  # auto: the tokenizer's chat template when it has one
    examples: list[JudgeExample] = Field(default_factory=list)  # few-shot turns before the pair
    both_orders: bool = True  # also ask with A and B swapped, and average
    batch_size: int = Field(default=16, ge=1)  # sequences per forward pass (a pair in both orders is two)
    max_tokens: int | None = Field(default=None, ge=1)  # and at most this many padded tokens per batch
    device: str = "auto"  # auto, cpu, cuda, cuda:<index>
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"  # autocast on CUDA (weights: model.dtype)
    max_rows: int | None = Field(default=None, ge=1)  # annotate a seeded random subset of each file (quick looks)
    scores: bool = False  # also fit Bradley-Terry item scores from the annotations (scores/)
    score_ties: Literal["davidson", "rao_kupper", "half"] = "davidson"

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_as_text(cls, value):
        return [str(v) for v in value] if isinstance(value, list) else value  # YAML reads [1, 2] as numbers

    @field_validator("labels")
    @classmethod
    def _two_labels(cls, value):
        if value is not None and (len(value) != 2 or len({v.strip() for v in value}) != 2 or not all(v.strip() for v in value)):
            raise ValueError("labels needs two different non-empty option texts (first side, second side)")
        return value

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no(cls, value):
        return "no" if value is False else value  # YAML reads a bare `no` as false

    @field_validator("tie", mode="before")
    @classmethod
    def _yaml_on_off(cls, value):
        return yaml_on_off(value)


class RunConfig(Section):
    name: str = "run"
    output_dir: str = "runs"
    task: str = "pair3"  # what the learned model predicts (prefkit.tasks): pair3 = P(A), P(B), P(tie)
    seed: int = 42
    data: DataConfig = Field(default_factory=DataConfig)
    folds: FoldConfig = Field(default_factory=FoldConfig)
    render: RenderConfig = Field(default_factory=RenderConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    stack: StackConfig = Field(default_factory=StackConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    infer: InferConfig = Field(default_factory=InferConfig)
    scorer: ScorerConfig = Field(default_factory=ScorerConfig)
    regression: RegressionConfig = Field(default_factory=RegressionConfig)
    grpo: GrpoConfig = Field(default_factory=GrpoConfig)  # prefkit judge train / evaluate
    annotate: AnnotateConfig = Field(default_factory=AnnotateConfig)  # prefkit judge annotate

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    @field_validator("task")
    @classmethod
    def _known_task(cls, value):
        from prefkit.tasks import TASKS

        return one_of(value, sorted(TASKS), "task")

    @model_validator(mode="before")
    @classmethod
    def _swaps_of_single_texts(cls, tree):
        if not isinstance(tree, dict) or tree.get("task") not in ("regression", "item_scorer"):
            return tree
        train = dict(tree.get("train") or {})
        if tree["task"] == "regression":  # one text per row: nothing to swap (an explicit swap is refused)
            if train.get("swap", "off") not in ("off", False):
                raise ValueError("task regression scores single texts: train.swap must be off")
            train["swap"] = "off"
        else:  # antisymmetric by construction: a swapped pair gives the same loss and prediction
            train.setdefault("swap", "off")
            train.setdefault("tta_swap", False)
        return {**tree, "train": train}

    @model_validator(mode="after")
    def _fp16_needs_fp32_weights(self):
        # The fp16 loss scaler refuses fp16 gradients, which fp16 weights would have.
        if self.train.mixed_precision == "fp16" and self.model.dtype == "float16":
            raise ValueError("train.mixed_precision=fp16 needs model.dtype=float32 (the weights autocast computes from)")
        return self


def deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> dict:
    """``a.b.c=value`` -> ``{"a": {"b": {"c": value}}}``; the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key.path=value")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    # YAML reads 3e-5 as a string (no dot); numbers are what a user meant.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            pass
    tree: Any = value
    for part in reversed(parts):
        tree = {part: tree}
    return tree


def _read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError("config file not found", file=path)
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"not valid YAML ({str(err).splitlines()[0]})", file=path) from None
    if not isinstance(loaded, dict):
        raise ConfigError("expected a mapping at the top level", file=path)
    return loaded


def _coerce_floats(tree: Any, model: type[BaseModel]) -> Any:
    """YAML writes 1 where a float field means 1.0 and '3e-5' for some floats; strict mode
    would refuse both, so convert exactly those cases and leave other types to validation."""
    if not isinstance(tree, dict):
        return tree
    out = {}
    for key, value in tree.items():
        field = model.model_fields.get(key)
        ann = field.annotation if field is not None else None
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out[key] = _coerce_floats(value, ann)
        elif ann in (float, float | None) and isinstance(value, str):
            try:
                out[key] = float(value)
            except ValueError:
                out[key] = value
        else:
            out[key] = value
    return out


def build_config(tree: dict, source: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(_coerce_floats(tree, RunConfig))
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        msg = first["msg"].removeprefix("Value error, ")  # a validator's own message reads alone
        if first["type"] == "extra_forbidden":
            msg = "unknown key"
        got = first.get("input")
        got_txt = "" if isinstance(got, dict) else f" (got {got!r})"
        raise ConfigError(f"{loc}: {msg}{got_txt}", file=source) from None


def _blamed_override(err: ConfigError, overrides: list[str]) -> str | None:
    """The last override that sets the key an error is about (or a section above it)."""
    loc = err.what.split(":", 1)[0].strip()
    for text in reversed(overrides):
        key = text.split("=", 1)[0].strip().strip(".")
        if loc == key or loc.startswith(key + "."):
            return text
    return None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Defaults, then the file, then the overrides; an error names what caused it: the
    override that set the bad key (``train.lr=abc: ...``), else the file."""
    overrides = list(overrides or [])
    tree: dict = _read_yaml(path) if path else {}
    for text in overrides:
        tree = deep_merge(tree, parse_override(text))
    try:
        return build_config(tree, source=str(path) if path else "overrides")
    except ConfigError as err:
        blamed = _blamed_override(err, overrides)
        if blamed is None:
            raise
        raise ConfigError(f"{err.what.split(':', 1)[1].strip()}", file=f"override {blamed}") from None


def config_to_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def save_config(cfg: RunConfig, run_dir: str | Path | None = None) -> Path:
    run_dir = Path(run_dir) if run_dir is not None else cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "config.yaml"
    path.write_text(config_to_yaml(cfg))
    return path
