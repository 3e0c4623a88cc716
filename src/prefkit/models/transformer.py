"""Transformer pair classifiers: encoders and decoder LLMs read as 3-way sequence classifiers.

* Cross-encoders: any ``AutoModelForSequenceClassification`` encoder (BERT/MiniLM,
  DeBERTa-v2/v3, ModernBERT); the head reads the first token.
* Decoder LLMs: Llama, Gemma, Qwen2, Mistral, ... ``*ForSequenceClassification`` read
  the last token that is not padding. The tokenizer gets a pad token when it has none
  (its UNK, else another special token that is not the EOS, else the EOS) and the model
  config the same ``pad_token_id``; batches are right-padded. A pad distinct from the
  EOS matters: the rendered sequence ends in the EOS, and a pad equal to it would make
  the pooling read the token before.
* LoRA through peft (``model.lora``), task type SEQ_CLS; the head modules (``score``,
  ``classifier``, DeBERTa's ``pooler``, ModernBERT's ``head``) are trained in full and
  saved with the adapter (``modules_to_save``). Full fine-tuning when LoRA is off.
* 4-bit/8-bit loading through bitsandbytes (GPU only), then
  ``prepare_model_for_kbit_training``.
* A local folder or a hub name; ``model.gguf_file`` loads a GGUF file (dequantised).

Checkpoints (:func:`save_checkpoint`) are folders holding the weights (full model, or
adapter + head), the tokenizer, the run's ``config.yaml`` and ``prefkit_checkpoint.json``;
:func:`load_checkpoint` reads them back for inference (no training code imported).
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import torch

from prefkit.config import ModelConfig, RunConfig, load_config, save_config
from prefkit.errors import ConfigError, InputError
from prefkit.models.heads import HeadSpec, head_spec
from prefkit.tasks import get_task

logger = logging.getLogger("prefkit.models")

CHECKPOINT_META = "prefkit_checkpoint.json"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: str) -> torch.dtype:
    return _DTYPES[name]


def _source_error(path: str, err: Exception) -> InputError:
    hint = ""
    if str(path).startswith("checkpoints/pretrained"):
        hint = " (fetch it with `prefkit models fetch`)"
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return InputError(f"cannot load model/tokenizer {path!r}{hint}: {first}")


# -- tokenizer -------------------------------------------------------------------------
def ensure_pad_token(tokenizer) -> int:
    """Give ``tokenizer`` a pad token distinct from its EOS where possible; return its id."""
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id
    if pad is not None and pad != eos:
        return pad
    # a dedicated padding token among the added ones (Llama 3.1's <|finetune_right_pad_id|>,
    # <pad>, <|pad|>), then UNK, BOS, any other special token
    added = tokenizer.get_added_vocab() if hasattr(tokenizer, "get_added_vocab") else {}
    candidates = [i for t, i in sorted(added.items(), key=lambda kv: kv[1]) if "pad" in t.lower()]
    candidates += [tokenizer.unk_token_id, getattr(tokenizer, "bos_token_id", None)]
    candidates += [i for i in getattr(tokenizer, "all_special_ids", []) if i is not None]
    for cand in candidates:
        if cand is not None and cand != eos:
            tokenizer.pad_token = tokenizer.convert_ids_to_tokens(cand)
            return tokenizer.pad_token_id
    if pad is None:
        if eos is None:
            raise ConfigError("the tokenizer has no pad, unk or eos token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer.pad_token_id


_GGUF_SPECIALS = {
    "bos_token": "tokenizer.ggml.bos_token_id",
    "eos_token": "tokenizer.ggml.eos_token_id",
    "unk_token": "tokenizer.ggml.unknown_token_id",
    "pad_token": "tokenizer.ggml.padding_token_id",
}


def complete_gguf_tokenizer(tokenizer, gguf_path: str | Path) -> None:
    """Special tokens and chat template from a GGUF file's metadata, where transformers'
    GGUF tokenizer conversion left them unset."""
    if not Path(gguf_path).is_file():
        return
    try:
        from gguf import GGUFReader
    except ImportError:  # pragma: no cover - loading the GGUF already needed it
        return
    fields = GGUFReader(str(gguf_path)).fields

    def value(key):
        f = fields.get(key)
        return None if f is None or not f.data else f.parts[f.data[0]]

    for attr, key in _GGUF_SPECIALS.items():
        raw = value(key)
        if raw is not None and getattr(tokenizer, attr, None) is None:
            token_id = int(raw[0])
            if 0 <= token_id < len(tokenizer):
                setattr(tokenizer, attr, tokenizer.convert_ids_to_tokens(token_id))
    template = value("tokenizer.chat_template")
    if template is not None and not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = bytes(template).decode("utf-8")


def _local_or_hub(name_or_path: str, what: str) -> str:
    """A hub id as it is; a local path that is not there is "not found" (not a hub "Repo id" message)."""
    from prefkit.models.checks import looks_local

    if looks_local(name_or_path) and not Path(name_or_path).expanduser().exists():
        raise InputError(f"{what} not found (no such local folder or file)", file=name_or_path)
    return name_or_path


def check_model_sources(model_cfg: ModelConfig) -> None:
    """The model and tokenizer ``model_cfg`` names are there and whole (local paths), before
    any work: a missing or broken checkpoint is one line naming the file."""
    from prefkit.models.checks import resolve_model_path

    if model_cfg.tokenizer:
        _local_or_hub(model_cfg.tokenizer, "tokenizer")
    if model_cfg.init == "random":
        _local_or_hub(model_cfg.name_or_path, "model config")
    else:
        resolve_model_path(model_cfg.name_or_path)


def load_tokenizer(model_cfg: ModelConfig):
    """The tokenizer of ``model_cfg`` (right padding, a pad token set)."""
    from transformers import AutoTokenizer

    source = _local_or_hub(model_cfg.tokenizer or model_cfg.name_or_path, "tokenizer")
    kwargs = {}
    if model_cfg.gguf_file and not model_cfg.tokenizer:
        kwargs["gguf_file"] = model_cfg.gguf_file
    try:
        tok = AutoTokenizer.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as err:
        raise _source_error(source, err) from None
    if "gguf_file" in kwargs:
        complete_gguf_tokenizer(tok, Path(source) / model_cfg.gguf_file)
    tok.padding_side = "right"
    ensure_pad_token(tok)
    return tok


# -- model -----------------------------------------------------------------------------
def is_decoder(model) -> bool:
    """True for last-token classifiers (decoder LLMs), False for first-token encoders."""
    return hasattr(unwrap_peft(model), "score")


def unwrap_peft(model):
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return model
    if isinstance(model, PeftModel):
        return model.get_base_model()
    return model


def head_module_names(model) -> list[str]:
    """Top-level modules outside the pretrained backbone (new at fine-tuning time)."""
    model = unwrap_peft(model)
    prefix = getattr(model, "base_model_prefix", "")
    return [n for n, m in model.named_children() if n != prefix and any(True for _ in m.parameters())]


def _quantization_config(model_cfg: ModelConfig):
    if not (model_cfg.load_in_4bit or model_cfg.load_in_8bit):
        return None
    what = "model.load_in_4bit" if model_cfg.load_in_4bit else "model.load_in_8bit"
    if not torch.cuda.is_available():
        raise ConfigError(f"{what} needs a CUDA GPU (bitsandbytes); none is available here")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(f"{what} needs the bitsandbytes package (pip install bitsandbytes)")
    from transformers import BitsAndBytesConfig

    if model_cfg.load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = torch.bfloat16 if model_cfg.dtype == "float32" else torch_dtype(model_cfg.dtype)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute
    )


def random_backbone(model_cfg: ModelConfig, spec: HeadSpec):
    """The architecture of ``name_or_path``'s ``config.json`` with freshly initialised weights
    (``model.init=random``): speed measurements of models whose weights are not at hand."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    try:
        config = AutoConfig.from_pretrained(_local_or_hub(model_cfg.name_or_path, "model config"), num_labels=spec.num_labels)
    except (OSError, ValueError) as err:
        raise _source_error(model_cfg.name_or_path, err) from None
    if model_cfg.attn_implementation:
        config._attn_implementation = model_cfg.attn_implementation
    # Created on the GPU where there is one: initialising billions of weights on a CPU takes minutes.
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    with device:
        return AutoModelForSequenceClassification.from_config(config, dtype=torch_dtype(model_cfg.dtype))


def load_backbone(model_cfg: ModelConfig, head: str = "pair3", pad_token_id: int | None = None, device_map=None):
    """``AutoModelForSequenceClassification`` from ``model_cfg`` with the named head (no LoRA,
    no training prep); ``model.init=random``: the same architecture, untrained."""
    from transformers import AutoModelForSequenceClassification

    spec = head_spec(head)
    if model_cfg.init == "random":
        return _set_head_config(random_backbone(model_cfg, spec), spec, pad_token_id)
    kwargs: dict = {"num_labels": spec.num_labels, "dtype": torch_dtype(model_cfg.dtype)}
    if model_cfg.attn_implementation:
        kwargs["attn_implementation"] = model_cfg.attn_implementation
    if model_cfg.gguf_file:
        from prefkit.pretrained import require_gguf

        require_gguf()
        kwargs["gguf_file"] = model_cfg.gguf_file
    quant = _quantization_config(model_cfg)
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = device_map if device_map is not None else {"": torch.cuda.current_device()}
    elif device_map is not None:
        kwargs["device_map"] = device_map
    try:
        from prefkit.models.checks import one_line_load_report, resolve_model_path

        source = resolve_model_path(model_cfg.name_or_path)  # a broken or missing local checkpoint: one line
        with one_line_load_report(logger.info):  # the fresh head's load report as one prefkit line
            model = AutoModelForSequenceClassification.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as err:
        raise _source_error(model_cfg.name_or_path, err) from None
    if model_cfg.gguf_file:
        # GGUF weights are dequantised on load: drop the GGUF quantisation marks so that the
        # model trains, moves and saves like any other (saving refuses a GGUF "quantizer").
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer = None
        if getattr(model, "is_quantized", False):
            try:
                model.is_quantized = False
            except AttributeError:  # a read-only property in some versions
                pass
    return _set_head_config(model, spec, pad_token_id)


def _set_head_config(model, spec: HeadSpec, pad_token_id: int | None):
    """Output names, problem type and pad id in the model config (saved with checkpoints)."""
    model.config.id2label = dict(enumerate(spec.labels))
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    model.config.problem_type = spec.problem_type
    if pad_token_id is not None:
        model.config.pad_token_id = pad_token_id
        text_cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        text_cfg.pad_token_id = pad_token_id
    return model


def add_lora(model, model_cfg: ModelConfig):
    """Wrap ``model`` in LoRA adapters (peft, SEQ_CLS) with the head modules trained in full."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import TaskType, get_peft_model

    lc = model_cfg.lora
    modules_to_save = lc.modules_to_save if lc.modules_to_save is not None else head_module_names(model)
    target = lc.target_modules
    if isinstance(target, list):
        target = list(target)
    peft_cfg = PeftLoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=lc.r,
        lora_alpha=lc.alpha,
        lora_dropout=lc.dropout,
        target_modules=target,
        modules_to_save=modules_to_save,
    )
    try:
        return get_peft_model(model, peft_cfg)
    except ValueError as err:
        raise ConfigError(f"model.lora: {str(err).splitlines()[0]}") from None


def build_model(model_cfg: ModelConfig, head: str = "pair3", tokenizer=None, device_map=None):
    """A trainable model: backbone + the named head (:mod:`prefkit.models.heads`), LoRA and
    k-bit prep as configured.

    ``tokenizer`` (from :func:`load_tokenizer`) supplies the pad id for last-token
    pooling; it is loaded when not given.
    """
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model_cfg)
    model = load_backbone(model_cfg, head, pad_token_id=tokenizer.pad_token_id, device_map=device_map)
    vocab = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > vocab:
        raise ConfigError(f"tokenizer has {len(tokenizer)} tokens but the model's embedding only {vocab}")
    stage_one_adapters = None
    if model_cfg.init_from:  # before k-bit prep: stage-1 weights go into the plain backbone
        from prefkit.models.warm_start import stage_one_backbone

        model, stage_one_adapters = stage_one_backbone(model, model_cfg)
    quantized = model_cfg.load_in_4bit or model_cfg.load_in_8bit
    if quantized:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=model_cfg.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    elif model_cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if model_cfg.gradient_checkpointing and hasattr(model.config, "use_cache"):
        model.config.use_cache = False
    if model_cfg.lora.enabled:
        model = add_lora(model, model_cfg)
    if stage_one_adapters is not None:
        from prefkit.models.warm_start import load_stage_one_adapters

        load_stage_one_adapters(model, stage_one_adapters, model_cfg.init_from)
    return model


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


# -- checkpoints -----------------------------------------------------------------------
def _is_peft(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, PeftModel)


def _check_adapter_saved(path: Path) -> None:
    """A LoRA checkpoint without LoRA weights would reload as the untrained base: refuse it."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        if not any("lora_" in name for name in f.keys()):
            raise RuntimeError(f"{path}: the adapter checkpoint holds no LoRA weights (names not matched when saving)")


def save_checkpoint(model, tokenizer, out_dir: str | Path, cfg: RunConfig, state_dict: dict | None = None,
                    extra_files: dict[str, str] | None = None) -> Path:  # fmt: skip
    """Write ``model`` (unwrapped), ``tokenizer`` and ``cfg`` to ``out_dir``, replacing it whole.

    LoRA models save the adapter and the head only (``format: lora``) and name their base
    model; other models save all weights (``format: full``). ``state_dict`` is for
    sharded (FSDP) training, where the caller gathers the full state first. ``extra_files``:
    more text files by name, written inside the same atomic replacement (``fixed_outputs.json``).
    """
    from prefkit.atomic import atomic_directory

    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as tmp:
        _write_checkpoint(model, tokenizer, tmp, cfg, state_dict)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
    return out_dir


def _write_checkpoint(model, tokenizer, tmp: Path, cfg: RunConfig, state_dict: dict | None) -> None:
    kwargs = {"safe_serialization": True}
    if state_dict is not None:
        kwargs["state_dict"] = state_dict
    if _is_peft(model):
        fmt = "lora"
        model.save_pretrained(tmp, **kwargs)
        _check_adapter_saved(tmp / "adapter_model.safetensors")
    else:
        fmt = "full"
        model.save_pretrained(tmp, **kwargs)
    tokenizer.save_pretrained(tmp)
    save_config(cfg, tmp)
    base = cfg.model.name_or_path
    meta = {
        "format": fmt,
        "base_model": base,
        "base_model_abs": str(Path(base).resolve()) if Path(base).exists() else None,
        "gguf_file": cfg.model.gguf_file,
        "task": cfg.task,
        "head": cfg.model.head or get_task(cfg.task, cfg).head,
        "num_labels": int(model.config.num_labels),
        "pad_token_id": tokenizer.pad_token_id,
    }
    (tmp / CHECKPOINT_META).write_text(json.dumps(meta, indent=2) + "\n")


def read_checkpoint_meta(ckpt_dir: str | Path) -> dict:
    path = Path(ckpt_dir) / CHECKPOINT_META
    if not path.exists():
        raise InputError(f"not a prefkit checkpoint (no {CHECKPOINT_META})", file=ckpt_dir)
    from prefkit.models.checks import read_json

    return read_json(path)


def _base_source(meta: dict) -> str:
    abs_path = meta.get("base_model_abs")
    if abs_path and Path(abs_path).exists():
        return abs_path
    return meta["base_model"]


def _inference_quantization(quantize, trained: ModelConfig, device: torch.device) -> tuple[bool, bool]:
    """(load_in_4bit, load_in_8bit) at inference: ``quantize`` None/True/"auto" as trained
    (only on a GPU), False/"none" unquantised, "4bit"/"8bit" as asked."""
    if quantize in (None, True, "auto"):
        on_gpu = device.type == "cuda" and quantize is not False
        return trained.load_in_4bit and on_gpu, trained.load_in_8bit and on_gpu
    if quantize in (False, "none"):
        return False, False
    if quantize not in ("4bit", "8bit"):
        raise ConfigError(f"quantize must be auto, none, 4bit or 8bit, not {quantize!r}")
    return quantize == "4bit", quantize == "8bit"


def load_checkpoint(ckpt_dir: str | Path, device: str | torch.device | None = None, quantize: bool | str | None = None,
                    dtype: str | None = None):  # fmt: skip
    """(model, tokenizer, cfg) from a checkpoint folder, in eval mode on ``device``.

    ``quantize``: the weights 4/8-bit through bitsandbytes (``"4bit"``, ``"8bit"``; a CUDA
    device), ``"none"``/False unquantised, None/``"auto"``: a LoRA checkpoint's base as
    trained when a GPU is there (on a CPU unquantised). ``dtype``: the weights' dtype
    (``float16``, ``bfloat16``, ``float32``; also the compute dtype of 4-bit layers and the
    dtype of the layers 8-bit loading leaves unquantised); None: as trained.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from prefkit.models.checks import check_checkpoint

    ckpt_dir = check_checkpoint(ckpt_dir)  # truncated weights or a broken config.json: one line naming the file
    meta = read_checkpoint_meta(ckpt_dir)
    cfg = load_config(ckpt_dir / "config.yaml")
    tokenizer = AutoTokenizer.from_pretrained(ckpt_dir)
    tokenizer.padding_side = "right"
    if tokenizer.pad_token_id is None:
        ensure_pad_token(tokenizer)
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    in_4bit, in_8bit = _inference_quantization(quantize, cfg.model, device)
    # model_copy does not validate: quantised loading of a full checkpoint needs no LoRA here
    load_cfg = cfg.model.model_copy(update={"load_in_4bit": in_4bit, "load_in_8bit": in_8bit, "dtype": dtype or cfg.model.dtype})
    device_map = {"": device.index or 0} if (in_4bit or in_8bit) else None
    if meta["format"] == "full":
        kwargs: dict = {"dtype": torch_dtype(load_cfg.dtype)}
        quant = _quantization_config(load_cfg)
        if quant is not None:
            kwargs.update(quantization_config=quant, device_map=device_map)
        model = AutoModelForSequenceClassification.from_pretrained(ckpt_dir, **kwargs)
        if quant is None:
            model.to(device)
    else:
        from peft import PeftModel

        updates = {"name_or_path": _base_source(meta), "lora": cfg.model.lora.model_copy(update={"enabled": False})}
        base_cfg = load_cfg.model_copy(update=updates)
        base = load_backbone(base_cfg, meta.get("head", "pair3"), pad_token_id=tokenizer.pad_token_id, device_map=device_map)
        if cfg.model.init_from:  # the base the adapters were trained on: stage-1 weights in it
            from prefkit.models.warm_start import stage_one_backbone

            base, _ = stage_one_backbone(base, load_cfg.model_copy(update={"name_or_path": base_cfg.name_or_path}))
        model = PeftModel.from_pretrained(base, ckpt_dir)
        if not (in_4bit or in_8bit):
            model.to(device=device, dtype=torch_dtype(load_cfg.dtype))
    model.config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model, tokenizer, cfg


def load_weights_into(model, ckpt_dir: str | Path) -> None:
    """Load a checkpoint's trained weights into an already built ``model`` of the same setup
    (used to go back to the best weights after early stopping)."""
    from safetensors.torch import load_file

    ckpt_dir = Path(ckpt_dir)
    if _is_peft(model):
        from peft import set_peft_model_state_dict

        weights = load_file(str(ckpt_dir / "adapter_model.safetensors"))
        set_peft_model_state_dict(model, weights)
        return
    files = sorted(ckpt_dir.glob("model*.safetensors"))
    if not files:
        raise InputError("no model weights (model*.safetensors) in checkpoint", file=ckpt_dir)
    state = {}
    for f in files:
        state.update(load_file(str(f)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    real_missing = [k for k in missing if not k.endswith(("position_ids", "inv_freq"))]
    if real_missing:
        raise InputError(f"checkpoint lacks {len(real_missing)} weight(s), first {real_missing[0]!r}", file=ckpt_dir)
