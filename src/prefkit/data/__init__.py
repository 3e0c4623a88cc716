"""Data readers: every supported file format into the internal schema (:mod:`prefkit.schema`).

Pair readers return a validated pair table, item readers an item table; each attaches a
:class:`ReadReport` as a JSON-safe dict in ``df.attrs["report"]`` (use :func:`get_report`).
:mod:`prefkit.data.formats` names the formats. The names below load their module on first
use, so importing a light submodule (``prefkit.data.formats``) does not import pandas.
"""

import importlib

_EXPORTS = {
    "formats": ("FORMATS", "ITEM_FORMATS", "PAIR_FORMATS", "get_format", "read_input", "read_pairs"),
    "kaggle": ("KaggleFiles", "locate_kaggle_files", "parse_turns", "read_kaggle", "read_kaggle_csv", "read_sample_submission", "read_solution"),
    "readers": (
        "SCORE_PRESETS",
        "read_alpaca_eval",
        "read_commonlit",
        "read_comparisons",
        "read_documents",
        "read_fb3_ell",
        "read_pairs_parquet",
        "read_pairwise_jsonl",
        "read_rm_gallery",
        "read_scores_csv",
        "read_votes",
    ),
    "report": ("ReadReport", "get_report"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
