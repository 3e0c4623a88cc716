"""Rewards for a generative judge, in TRL's reward-function form
``reward(prompts, completions, **columns) -> list[float]``.

TRL passes every dataset column as a keyword list aligned with ``completions`` (each
prompt repeated ``num_generations`` times). The judge dataset
(:func:`prefkit.judge.grpo.judge_records`) has these columns:

``label``     the verdict the label gives *in the order shown* (``A``, ``B``, ``tie``)
``strength``  the pair's preference strength (RM-Gallery ``preference_strength``; None: none)
``pair_key``  the same for a pair asked in its original order and swapped
``order``     0 = as in the data, 1 = A and B swapped

Rewards (names as in ``grpo.rewards`` of the config):

* ``correct``: 1 when the parsed verdict equals the label, else 0 (unknown earns 0).
* ``strength``: ``correct`` times a weight by preference strength, RM-Gallery's
  1.0 / 0.7 / 0.3 for strong / weak / no preference (``grpo.strength_weights``; strengths
  are read as magnitudes, above the largest key as the largest key; no strength: 1.0).
* ``format``: 1 when the output is exactly ``<analysis>...</analysis><preference>A|B|tie</preference>``
  (both tags, in order, nothing but the verdict in the second), else 0.
* ``consistency`` (J1's order consistency): the pair is also asked with A and B swapped
  and both orders are in the same generation batch (the trainer's sampler keeps them
  together). A completion earns ``correct`` times the share of the other order's
  completions that are correct: the chance that it and a random completion for the
  swapped pair are *both* right. A completion whose swapped twin is not in the batch gets
  no value (None, which TRL leaves out of the sum).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence

from prefkit.judge.parse import completion_text, parse_judgement, parse_verdict

RewardFunc = Callable[..., list]
# RM-Gallery's strength weights: strength 2 (strong) 1.0, 1 (weak) 0.7, 0 (none / tie) 0.3
RM_GALLERY_STRENGTH_WEIGHTS = {0: 0.3, 1: 0.7, 2: 1.0}


def _verdicts(completions) -> list[str]:
    return [parse_verdict(completion_text(c)) for c in completions]


def correct_reward(prompts, completions, label, **_) -> list[float]:
    """1.0 where the verdict is the label's, else 0.0."""
    return [float(v == y) for v, y in zip(_verdicts(completions), label, strict=True)]


def format_reward(prompts, completions, **_) -> list[float]:
    """1.0 where the output follows the template exactly, else 0.0."""
    return [float(parse_judgement(completion_text(c)).well_formed) for c in completions]


def strength_weight(strength, weights: Mapping[int, float] = RM_GALLERY_STRENGTH_WEIGHTS) -> float:
    """The reward weight of a pair of preference ``strength`` (its magnitude, rounded;
    beyond the largest key: that key's weight; missing or NaN: 1.0)."""
    if strength is None or (isinstance(strength, float) and math.isnan(strength)):
        return 1.0
    level = min(int(round(abs(float(strength)))), max(weights))
    known = [k for k in sorted(weights) if k <= level]
    return float(weights[known[-1]] if known else weights[min(weights)])


def make_strength_reward(weights: Mapping[int, float] = RM_GALLERY_STRENGTH_WEIGHTS) -> RewardFunc:
    """``correct`` times :func:`strength_weight` of the pair's ``strength`` column."""

    def strength_reward(prompts, completions, label, strength=None, **_) -> list[float]:
        strength = strength if strength is not None else [None] * len(completions)
        base = correct_reward(prompts, completions, label)
        return [r * strength_weight(s, weights) for r, s in zip(base, strength, strict=True)]

    return strength_reward


def consistency_reward(prompts, completions, label, pair_key, order, **_) -> list[float | None]:
    """``correct`` times the share of correct completions of the same pair in the other order."""
    correct = correct_reward(prompts, completions, label)
    by_order: dict[tuple, list[float]] = defaultdict(list)
    for key, o, c in zip(pair_key, order, correct, strict=True):
        by_order[(key, int(o))].append(c)
    out: list[float | None] = []
    for key, o, c in zip(pair_key, order, correct, strict=True):
        other = by_order.get((key, 1 - int(o)))
        out.append(None if not other else c * sum(other) / len(other))
    return out


def reward_functions(names: Sequence[str], strength_weights: Mapping[int, float] = RM_GALLERY_STRENGTH_WEIGHTS) -> list[RewardFunc]:
    """The reward callables named (``REWARDS``), in order."""
    unknown = [n for n in names if n not in REWARDS]
    if unknown:
        raise ValueError(f"unknown reward {unknown[0]!r}; known: {', '.join(REWARDS)}")
    return [make_strength_reward(strength_weights) if n == "strength" else REWARDS[n] for n in names]


REWARDS: dict[str, RewardFunc] = {
    "correct": correct_reward,
    "strength": make_strength_reward(),
    "format": format_reward,
    "consistency": consistency_reward,
}
