"""Tasks: the small part of a learned model that differs from the others.

A task says how rows of a table become model inputs (token id sequences, targets and
weights), which head it puts on the backbone, which loss trains it, how raw outputs become
predictions (and how a prediction of the A/B-swapped input maps back), which metric the
engine watches, and how predictions become rows of ``oof.csv`` / ``test.csv``. Everything
else (folds, accelerate, batching, evaluation, checkpoints, resume, files) belongs to the
engine (:mod:`prefkit.train.engine`) and the prediction path (:mod:`prefkit.infer.predict`).

A new model kind is a module here with a :class:`~prefkit.tasks.base.Task` subclass,
one line in :data:`TASKS`, a head registration in :mod:`prefkit.models.heads` (when it needs
a new one) and a config entry (``task: <name>``). Import-light: no torch at import time.
"""

from __future__ import annotations

from prefkit.tasks.base import Encoded, Task
from prefkit.tasks.item_scorer import ItemScorer
from prefkit.tasks.pair3 import PairClassification
from prefkit.tasks.regression import TextRegression

TASKS: dict[str, type[Task]] = {
    PairClassification.name: PairClassification,
    ItemScorer.name: ItemScorer,
    TextRegression.name: TextRegression,
}


def get_task(name: str, cfg=None) -> Task:
    """The task registered as ``name`` (validated in the config, so a KeyError is a bug),
    set up by the run config ``cfg`` (its task section; defaults when None)."""
    return TASKS[name](cfg)


__all__ = ["TASKS", "Encoded", "Task", "get_task"]
