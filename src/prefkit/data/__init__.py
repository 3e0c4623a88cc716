"""Data readers: every supported file format into the internal schema (:mod:`prefkit.schema`).

Pair readers return a validated pair table, item readers an item table; each attaches a
:class:`ReadReport` as a JSON-safe dict in ``df.attrs["report"]`` (use :func:`get_report`).
"""

from prefkit.data.kaggle import (
    KaggleFiles,
    locate_kaggle_files,
    parse_turns,
    read_kaggle_csv,
    read_sample_submission,
    read_solution,
)
from prefkit.data.readers import (
    PAIR_FORMATS,
    SCORE_PRESETS,
    read_alpaca_eval,
    read_commonlit,
    read_comparisons,
    read_documents,
    read_fb3_ell,
    read_pairs,
    read_pairs_parquet,
    read_pairwise_jsonl,
    read_rm_gallery,
    read_scores_csv,
    read_votes,
)
from prefkit.data.report import ReadReport, get_report

__all__ = [
    "KaggleFiles",
    "PAIR_FORMATS",
    "ReadReport",
    "SCORE_PRESETS",
    "get_report",
    "locate_kaggle_files",
    "parse_turns",
    "read_alpaca_eval",
    "read_commonlit",
    "read_comparisons",
    "read_documents",
    "read_fb3_ell",
    "read_kaggle_csv",
    "read_pairs",
    "read_pairs_parquet",
    "read_pairwise_jsonl",
    "read_rm_gallery",
    "read_sample_submission",
    "read_scores_csv",
    "read_solution",
    "read_votes",
]
