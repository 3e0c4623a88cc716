"""Zero/few-shot annotation of pairs by a local causal LM (``prefkit judge annotate``).

Each pair is shown to the model in the judge's prompt (:mod:`prefkit.judge.prompts`); the
verdict is read from the **next-token probabilities of the option tokens** at the end of
the prompt, a softmax over those tokens' logits only (nothing is generated, so nothing is
unparseable). Every pair is asked twice, as given and with A and B swapped (adjacent in the
same batch), and the two answers are averaged after mapping the swapped one back to A/B:
a judge's preference for a position then cancels, and how much it had is measured:

* ``flip_rate``: the share of pairs whose argmax verdict changes with the order;
* ``mean_p_first``: the mean probability of the option of the side shown first (over both
  orders; 0.5 without ties, or the tie rest split evenly, for a judge without a position bias).

Batches come from the one planner (:class:`~prefkit.text.batching.BatchPlan`, length
sorted) through the prediction path (:func:`prefkit.infer.predict.predict_outputs`), on a
CPU or a GPU. :class:`OptionLogits` makes any ``AutoModelForCausalLM`` (a folder, or a GGUF
file through ``model.gguf_file``) a classifier over the option tokens: the logits at each
row's last non-pad position, only those positions through the output layer.

The run folder (``<output_dir>/<name>``, kind ``judge``) holds:

* ``oof.csv`` / ``test.csv`` in the stacker's format (:mod:`prefkit.predictions`): nothing is
  trained, so every training row is out of fold; its fold is the run's (``folds.csv``), and
  ``prefkit stack`` takes the folder as one more base model;
* ``annotations.csv`` (and ``test_annotations.csv``): ``id, p_a, p_b, p_tie`` and the
  per-order probabilities ``p_a_ab, p_b_ab, p_tie_ab`` (A shown first), ``p_a_ba, p_b_ba,
  p_tie_ba`` (B shown first, mapped back to A/B), ``flipped``, and the item names;
* ``annotated_pairs.parquet`` where the pairs name their items (``model_a``/``model_b`` or
  ``item_a``/``item_b``): the pair table with the judge's probabilities as its labels, for
  ``prefkit scores fit parquet``; with ``annotate.scores`` the Bradley-Terry fit itself in ``scores/``;
* ``metrics.json`` (position bias, log loss against the labels where there are labels,
  time, device), ``config.yaml``, ``annotate.log``, ``run.json``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch

from prefkit.config import ModelConfig, RunConfig, save_config
from prefkit.errors import InputError
from prefkit.judge.prompts import JudgePrompt, JudgeRenderer
from prefkit.predictions import OOF_FILE, TEST_FILE, make_predictions, write_predictions
from prefkit.rundir import RunFolder, atomic_write_parquet
from prefkit.schema import LABELS

log = logging.getLogger("prefkit.judge")

ITEM_COLUMNS = (("item_a", "item_b"), ("model_a", "model_b"))


# -- the model ----------------------------------------------------------------------------
def load_causal_lm(model_cfg: ModelConfig, device: str):
    """``(model, tokenizer)``: the causal LM of ``model_cfg`` (a folder, a hub name, or
    ``model.gguf_file`` dequantised) in eval mode on ``device``; right padding."""
    from transformers import AutoModelForCausalLM

    from prefkit.models.checks import one_line_load_report, resolve_model_path
    from prefkit.models.transformer import _source_error, load_tokenizer, torch_dtype

    tokenizer = load_tokenizer(model_cfg)
    kwargs: dict = {"dtype": torch_dtype(model_cfg.dtype)}
    if model_cfg.attn_implementation:
        kwargs["attn_implementation"] = model_cfg.attn_implementation
    if model_cfg.gguf_file:
        from prefkit.pretrained import require_gguf

        require_gguf()
        kwargs["gguf_file"] = model_cfg.gguf_file
    if device != "cpu":
        kwargs["device_map"] = {"": device}  # straight onto the GPU (a GGUF model is not moved afterwards)
    try:
        source = resolve_model_path(model_cfg.name_or_path)
        with one_line_load_report(lambda text: log.info(text)):
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as err:
        raise _source_error(model_cfg.name_or_path, err) from None
    vocab = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > vocab:
        raise InputError(f"the tokenizer has {len(tokenizer)} tokens but the model's embedding only {vocab}", file=model_cfg.name_or_path)
    return model.eval(), tokenizer


class OptionLogits(torch.nn.Module):
    """A causal LM read as a classifier over ``option_ids``: the next-token logits of those
    tokens at each row's last non-pad position (right-padded batches). Only the distinct last
    positions of a batch go through the output layer (``logits_to_keep``), so a large
    vocabulary costs a few rows, not the whole sequence."""

    def __init__(self, lm, option_ids: list[int]):
        super().__init__()
        self.lm = lm
        self.register_buffer("option_ids", torch.as_tensor(option_ids, dtype=torch.long), persistent=False)
        import inspect

        self.keeps_positions = "logits_to_keep" in inspect.signature(lm.forward).parameters

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        last = attention_mask.long().sum(dim=1) - 1
        rows = torch.arange(len(last), device=last.device)
        kwargs = {"use_cache": False}
        if self.keeps_positions:
            keep = torch.unique(last)  # sorted
            logits = self.lm(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep, **kwargs).logits
            picked = logits[rows, torch.searchsorted(keep, last)]
        else:
            picked = self.lm(input_ids=input_ids, attention_mask=attention_mask, **kwargs).logits[rows, last]
        return SimpleNamespace(logits=picked[:, self.option_ids.to(picked.device)])


def option_probabilities(logits: np.ndarray) -> np.ndarray:
    """(n, 3) probabilities (first side, second side, tie) from option logits (n, 2 or 3):
    a softmax over the option tokens; the tie column is 0 where no tie was offered."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    return p if p.shape[1] == 3 else np.column_stack([p, np.zeros(len(p))])


# -- annotating ---------------------------------------------------------------------------
@dataclass
class Annotations:
    """The judge's probabilities (A, B, tie) of every pair: ``ab`` with A shown first, ``ba``
    with B shown first (already mapped back to A/B; None when one order was asked)."""

    ids: list[str]
    ab: np.ndarray
    ba: np.ndarray | None
    tokens: np.ndarray | None = None  # input length per pair (tokens, one order)

    @property
    def probs(self) -> np.ndarray:
        return self.ab if self.ba is None else 0.5 * (self.ab + self.ba)

    @property
    def flipped(self) -> np.ndarray | None:
        return None if self.ba is None else self.ab.argmax(axis=1) != self.ba.argmax(axis=1)

    def position_bias(self) -> dict:
        """``flip_rate`` (share of pairs whose argmax verdict changes with the order) and
        ``mean_p_first`` (mean probability of the side shown first, over both orders)."""
        first = [self.ab[:, 0]] + ([] if self.ba is None else [self.ba[:, 1]])
        out = {"mean_p_first": float(np.mean(np.concatenate(first))) if len(self.ab) else float("nan")}
        out["mean_p_first_ab"] = float(self.ab[:, 0].mean()) if len(self.ab) else float("nan")
        if self.ba is not None:
            out["mean_p_first_ba"] = float(self.ba[:, 1].mean()) if len(self.ab) else float("nan")
            out["flip_rate"] = float(self.flipped.mean()) if len(self.ab) else float("nan")
        return out


def annotate_pairs(
    model,
    renderer: JudgeRenderer,
    pairs: pd.DataFrame,
    *,
    batch_size: int = 8,
    max_tokens: int | None = None,
    both_orders: bool = True,
    device=None,
    mixed_precision: str = "no",
    progress: bool = False,
    desc: str = "annotate",
) -> Annotations:
    """The judge's verdict probabilities of every pair of ``pairs`` (see the module notes).
    ``batch_size``/``max_tokens``: sequences (a pair asked in both orders is two) and padded
    tokens per batch."""
    from prefkit.infer.predict import predict_outputs
    from prefkit.text.batching import BatchPlan

    ids, ids_swapped = renderer.render_pairs(pairs, swapped=both_orders)
    # a pair's two orders have the same length, so the length-sorted batches keep them together
    seqs = [s for pair in zip(ids, ids_swapped) for s in pair] if both_orders else ids
    k = len(renderer.option_ids)
    logits = predict_outputs(
        OptionLogits(model, renderer.option_ids),
        seqs,
        renderer.tokenizer.pad_token_id,
        BatchPlan(batch_size=batch_size, max_tokens=max_tokens),
        device=device,
        mixed_precision=mixed_precision,
        progress=progress,
        desc=desc,
    )
    logits = logits.reshape(len(pairs), -1) if len(pairs) else np.zeros((0, (2 if both_orders else 1) * k))
    ab = option_probabilities(logits[:, :k])
    ba = option_probabilities(logits[:, k:])[:, [1, 0, 2]] if both_orders else None  # B was shown first
    return Annotations([str(i) for i in pairs["id"]], ab, ba, np.asarray([len(s) for s in ids]))


def item_columns(pairs: pd.DataFrame) -> tuple[str, str] | None:
    for cols in ITEM_COLUMNS:
        if all(c in pairs.columns for c in cols):
            return cols
    return None


def annotation_table(pairs: pd.DataFrame, ann: Annotations) -> pd.DataFrame:
    """One row per pair: the combined and per-order probabilities, the flip, the item names."""
    table = pd.DataFrame({"id": ann.ids})
    for k, label in enumerate(LABELS):
        table[label] = ann.probs[:, k]
    for suffix, probs in (("ab", ann.ab), ("ba", ann.ba)):
        if probs is not None:
            for k, label in enumerate(LABELS):
                table[f"{label}_{suffix}"] = probs[:, k]
    if ann.flipped is not None:
        table["flipped"] = ann.flipped.astype(int)
    cols = item_columns(pairs)
    if cols:
        for c in cols:
            table[c] = pairs[c].astype(str).to_numpy()
    return table


def annotated_pairs(pairs: pd.DataFrame, ann: Annotations) -> pd.DataFrame:
    """``pairs`` with the judge's probabilities as labels, one comparison each (weight 1):
    the input of the Bradley-Terry fitter (:func:`prefkit.scores.data.from_pair_table`)."""
    out = pairs.copy()
    out[list(LABELS)] = ann.probs
    out["weight"] = 1.0
    return out


def fit_item_scores(pairs: pd.DataFrame, ann: Annotations, ties: str = "davidson"):
    """Bradley-Terry item scores (:func:`prefkit.scores.bt.fit`) from the annotations."""
    from prefkit.scores.bt import fit
    from prefkit.scores.data import from_pair_table
    from prefkit.scores.intervals import graph_components

    comp = from_pair_table(annotated_pairs(pairs, ann), source="annotations")
    n_parts, _ = graph_components(comp)
    if n_parts > 1:  # e.g. a small subset of the pairs: scores comparable within each part only
        log.info("the annotated comparison graph has %d components: scores centred within each", n_parts)
    return comp, fit(comp, ties=ties, per_component=n_parts > 1)


def label_metrics(pairs: pd.DataFrame, ann: Annotations) -> dict | None:
    """Log loss and accuracy of the annotations against the pairs' labels (where labelled):
    weighted (``weight``, e.g. votes per pair) and per pair, combined and per order."""
    from prefkit.metrics import log_loss, summary

    labels = pairs[list(LABELS)].to_numpy(dtype=float)
    known = ~np.isnan(labels).any(axis=1)
    if not known.any():
        return None
    y, w = labels[known], pairs["weight"].to_numpy(dtype=float)[known]
    out = {"weighted": summary(y, ann.probs[known], w), "pair_log_loss": log_loss(y, ann.probs[known])}
    out["log_loss_ab"] = log_loss(y, ann.ab[known], w)
    if ann.ba is not None:
        out["log_loss_ba"] = log_loss(y, ann.ba[known], w)
    return out


# -- the command --------------------------------------------------------------------------
@dataclass
class AnnotateResult:
    run_dir: Path
    train: Annotations
    test: Annotations | None
    metrics: dict


def _subset(pairs: pd.DataFrame | None, max_rows: int | None, seed: int) -> pd.DataFrame | None:
    """A seeded random ``max_rows`` of ``pairs``, in file order (the first rows of a file
    often share one prompt)."""
    if pairs is None or max_rows is None or len(pairs) <= max_rows:
        return pairs
    keep = np.sort(np.random.default_rng(seed).choice(len(pairs), size=max_rows, replace=False))
    return pairs.iloc[keep].reset_index(drop=True)


def run_annotate(cfg: RunConfig, force: bool = False, echo=print) -> AnnotateResult:
    """Annotate the run's training pairs (and test pairs) and write the run folder."""
    from prefkit.data.folds import folds_for
    from prefkit.data.run_data import load_run_data
    from prefkit.models.checks import check_device
    from prefkit.models.transformer import check_model_sources

    ac = cfg.annotate
    JudgePrompt.from_config(ac)  # a bad template is refused before any work
    device = check_device(ac.device)
    check_model_sources(cfg.model)
    pairs, test_pairs = load_run_data(cfg)
    pairs, test_pairs = _subset(pairs.reset_index(drop=True), ac.max_rows, cfg.seed), _subset(test_pairs, ac.max_rows, cfg.seed)
    folds = folds_for(cfg, pairs)
    prompt = JudgePrompt.from_config(ac, pairs)

    with RunFolder(cfg.run_dir, kind="judge", force=force).open() as run:
        from prefkit.features.feature_model import run_logging

        handler = run_logging(run.dir, "annotate.log")
        try:
            result = _annotate_into(run.dir, cfg, prompt, pairs, test_pairs, folds, device, echo)
        finally:
            logging.getLogger("prefkit").removeHandler(handler)
            handler.close()
    result.run_dir = cfg.run_dir
    return result


def _annotate_into(run_dir: Path, cfg: RunConfig, prompt: JudgePrompt, pairs, test_pairs, folds, device: str, echo) -> AnnotateResult:
    from prefkit.data.folds import save_fold_map

    ac = cfg.annotate
    save_config(cfg, run_dir)
    save_fold_map(pairs["id"], folds, run_dir / "folds.csv")
    t0 = time.perf_counter()
    model, tokenizer = load_causal_lm(cfg.model, device)
    renderer = JudgeRenderer(tokenizer, cfg.render, prompt)
    options = ", ".join(f"{o!r}={t!r}" for o, t in zip(prompt.options, tokenizer.convert_ids_to_tokens(renderer.option_ids)))
    log.info("judge %s (%s template, chat template %s), options %s, max length %d, on %s",
             cfg.model.name_or_path, prompt.kind, "on" if renderer.uses_chat_template else "off", options, cfg.render.max_length, device)  # fmt: skip
    if len(pairs):  # the first input, decoded: a formatting mistake shows at once
        log.info("first input:\n%s", renderer.decode(renderer.render_pairs(pairs.iloc[:1], swapped=False)[0][0]))
    loaded = time.perf_counter()
    run_kwargs = {"batch_size": ac.batch_size, "max_tokens": ac.max_tokens, "both_orders": ac.both_orders,
                  "device": device, "mixed_precision": ac.mixed_precision, "progress": True}  # fmt: skip
    train = annotate_pairs(model, renderer, pairs, desc="annotate", **run_kwargs)
    test = annotate_pairs(model, renderer, test_pairs, desc="annotate test", **run_kwargs) if test_pairs is not None else None
    seconds = time.perf_counter() - loaded

    write_predictions(make_predictions(train.ids, train.probs, cfg.name, folds), run_dir / OOF_FILE)
    annotation_table(pairs, train).to_csv(run_dir / "annotations.csv", index=False, float_format="%.8g")
    if test is not None:
        write_predictions(make_predictions(test.ids, test.probs, cfg.name, -1), run_dir / TEST_FILE)
        annotation_table(test_pairs, test).to_csv(run_dir / "test_annotations.csv", index=False, float_format="%.8g")
    n_pairs = len(pairs) + (len(test_pairs) if test_pairs is not None else 0)
    metrics = {
        "model": cfg.name,
        "kind": "judge",
        "judge": cfg.model.name_or_path,
        "template": prompt.kind,
        "options": list(prompt.options),
        "chat_template": renderer.uses_chat_template,
        "max_length": cfg.render.max_length,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "n_pairs": len(pairs),
        "n_test": len(test_pairs) if test_pairs is not None else 0,
        "orders": 2 if ac.both_orders else 1,
        "mean_tokens": float(train.tokens.mean()) if len(pairs) else 0.0,
        "position_bias": train.position_bias(),
        "labels": label_metrics(pairs, train),
        "seconds_loading": round(loaded - t0, 1),
        "seconds_annotating": round(seconds, 1),
        "pairs_per_s": round(n_pairs / max(seconds, 1e-9), 2),
    }
    if test is not None:
        metrics["test_position_bias"] = test.position_bias()
    if item_columns(pairs) is not None:
        atomic_write_parquet(annotated_pairs(pairs, train), run_dir / "annotated_pairs.parquet", kind="pairs")
        if ac.scores:
            metrics["scores"] = _write_scores(run_dir / "scores", pairs, train, ac.score_ties)
    elif ac.scores:
        raise InputError("annotate.scores: the pairs name no items (model_a/model_b or item_a/item_b columns)")
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    bias = metrics["position_bias"]
    echo(f"annotated {len(pairs)} pairs{f' + {len(test_pairs)} test pairs' if test is not None else ''} x {metrics['orders']} order(s) "
         f"in {seconds:.1f} s ({metrics['pairs_per_s']:.2f} pairs/s on {device})")  # fmt: skip
    if "flip_rate" in bias:
        echo(f"position bias: flip rate {bias['flip_rate']:.4f}, mean P(first shown) {bias['mean_p_first']:.4f}")
    if metrics["labels"]:
        lab = metrics["labels"]
        echo(f"against the labels: log loss {lab['weighted']['log_loss']:.4f} (per pair {lab['pair_log_loss']:.4f}), accuracy {lab['weighted']['accuracy']:.4f}")
    return AnnotateResult(run_dir, train, test, metrics)


def _write_scores(out: Path, pairs: pd.DataFrame, ann: Annotations, ties: str) -> dict:
    from prefkit.scores.report import write_fit

    comp, result = fit_item_scores(pairs, ann, ties)
    write_fit(result, out, data_hash=comp.data_hash(), extra={"source": "judge annotations"}, title=f"judge annotations: {ties}")
    return {"items": comp.n_items, "ties": ties, "file": "scores/scores.csv"}
