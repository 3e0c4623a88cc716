"""A generative pairwise judge trained with GRPO through TRL, and its evaluation.

Training (``prefkit judge train``)::

    pairs (any pair format)  ->  one chat prompt per pair and order (A/B as given, and swapped)
                             ->  TRL GRPOTrainer: num_generations completions per prompt,
                                 rewards from prefkit.judge.rewards, LoRA through peft_config
                             ->  <run>/adapter/ (the LoRA adapter + tokenizer), judge.json,
                                 log_history.json, config.yaml

Prompts follow :func:`prefkit.judge.prompts.generative_judge_message`; the pair's texts are
cut head-tail (the budget split of :mod:`prefkit.text.render`: the prompt offered a fifth,
A and B the same allowance) so that the chat-templated prompt stays within
``grpo.max_prompt_length`` tokens (TRL itself no longer truncates prompts).

Both orders of a pair sit in adjacent dataset rows and a pair-aware sampler shuffles pairs,
not rows, so the two orders are generated in the same batch: the ``consistency`` reward
scores a completion against the completions for the swapped pair.

Evaluation (``prefkit judge evaluate``): ``grpo.eval_samples`` sampled completions per pair
and order, parsed to verdicts; accuracy (per sampled verdict; unknown counts as wrong)
overall, by label and by preference strength, the majority-verdict accuracy, the
position-flip rate, the unparseable share, and the 3-way log loss of the verdict
frequencies of both orders (A/B of the swapped order mapped back), each count plus
``grpo.eval_smoothing``.

TRL is imported only here, and only when training starts (``pip install 'prefkit[judge]'``).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from prefkit.config import GrpoConfig, RunConfig, save_config
from prefkit.errors import ConfigError, InputError
from prefkit.judge.parse import SWAPPED, TIE, UNKNOWN, parse_verdict
from prefkit.judge.prompts import generative_judge_message
from prefkit.judge.rewards import reward_functions
from prefkit.schema import LABELS
from prefkit.text.render import allocate, field_text, head_tail

VERDICT_OF_CLASS = ("A", "B", TIE)
STRENGTH_COLUMN = "preference_strength"
JUDGE_META = "judge.json"
ADAPTER_DIR = "adapter"
PROMPT_SHARE = 0.2  # of the text budget first offered to the prompt (as render.prompt_share)
TRUNCATION_MARKER = " ... "
_CHARS_PER_TOKEN_CAP = 24  # texts far over budget are cut in characters before tokenising (speed)


def require_trl():
    """TRL's GRPO classes, or one line saying how to install them."""
    try:
        from trl import GRPOConfig as TrlGRPOConfig
        from trl import GRPOTrainer
    except ImportError as err:
        raise ConfigError(f"prefkit judge train needs TRL: pip install 'prefkit[judge]' ({err})") from None
    return TrlGRPOConfig, GRPOTrainer


# -- prompts -----------------------------------------------------------------------------
class JudgePrompts:
    """Chat prompts for pairs, cut to ``max_tokens`` tokens once the chat template is applied."""

    def __init__(self, tokenizer, max_tokens: int, allow_tie: bool = True):
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.allow_tie = allow_tie
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError("the judge model's tokenizer has no chat template (use an instruct/chat model)")
        self.marker = self._encode(TRUNCATION_MARKER)
        overhead = self.count_tokens(self.messages("", "", ""))
        # a few tokens of slack: a cut text decoded and tokenised again can differ slightly
        self.text_budget = max_tokens - overhead - 8
        if self.text_budget < 24:
            raise ConfigError(f"grpo.max_prompt_length={max_tokens} leaves no room for the texts (the template takes {overhead} tokens)")

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def messages(self, prompt: str, response_a: str, response_b: str) -> list[dict]:
        return [{"role": "user", "content": generative_judge_message(prompt, response_a, response_b, self.allow_tie)}]

    def chat_text(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def count_tokens(self, messages: list[dict]) -> int:
        return len(self._encode(self.chat_text(messages)))

    def _cut(self, texts: list[str]) -> list[list[int]]:
        cap = self.max_tokens * _CHARS_PER_TOKEN_CAP
        texts = [t if len(t) <= 2 * cap else t[:cap] + "\n" + t[-cap:] for t in texts]
        return [list(ids) for ids in self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]] if texts else []

    def for_pairs(self, pairs: pd.DataFrame) -> tuple[list[list[dict]], list[list[dict]]]:
        """Messages of every pair as given and with A and B swapped (the same kept tokens)."""
        n = len(pairs)
        ids = self._cut([field_text(t) for t in pairs["prompt"]] + [field_text(t) for t in pairs["response_a"]] + [field_text(t) for t in pairs["response_b"]])
        given, swapped = [], []
        for p, a, b in zip(ids[:n], ids[n : 2 * n], ids[2 * n :]):
            kp, ka, kb = allocate((len(p), len(a), len(b)), self.text_budget, PROMPT_SHARE)
            text_p, text_a, text_b = (self.tokenizer.decode(head_tail(x, k, 0.5, self.marker)) for x, k in ((p, kp), (a, ka), (b, kb)))
            given.append(self.messages(text_p, text_a, text_b))
            swapped.append(self.messages(text_p, text_b, text_a))
        return given, swapped


# -- data --------------------------------------------------------------------------------
def label_verdicts(pairs: pd.DataFrame) -> np.ndarray:
    """The label of each pair as a verdict (argmax of p_a, p_b, p_tie) in the given order."""
    labels = pairs[list(LABELS)].to_numpy(dtype=float)
    if np.isnan(labels).any():
        row = int(np.isnan(labels).any(axis=1).argmax())
        raise InputError(f"pair {pairs['id'].iloc[row]!r} has no label: a judge trains and is evaluated on labelled pairs", column="p_a,p_b,p_tie")
    return np.array(VERDICT_OF_CLASS, dtype=object)[labels.argmax(axis=1)]


def pair_strengths(pairs: pd.DataFrame) -> np.ndarray:
    """``preference_strength`` of each pair where the data has one (RM-Gallery), else NaN."""
    if STRENGTH_COLUMN in pairs:
        return pd.to_numeric(pairs[STRENGTH_COLUMN], errors="coerce").to_numpy(dtype=float)
    return np.full(len(pairs), np.nan)


def judge_records(pairs: pd.DataFrame, prompts: JudgePrompts, both_orders: bool = True) -> list[dict]:
    """Rows for TRL: ``prompt`` (chat messages), ``label``, ``strength``, ``pair_key``, ``order``;
    a pair's two orders in adjacent rows."""
    given, swapped = prompts.for_pairs(pairs)
    labels, strengths = label_verdicts(pairs), pair_strengths(pairs)
    rows = []
    for i, pair_id in enumerate(pairs["id"].astype(str)):
        strength = None if math.isnan(strengths[i]) else float(strengths[i])
        rows.append({"prompt": given[i], "label": labels[i], "strength": strength, "pair_key": pair_id, "order": 0})
        if both_orders:
            rows.append({"prompt": swapped[i], "label": SWAPPED[labels[i]], "strength": strength, "pair_key": pair_id, "order": 1})
    return rows


def training_pairs(cfg: RunConfig) -> pd.DataFrame:
    """The labelled training pairs ``cfg.data`` names, a seeded subset of ``grpo.max_pairs``."""
    from prefkit.data.run_data import load_run_data

    train, _ = load_run_data(cfg)
    if cfg.grpo.max_pairs and len(train) > cfg.grpo.max_pairs:
        train = train.sample(n=cfg.grpo.max_pairs, random_state=cfg.seed).reset_index(drop=True)
    label_verdicts(train)  # every row labelled, before the model loads
    return train


# -- training ----------------------------------------------------------------------------
def check_batch_shape(cfg: RunConfig) -> None:
    """Each generation batch must hold whole groups, and with the consistency reward whole
    pairs in both orders, else TRL (or the reward) cannot score it."""
    g = cfg.grpo
    per_step = cfg.train.batch_size * cfg.train.grad_accum
    unit = g.num_generations * (2 if g.both_orders and "consistency" in g.rewards else 1)
    if per_step % unit:
        need = "2 * grpo.num_generations (both orders of a pair)" if unit > g.num_generations else "grpo.num_generations"
        raise ConfigError(f"train.batch_size * train.grad_accum = {per_step} completions must be a multiple of {need} = {unit}")
    if "consistency" in g.rewards and not g.both_orders:
        raise ConfigError("the consistency reward needs grpo.both_orders=true (each pair asked in both orders)")


def _paired_sampler_class():
    from trl.trainer.utils import RepeatSampler
    import torch

    class PairedRepeatSampler(RepeatSampler):
        """TRL's RepeatSampler, shuffling pairs (rows 2k and 2k + 1: one pair in both orders)
        instead of rows, so both orders of a pair fall in the same generation batch."""

        def __iter__(self):
            n_pairs = self.num_samples // 2
            order = torch.randperm(n_pairs, generator=self.generator).tolist() if self.shuffle else range(n_pairs)
            indexes = [2 * p + side for p in order for side in (0, 1)]
            chunks = [indexes[i : i + self.batch_size] for i in range(0, len(indexes), self.batch_size)]
            for chunk in (c for c in chunks if len(c) == self.batch_size):
                for _ in range(self.repeat_count):
                    for index in chunk:
                        for _ in range(self.mini_repeat_count):
                            yield index

    return PairedRepeatSampler


def _trainer_class(paired: bool):
    _, GRPOTrainer = require_trl()
    if not paired:
        return GRPOTrainer
    sampler_class = _paired_sampler_class()

    class PairedGRPOTrainer(GRPOTrainer):
        def _get_train_sampler(self, dataset=None):
            base = super()._get_train_sampler(dataset)
            return sampler_class(
                data_source=base.data_source,
                mini_repeat_count=base.mini_repeat_count,
                batch_size=base.batch_size,
                repeat_count=base.repeat_count,
                shuffle=base.shuffle,
                seed=base.seed,
            )

    return PairedGRPOTrainer


def _device_flags(cfg: RunConfig) -> dict:
    import torch

    cuda = torch.cuda.is_available() and cfg.train.device != "cpu"
    if cfg.train.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is available")
    return {
        "use_cpu": not cuda,
        "bf16": cuda and cfg.train.mixed_precision == "bf16",
        "fp16": cuda and cfg.train.mixed_precision == "fp16",
    }


def trl_arguments(cfg: RunConfig, output_dir: Path):
    """TRL's GRPOConfig from prefkit's config."""
    TrlGRPOConfig, _ = require_trl()
    g, t = cfg.grpo, cfg.train
    if g.use_vllm:
        try:
            import vllm  # noqa: F401
        except ImportError:
            raise ConfigError("grpo.use_vllm=true needs vLLM: pip install vllm (on a GPU machine)") from None
    return TrlGRPOConfig(
        output_dir=str(output_dir),
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        lr_scheduler_type=t.transformers_scheduler,  # as the engine: constant keeps its warmup
        warmup_steps=t.warmup_ratio,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        logging_steps=t.log_every_steps,
        save_strategy="steps" if g.save_steps else "no",
        save_steps=g.save_steps or 500,
        report_to="none",
        seed=cfg.seed,
        data_seed=cfg.seed,
        gradient_checkpointing=cfg.model.gradient_checkpointing,
        num_generations=g.num_generations,
        beta=g.beta,
        max_completion_length=g.max_completion_length,
        temperature=g.temperature,
        top_p=g.top_p,
        generation_kwargs=dict(g.generation_kwargs) or None,
        reward_weights=list(g.rewards.values()),
        use_vllm=g.use_vllm,
        vllm_mode=g.vllm_mode,
        vllm_gpu_memory_utilization=g.vllm_gpu_memory_utilization,
        dataloader_num_workers=0,
        disable_tqdm=True,
        **_device_flags(cfg),
    )


def peft_config(cfg: RunConfig):
    """The LoRA adapter TRL puts on the policy, or None (full fine-tuning)."""
    lora = cfg.model.lora
    if not lora.enabled:
        return None
    from peft import LoraConfig

    return LoraConfig(task_type="CAUSAL_LM", r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules)


def load_judge_model(cfg: RunConfig):
    """(causal LM, tokenizer) of ``cfg.model``; the tokenizer pads on the left for generation."""
    import torch
    from transformers import AutoModelForCausalLM

    from prefkit.models.transformer import _source_error, check_model_sources, load_tokenizer, torch_dtype

    check_model_sources(cfg.model)
    tokenizer = load_tokenizer(cfg.model)
    tokenizer.padding_side = "left"
    try:
        model = AutoModelForCausalLM.from_pretrained(cfg.model.name_or_path, dtype=torch_dtype(cfg.model.dtype))
    except (OSError, ValueError) as err:
        raise _source_error(cfg.model.name_or_path, err) from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(cfg.seed)
    return model, tokenizer


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    reward_first: float | None
    reward_last: float | None
    seconds: float


def _mean_rewards(history: list[dict]) -> list[float]:
    return [h["reward"] for h in history if "reward" in h]


def train_judge(cfg: RunConfig, *, force: bool = False, pairs: pd.DataFrame | None = None, echo=print) -> TrainResult:
    """GRPO-train the judge ``cfg`` describes; the run folder holds the adapter (or full
    weights without LoRA), the tokenizer, judge.json, log_history.json and config.yaml."""
    from datasets import Dataset

    from prefkit.rundir import RunFolder

    require_trl()
    check_batch_shape(cfg)
    pairs = training_pairs(cfg) if pairs is None else pairs
    model, tokenizer = load_judge_model(cfg)
    prompts = JudgePrompts(tokenizer, cfg.grpo.max_prompt_length, cfg.grpo.allow_tie)
    records = judge_records(pairs, prompts, cfg.grpo.both_orders)
    echo(f"judge train: {len(pairs)} pairs, {len(records)} prompts; first prompt:\n{prompts.chat_text(records[0]['prompt'])}")
    rewards = reward_functions(list(cfg.grpo.rewards), cfg.grpo.strength_weights)
    started = time.time()
    with RunFolder(cfg.run_dir, kind="judge_grpo", force=force).open() as run:
        save_config(cfg, run.dir)
        trainer = _trainer_class(paired=cfg.grpo.both_orders)(
            model=model,
            reward_funcs=rewards,
            args=trl_arguments(cfg, run.dir / "trainer"),
            train_dataset=Dataset.from_list(records),
            processing_class=tokenizer,
            peft_config=peft_config(cfg),
        )
        trainer.train()
        trainer.save_model(str(run.path_for(ADAPTER_DIR)))
        tokenizer.save_pretrained(str(run.path_for(ADAPTER_DIR)))
        history = trainer.state.log_history
        run.write_text("log_history.json", json.dumps(history, indent=1, default=float) + "\n")
        meta = {
            "base_model": cfg.model.name_or_path,
            "adapter": cfg.model.lora.enabled,
            "allow_tie": cfg.grpo.allow_tie,
            "max_prompt_length": cfg.grpo.max_prompt_length,
            "max_completion_length": cfg.grpo.max_completion_length,
            "pairs": len(pairs),
            "steps": trainer.state.global_step,
        }
        run.write_text(JUDGE_META, json.dumps(meta, indent=1) + "\n")
        if not cfg.grpo.save_steps:  # nothing kept there but TRL's scratch files; adapter/ is the output
            shutil.rmtree(run.dir / "trainer", ignore_errors=True)
    seen = _mean_rewards(history)
    return TrainResult(cfg.run_dir, trainer.state.global_step, seen[0] if seen else None, seen[-1] if seen else None, time.time() - started)


# -- evaluation --------------------------------------------------------------------------
VERDICT_COLUMNS = ("A", "B", TIE, UNKNOWN)


def load_trained_judge(run_dir: str | Path, cfg: RunConfig):
    """(model, tokenizer, cfg) of a ``prefkit judge train`` run: its base model with the
    adapter merged in, and the run's config (``cfg``'s evaluation settings kept)."""
    from prefkit.config import build_config
    import yaml

    run_dir = Path(run_dir)
    meta_path = run_dir / JUDGE_META
    if not meta_path.is_file():
        raise InputError(f"not a judge run folder (no {JUDGE_META}; train one with prefkit judge train)", file=run_dir)
    meta = json.loads(meta_path.read_text())
    trained = build_config(yaml.safe_load((run_dir / "config.yaml").read_text()), source=str(run_dir / "config.yaml"))
    trained.grpo = trained.grpo.model_copy(update={k: getattr(cfg.grpo, k) for k in ("eval_samples", "eval_temperature", "eval_smoothing")})
    trained.train = trained.train.model_copy(update={"device": cfg.train.device, "eval_batch_size": cfg.train.eval_batch_size})
    adapter = run_dir / ADAPTER_DIR
    if meta.get("adapter"):
        from peft import PeftModel

        model, tokenizer = load_judge_model(trained)
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    else:
        trained.model = trained.model.model_copy(update={"name_or_path": str(adapter), "tokenizer": None})
        model, tokenizer = load_judge_model(trained)
    return model, tokenizer, trained


def _device(cfg: RunConfig):
    import torch

    return torch.device("cpu" if _device_flags(cfg)["use_cpu"] else "cuda")


def sample_verdicts(model, tokenizer, messages: list[list[dict]], cfg: RunConfig, seed: int = 0) -> list[list[str]]:
    """``grpo.eval_samples`` sampled completions for each chat prompt (length-sorted batches)."""
    import torch

    from prefkit.progress import progress_bar

    g = cfg.grpo
    device = _device(cfg)
    model.to(device).eval()
    texts = [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in messages]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    order = np.argsort([len(x) for x in ids], kind="stable")
    batch = max(1, cfg.train.eval_batch_size // g.eval_samples)
    out: list[list[str]] = [[] for _ in messages]
    torch.manual_seed(seed)
    with progress_bar(total=len(messages), desc="judging", unit="prompt") as bar:
        for start in range(0, len(order), batch):
            rows = order[start : start + batch]
            enc = tokenizer.pad({"input_ids": [ids[i] for i in rows]}, padding=True, return_tensors="pt", padding_side="left").to(device)
            with torch.no_grad():
                gen = model.generate(
                    **enc,
                    do_sample=True,
                    temperature=g.eval_temperature,
                    top_p=g.top_p,
                    max_new_tokens=g.max_completion_length,
                    num_return_sequences=g.eval_samples,
                    pad_token_id=tokenizer.pad_token_id,
                    **dict(g.generation_kwargs),
                )
            decoded = tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            for j, row in enumerate(rows):
                out[row] = decoded[j * g.eval_samples : (j + 1) * g.eval_samples]
            bar.update(len(rows))
    return out


def verdict_counts(given: list[list[str]], swapped: list[list[str]]) -> np.ndarray:
    """Counts ``(pairs, 2 orders, [A, B, tie, unknown])`` of parsed verdicts, the swapped
    order's A and B mapped back to the pair as given."""
    counts = np.zeros((len(given), 2, len(VERDICT_COLUMNS)), dtype=int)
    for i, (g0, g1) in enumerate(zip(given, swapped, strict=True)):
        for text in g0:
            counts[i, 0, VERDICT_COLUMNS.index(parse_verdict(text))] += 1
        for text in g1:
            counts[i, 1, VERDICT_COLUMNS.index(SWAPPED[parse_verdict(text)])] += 1
    return counts


def verdict_probabilities(counts: np.ndarray, smoothing: float) -> np.ndarray:
    """P(A), P(B), P(tie) per pair: parsed verdicts of both orders, each count plus ``smoothing``."""
    known = counts[..., :3].sum(axis=1).astype(float)
    return (known + smoothing) / (known.sum(axis=1, keepdims=True) + 3 * smoothing)


def flip_rates(counts: np.ndarray) -> np.ndarray:
    """Per pair: the chance that a parsed verdict asked as given and one asked swapped
    (mapped back) disagree; NaN where either order has no parsed verdict."""
    known = counts[..., :3].astype(float)
    n = known.sum(axis=2)
    valid = (n > 0).all(axis=1)
    shares = np.divide(known, n[..., None], out=np.zeros_like(known), where=n[..., None] > 0)
    agree = (shares[:, 0] * shares[:, 1]).sum(axis=1)
    return np.where(valid, 1.0 - agree, np.nan)


def _accuracy(counts: np.ndarray, label_cls: np.ndarray) -> float:
    total = counts.sum()
    return float(counts[np.arange(len(counts)), :, label_cls].sum() / total) if total else math.nan


def _majority_accuracy(counts: np.ndarray, label_cls: np.ndarray) -> float:
    """Accuracy of each pair's most frequent parsed verdict (both orders); a tie between
    verdicts (or none parsed) is broken at random, so it earns 1 / (number tied) in expectation."""
    if not len(counts):
        return math.nan
    known = counts[..., :3].sum(axis=1)
    top = known == known.max(axis=1, keepdims=True)
    return float((top[np.arange(len(top)), label_cls] / top.sum(axis=1)).mean())


def judge_metrics(pairs: pd.DataFrame, counts: np.ndarray, smoothing: float) -> dict:
    """Accuracy (overall, by label, by strength), majority accuracy, flip rate, unparseable
    share, first-position share, 3-way log loss (see the module docstring)."""
    from prefkit import metrics

    targets = pairs[list(LABELS)].to_numpy(dtype=float)
    label_cls = targets.argmax(axis=1)
    probs = verdict_probabilities(counts, smoothing)
    flips = flip_rates(counts)
    total = counts.sum()
    shown_first = counts[:, 0, 0].sum() + counts[:, 1, 1].sum()  # "A" as shown: A as given, B when swapped
    known = counts[..., :3].sum()
    out = {
        "pairs": int(len(pairs)),
        "samples_per_order": int(counts[0, 0].sum()) if len(counts) else 0,
        "accuracy": _accuracy(counts, label_cls),
        "majority_accuracy": _majority_accuracy(counts, label_cls),
        "log_loss": metrics.log_loss(targets, probs) if len(counts) else math.nan,
        "flip_rate": float(np.nanmean(flips)) if np.isfinite(flips).any() else math.nan,
        "flip_pairs": int(np.isfinite(flips).sum()),  # pairs with a parsed verdict in both orders
        "unparseable": float(counts[..., 3].sum() / total) if total else math.nan,
        "first_position_share": float(shown_first / known) if known else math.nan,
        "by_label": {},
        "by_strength": {},
    }
    for cls, name in enumerate(VERDICT_OF_CLASS):
        rows = label_cls == cls
        if rows.any():
            out["by_label"][name] = {"pairs": int(rows.sum()), "accuracy": _accuracy(counts[rows], label_cls[rows])}
    strengths = pair_strengths(pairs)
    if np.isfinite(strengths).any():
        levels = np.where(np.isfinite(strengths), np.round(np.abs(np.nan_to_num(strengths))), np.nan)
        for level in sorted(set(levels[np.isfinite(levels)])):
            rows = levels == level
            out["by_strength"][str(int(level))] = {"pairs": int(rows.sum()), "accuracy": _accuracy(counts[rows], label_cls[rows])}
    return out


@dataclass
class EvalResult:
    metrics: dict
    predictions: pd.DataFrame
    completions: list[dict]


def evaluate_judge(model, tokenizer, pairs: pd.DataFrame, cfg: RunConfig, seed: int = 0) -> EvalResult:
    """Sample, parse and score the judge on labelled ``pairs`` (both orders)."""
    label_verdicts(pairs)
    prompts = JudgePrompts(tokenizer, cfg.grpo.max_prompt_length, cfg.grpo.allow_tie)
    given, swapped = prompts.for_pairs(pairs)
    texts = sample_verdicts(model, tokenizer, given + swapped, cfg, seed=seed)
    n = len(pairs)
    counts = verdict_counts(texts[:n], texts[n:])
    probs = verdict_probabilities(counts, cfg.grpo.eval_smoothing)
    ids = pairs["id"].astype(str).tolist()
    predictions = pd.DataFrame({"id": ids, "p_a": probs[:, 0], "p_b": probs[:, 1], "p_tie": probs[:, 2]})
    for k, name in enumerate(("a", "b", "tie", "unknown")):
        predictions[f"n_{name}"] = counts[..., k].sum(axis=1)
    predictions["flip"] = flip_rates(counts)
    completions = [
        {"id": ids[i % n], "order": i // n, "sample": s, "verdict": parse_verdict(t), "text": t}
        for i, samples in enumerate(texts)
        for s, t in enumerate(samples)
    ]
    return EvalResult(judge_metrics(pairs, counts, cfg.grpo.eval_smoothing), predictions, completions)


def write_evaluation(result: EvalResult, out_dir: str | Path, *, force: bool = False) -> Path:
    """metrics.json, predictions.csv and completions.jsonl in ``out_dir`` (one unit)."""
    from prefkit.rundir import RunFolder

    with RunFolder(out_dir, kind="judge_eval", force=force).open() as run:
        run.write_text("metrics.json", json.dumps(result.metrics, indent=1, default=float) + "\n")
        run.write_text("predictions.csv", result.predictions.to_csv(index=False))
        run.write_text("completions.jsonl", "".join(json.dumps(c, ensure_ascii=False) + "\n" for c in result.completions))
    return Path(out_dir)
