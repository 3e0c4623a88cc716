"""Scores from comparisons: one score per item (a model, a document, an essay) fitted from
pairwise outcomes with Bradley-Terry (ties by Davidson or Rao-Kupper, or counted as half a
win), intervals, style covariates and a position term. NumPy/SciPy only (no torch).

* :mod:`prefkit.scores.data`: :class:`~prefkit.scores.data.Comparisons` and its builders
  from every prefkit reader, plus a simulator of BT/Davidson outcomes.
* :mod:`prefkit.scores.bt`: the fitter (:func:`~prefkit.scores.bt.fit`), Elo and
  smoothed win-rate baselines.
* :mod:`prefkit.scores.intervals`: sandwich and bootstrap intervals, connected components.
* :mod:`prefkit.scores.evaluate`: held-out comparison log loss.
"""
