"""Output heads by name, as ``model.head`` (or a task's default) picks them.

A head is what sits on the backbone's pooled token (the first token for encoders, the
last for decoders): transformers' sequence-classification head with ``num_labels``
outputs. A new head is one function returning a :class:`HeadSpec` and one line in
:data:`HEADS`. Import-light: no torch here.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class HeadSpec:
    name: str
    num_labels: int
    problem_type: str  # transformers' config.problem_type ("single_label_classification" | "regression")
    labels: tuple[str, ...] = field(default_factory=tuple)  # names of the outputs, for the saved config


def pair3() -> HeadSpec:
    """Three logits: A wins, B wins, tie (softmax in the task)."""
    return HeadSpec("pair3", 3, "single_label_classification", ("a", "b", "tie"))


def scalar() -> HeadSpec:
    """One unbounded score per input (item scorers: a reward model's s(x))."""
    return HeadSpec("scalar", 1, "regression", ("score",))


def scalar_tie() -> HeadSpec:
    """A score and a tie logit per input: a Davidson item scorer's s(x) and its share of the
    pair's log tie parameter (log nu of a pair: the mean of its two items', symmetric)."""
    return HeadSpec("scalar_tie", 2, "regression", ("score", "tie"))


def regression(num_targets: int = 1) -> HeadSpec:
    """One unbounded output per target (text regression: essay traits, readability)."""
    return HeadSpec("regression", num_targets, "regression", tuple(f"target_{k}" for k in range(num_targets)))


HEADS = {"pair3": pair3, "scalar": scalar, "scalar_tie": scalar_tie, "regression": regression}


def head_spec(name: str) -> HeadSpec:
    """The head called ``name``; ``name:N`` for a head of N outputs (``regression:6``)."""
    from prefkit.config import one_of

    base, _, count = name.partition(":")
    make = HEADS[one_of(base, sorted(HEADS), "head")]
    if not count:
        return make()
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"head {name!r}: the output count after ':' must be a positive integer")
    return make(int(count))
