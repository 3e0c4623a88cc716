"""The Siamese item scorer: one scalar s(prompt, item) per item, trained on pairs.

Both items of a pair go through the same backbone in one forward pass (``Encoded.per_row=2``,
adjacent in a padded batch or, for decoders, packed end to end), and the pair's outputs are
s(A) - s(B): antisymmetric by construction (swap the items, the difference changes sign).

Ties (``scorer.ties``):

* ``davidson`` (default): P(A) : P(B) : P(tie) = e^(d/2) : e^(-d/2) : nu, the Davidson model
  with pA = e^(s_A), pB = e^(s_B) (P(tie) = nu sqrt(pA pB) / (pA + pB + nu sqrt(pA pB))). The
  tie parameter is learned per pair (head ``scalar_tie``: a tie logit per item, log nu = their
  mean, so it is symmetric) or fixed by ``scorer.tie_nu``. Predictions are its three
  probabilities; the metric is the 3-way log loss.
* ``half``: Bradley-Terry on P(A beats B) = p_a + p_tie / 2 (a tie is half a win), as reward
  models are usually trained. It learns no tie probability: the three prediction columns are
  the Davidson probabilities at the learned difference with ``scorer.tie_nu`` (none: p_tie = 0
  and p_a = sigmoid(d)); the metric is the binary log loss of P(A beats B).

Soft targets (vote shares, sigmoid(gamma (y_A - y_B)) from absolute scores) train as given.
A ``margin`` column (``scorer.margin``) asks the winner to win by that much (TRL's margin);
``scorer.center_rewards_coefficient`` adds TRL's centring term coef * mean((s_A + s_B)^2).

Long items are head-tail truncated (the renderer's budget: ``render.max_length`` per item,
``render.prompt_share`` of it offered to the prompt), never dropped. Prediction files carry
``score_a`` and ``score_b`` beside ``p_a, p_b, p_tie`` (the stacker uses them).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from prefkit.errors import ConfigError
from prefkit.schema import label_matrix
from prefkit.tasks.base import Encoded, Task
from prefkit.text.render import DECODER_MARKERS, PairRenderer, allocate, field_text, head_tail

SCORE_COLUMNS = ("score_a", "score_b")
ITEM_MARKER = "\n\n<response>:\n"  # decoders: <prompt>:\n P <response>:\n X <eos>


class ItemRenderer(PairRenderer):
    """One item (optionally with its prompt) as one token sequence under ``render.max_length``:
    ``[CLS] prompt [SEP] item [SEP]`` (encoders) or marked text ending in EOS (decoders, read
    at the last token). The prompt is offered ``render.prompt_share`` of the budget; what a
    short field leaves flows to the other; fields longer than their allowance are head-tail
    truncated."""

    def __init__(self, tokenizer, cfg=None, with_prompt: bool = True):
        if cfg is not None and cfg.template == "chat":
            raise ConfigError("task item_scorer renders plain text: set render.template=plain")
        super().__init__(tokenizer, cfg)
        self.with_prompt = with_prompt
        if self.style == "encoder":
            cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
            self.segments = ([cls_id], [sep_id], [sep_id]) if with_prompt else ([cls_id], [], [sep_id])
        else:
            lead = self._leading_specials()
            if with_prompt:
                self.segments = (lead + self._encode(DECODER_MARKERS[0]), self._encode(ITEM_MARKER), [tokenizer.eos_token_id])
            else:
                self.segments = (lead, [], [tokenizer.eos_token_id])
        self.fixed_length = sum(len(s) for s in self.segments)
        self.content_budget = self.cfg.max_length - self.fixed_length

    def assemble_item(self, prompt_ids: list[int], item_ids: list[int]) -> list[int]:
        prompt_ids = prompt_ids if self.with_prompt else []
        kp, ki, _ = allocate((len(prompt_ids), len(item_ids), 0), self.content_budget, self.cfg.prompt_share)
        hf, mk = self.cfg.head_fraction, self.marker
        s0, s1, s2 = self.segments
        out = s0 + head_tail(prompt_ids, kp, hf, mk) + s1 + head_tail(item_ids, ki, hf, mk) + s2
        assert len(out) <= self.cfg.max_length
        return out

    def render_items(self, prompts, items) -> list[list[int]]:
        """Ids of each item with its prompt (each a list of turns or a string)."""
        n = len(items)
        texts = [field_text(t) for t in prompts] if self.with_prompt else []
        ids = self.tokenize_texts(texts + [field_text(t) for t in items])
        prompt_ids = ids[:n] if self.with_prompt else [[]] * n
        return [self.assemble_item(p, x) for p, x in zip(prompt_ids, ids[-n:] if n else [])]


def _stack_columns(columns):
    """Columns side by side, torch tensors or numpy arrays alike."""
    if isinstance(columns[0], np.ndarray):
        return np.stack(columns, axis=1)
    import torch

    return torch.stack(columns, dim=1)


def davidson_probabilities(outputs: np.ndarray) -> np.ndarray:
    """(p_a, p_b, p_tie) = softmax(d/2, -d/2, log nu) from pair outputs (d, log nu, ...)."""
    z = np.stack([0.5 * outputs[:, 0], -0.5 * outputs[:, 0], outputs[:, 1]], axis=1)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


class ItemScorer(Task):
    name = "item_scorer"
    metric = "log_loss"
    output_columns = ("p_a", "p_b", "p_tie", *SCORE_COLUMNS)
    config_section = "scorer"

    def __init__(self, cfg=None):
        super().__init__(cfg)
        from prefkit.config import ScorerConfig

        self.settings = cfg.scorer if cfg is not None else ScorerConfig()
        davidson = self.settings.ties == "davidson"
        self.learned_tie = davidson and self.settings.tie_nu is None
        self.head = "scalar_tie" if self.learned_tie else "scalar"
        self.loss = "davidson" if davidson else "bradley_terry"
        self.metric = "log_loss" if davidson else "bce"
        # log nu when the head does not learn it; -inf: no tie is predicted
        self.fixed_log_nu = math.log(self.settings.tie_nu) if self.settings.tie_nu else -math.inf

    def loss_function(self, name: str):
        from functools import partial

        from prefkit.train.losses import LOSSES

        if name in ("bradley_terry", "davidson"):
            return partial(LOSSES[name], center_coefficient=self.settings.center_rewards_coefficient)
        return LOSSES[name]

    # -- inputs ----------------------------------------------------------------------------
    def renderer(self, tokenizer, render_cfg):
        return ItemRenderer(tokenizer, render_cfg, with_prompt=self.settings.with_prompt)

    def encode(self, renderer, table: pd.DataFrame, labels: bool = True, swapped: bool = False) -> Encoded:
        n = len(table)
        items = renderer.render_items(list(table["prompt"]) * 2, list(table["response_a"]) + list(table["response_b"]))
        a, b = items[:n], items[n:]
        seqs = [s for pair in zip(a, b) for s in pair]
        seqs_swapped = [s for pair in zip(b, a) for s in pair] if swapped else None
        if not labels:
            return Encoded(seqs, seqs_swapped, per_row=2)
        margin = np.zeros(n)
        if self.settings.margin and "margin" in table:
            margin = pd.to_numeric(table["margin"], errors="coerce").fillna(0.0).to_numpy(dtype=float)
        targets = np.column_stack([label_matrix(table), margin])
        weights = table["weight"].to_numpy(dtype=float) if "weight" in table else np.ones(n)
        return Encoded(seqs, seqs_swapped, targets, weights, per_row=2)

    def encode_items(self, renderer, table: pd.DataFrame, text_column: str = "text", prompt_column: str | None = "prompt") -> Encoded:
        """Single items to score (one sequence per row): ``text_column``, with
        ``prompt_column`` when the table has it."""
        prompts = list(table[prompt_column]) if prompt_column and prompt_column in table else [""] * len(table)
        return Encoded(renderer.render_items(prompts, list(table[text_column])))

    def swap_targets(self, targets: np.ndarray) -> np.ndarray:
        return targets[:, [1, 0, 2, 3]]

    def hard_targets(self, targets: np.ndarray) -> np.ndarray:
        out = targets.copy()
        out[:, :3] = np.eye(3, dtype=targets.dtype)[targets[:, :3].argmax(axis=1)]
        return out

    # -- outputs ---------------------------------------------------------------------------
    def combine(self, outputs):
        """Outputs per item (2 per pair: score[, tie logit]) -> per pair
        (d = s_A - s_B, log nu, s_A, s_B)."""
        s_a, s_b = outputs[0::2, 0], outputs[1::2, 0]
        if outputs.shape[1] > 1:
            log_nu = 0.5 * (outputs[0::2, 1] + outputs[1::2, 1])  # symmetric in A and B
        else:
            log_nu = s_a * 0.0 + self.fixed_log_nu
        return _stack_columns([s_a - s_b, log_nu, s_a, s_b])

    def predictions(self, outputs: np.ndarray) -> np.ndarray:
        outputs = np.asarray(outputs, dtype=np.float64)
        return np.column_stack([davidson_probabilities(outputs), outputs[:, 2:4]])

    def unswap(self, predictions: np.ndarray) -> np.ndarray:
        return np.asarray(predictions)[:, [1, 0, 2, 4, 3]]

    def metrics(self, targets: np.ndarray, predictions: np.ndarray, weights: np.ndarray | None = None) -> dict:
        from prefkit.metrics import accuracy, log_loss

        t, p = targets[:, :3], predictions[:, :3]
        win = t[:, 0] + 0.5 * t[:, 2]
        p_win = np.clip(p[:, 0] + 0.5 * p[:, 2], 1e-12, 1 - 1e-12)
        bce = float(np.average(-(win * np.log(p_win) + (1 - win) * np.log(1 - p_win)), weights=weights))
        return {"log_loss": log_loss(t, p, weights), "bce": bce, "accuracy": accuracy(t, p, weights)}

    def prediction_frame(self, ids, predictions: np.ndarray, model: str, fold) -> pd.DataFrame:
        from prefkit.predictions import make_predictions

        frame = make_predictions(ids, predictions[:, :3], model, fold)
        for k, column in enumerate(SCORE_COLUMNS):
            frame[column] = predictions[:, 3 + k]
        return frame

    def plot_oof(self, targets: np.ndarray, predictions: np.ndarray, path, title: str) -> None:
        from prefkit.plots import reliability_diagram

        reliability_diagram(targets[:, :3], predictions[:, :3], path, title=title)

    def write_predictions(self, frame: pd.DataFrame, path) -> None:
        from prefkit.predictions import PRED_COLUMNS, atomic_write_csv, validate_predictions

        validate_predictions(frame, str(path))  # the stacker's format, with both scores beside it
        atomic_write_csv(frame[[*PRED_COLUMNS, *SCORE_COLUMNS]], path)

    def read_predictions(self, path) -> pd.DataFrame:
        from prefkit.predictions import read_predictions

        return read_predictions(path)
