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


HEADS = {"pair3": pair3, "scalar": scalar}


def head_spec(name: str) -> HeadSpec:
    from prefkit.config import one_of

    return HEADS[one_of(name, sorted(HEADS), "head")]()
