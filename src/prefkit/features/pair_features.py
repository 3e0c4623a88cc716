"""Hand-crafted pair features: style and length statistics of each side, their difference
and log ratio, plus the prompt's length.

Column naming carries the swap semantics (see :func:`swap_features`):

* ``a_<name>`` / ``b_<name>``: the statistic on side A / side B; exchanged by a swap;
* ``diff_<name>`` = a - b and ``logratio_<name>`` = log1p(a) - log1p(b): negated by a swap;
* ``prompt_<name>``: a property of the prompt alone; unchanged by a swap.

Side statistics come from C-level string methods in one pass per text; 34k pairs take seconds.
"""

from __future__ import annotations

import re
import string

import numpy as np
import pandas as pd

from prefkit.schema import turns_text

# Markdown structure, matched at the start of a line; the text gets a leading newline so that
# every pattern starts with a literal (fast scanning) and the first line counts too.
_LIST_ITEM = re.compile(r"\n[ \t]*(?:[-*+\u2022]|\d{1,3}[.)])[ \t]+\S")
_HEADER = re.compile(r"\n[ \t]{0,3}#{1,6}[ \t]+\S")
_FENCE = re.compile(r"\n[ \t]*```")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
# Refusal-like and hedging phrases, counted in the lower-cased text.
REFUSAL_PHRASES = (
    "sorry",
    "i apologi",
    "i cannot",
    "i can't",
    "i can not",
    "unable to",
    "not able to",
    "i won't",
    "as an ai",
    "language model",
    "i don't have",
    "i do not have",
    "unfortunately",
)
_SENTENCE_ENDS = (". ", ".\n", "! ", "!\n", "? ", "?\n")

# The per-side statistics, in column order.
SIDE_FEATURES = (
    "chars",
    "words",
    "lines",
    "paragraphs",
    "list_items",
    "headers",
    "bold",
    "code_blocks",
    "inline_code",
    "urls",
    "questions",
    "exclamations",
    "colons",
    "sentences",
    "digit_share",
    "unique_word_ratio",
    "mean_word_len",
    "words_per_sentence",
    "prompt_overlap",
    "turns",
    "empty_turns",
    "refusals",
)


def word_set(text: str) -> set[str]:
    """Lower-cased white-space separated words (punctuation stays attached: cheap)."""
    return set(text.lower().split())


def _text_stats(turns: list[str], prompt_words: set[str]) -> tuple[float, ...]:
    """The statistics of one side, in :data:`SIDE_FEATURES` order (C-level string methods
    only: a Python loop over 70k texts must stay in seconds)."""
    text = turns_text(turns)
    body = text.strip()
    chars = len(text)
    lower = text.lower()
    tokens = lower.split()
    words = len(tokens)
    vocab = set(tokens)
    union = len(vocab | prompt_words)
    lined = "\n" + text
    fences = len(_FENCE.findall(lined))
    backticks = text.count("`") - 3 * text.count("```")
    sentences = sum(map(text.count, _SENTENCE_ENDS)) + (body[-1:] in (".", "!", "?"))
    nonempty = 1.0 if body else 0.0
    return (
        chars,
        words,
        (text.count("\n") + 1) * nonempty,
        (len(_PARAGRAPH_BREAK.findall(body)) + 1) * nonempty,
        len(_LIST_ITEM.findall(lined)),
        len(_HEADER.findall(lined)),
        (text.count("**") + text.count("__")) // 2,
        (fences + 1) // 2,
        max(backticks, 0) // 2,
        text.count("://") + text.count("www."),
        text.count("?"),
        text.count("!"),
        text.count(":"),
        sentences,
        sum(map(text.count, string.digits)) / max(chars, 1),
        len(vocab) / max(words, 1),
        (chars - sum(map(text.count, string.whitespace))) / max(words, 1),
        words / max(sentences, 1),
        len(vocab & prompt_words) / union if union else 0.0,
        len(turns),
        sum(not t.strip() for t in turns),
        sum(map(lower.count, REFUSAL_PHRASES)),
    )


def _side_stats(sides: pd.Series, prompt_words: list[set[str]]) -> np.ndarray:
    rows = [_text_stats(turns, pw) for turns, pw in zip(sides, prompt_words)]
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(SIDE_FEATURES))


def pair_features(pairs: pd.DataFrame) -> pd.DataFrame:
    """One float32 row per pair (index = ``pairs["id"]``): side statistics for A and B,
    their difference and log ratio, and the prompt's length."""
    prompts = [turns_text(t) for t in pairs["prompt"]]
    prompt_words = [word_set(p) for p in prompts]
    a = _side_stats(pairs["response_a"], prompt_words)
    b = _side_stats(pairs["response_b"], prompt_words)
    cols: dict[str, np.ndarray] = {}
    for j, name in enumerate(SIDE_FEATURES):
        cols[f"a_{name}"] = a[:, j]
        cols[f"b_{name}"] = b[:, j]
    for j, name in enumerate(SIDE_FEATURES):
        cols[f"diff_{name}"] = a[:, j] - b[:, j]
    for j, name in enumerate(SIDE_FEATURES):
        cols[f"logratio_{name}"] = np.log1p(a[:, j]) - np.log1p(b[:, j])
    cols["prompt_chars"] = np.array([len(p) for p in prompts], dtype=float)
    cols["prompt_words"] = np.array([len(p.split()) for p in prompts], dtype=float)
    cols["prompt_lines"] = np.array([p.count("\n") + 1 for p in prompts], dtype=float)
    cols["prompt_turns"] = np.array([len(t) for t in pairs["prompt"]], dtype=float)
    index = pd.Index(pairs["id"].astype(str).to_numpy(), name="id")
    return pd.DataFrame(cols, index=index).astype(np.float32)


def swap_plan(columns) -> tuple[np.ndarray, np.ndarray]:
    """(source column, sign) per column such that ``swapped[:, j] = sign[j] * x[:, source[j]]``:
    ``a_x`` and ``b_x`` exchange, ``diff_*`` and ``logratio_*`` change sign, the rest stay."""
    columns = [str(c) for c in columns]
    where = {c: j for j, c in enumerate(columns)}
    source = np.arange(len(columns))
    sign = np.ones(len(columns), dtype=np.float32)
    for j, col in enumerate(columns):
        side, _, rest = col.partition("_")
        if side in ("a", "b") and rest and f"{'b' if side == 'a' else 'a'}_{rest}" in where:
            source[j] = where[f"{'b' if side == 'a' else 'a'}_{rest}"]
        elif side in ("diff", "logratio"):
            sign[j] = -1.0
    return source, sign


def swap_features(features: pd.DataFrame) -> pd.DataFrame:
    """The features of the A/B-swapped pairs, computed from the features of the pairs
    (see :func:`swap_plan`): no text is read again."""
    source, sign = swap_plan(features.columns)
    values = features.to_numpy()[:, source] * sign.astype(features.to_numpy().dtype)
    return pd.DataFrame(values, index=features.index, columns=features.columns)
