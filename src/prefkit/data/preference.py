"""Preference data in the ecosystem's layouts, any pair table through a column mapping, and
pair tables turned into item tables.

* :func:`read_preference` (format ``preference``): ``prompt`` / ``chosen`` / ``rejected``
  records as TRL, UltraFeedback-binarised and HH-RLHF publish them (JSON lines, a JSON list,
  Parquet or CSV). Each side is a string or a list of chat messages ``{role, content}``; the
  prompt may be a string, messages, or absent (HH-RLHF: both sides are whole conversations,
  as messages or as ``"\\n\\nHuman: ... \\n\\nAssistant: ..."`` text, and their shared prefix
  is the prompt). The chosen response goes to side A or B by a coin seeded with ``seed``
  and the row id, so the labels are not all A and a reread gives the same table.
* :func:`read_column_pairs` (format ``pairs``): a CSV / JSON lines / JSON list / Parquet pair
  table in any other layout (LLMBar, MT-Bench human judgments, Auto-J) read through a column
  mapping (``prompt=input,a=output_1,b=output_2,label=label``) and a label coding
  (``a=1,b=2,tie=0``); the defaults are prefkit's own names and 1 / 2 / 0.
* :func:`unpair`: a pair table -> an item table, one row per distinct (prompt, text), with
  an item id and counts of wins, losses and ties: the input of item scorers.

Both sides of a pair become turn lists aligned with the prompt: conversations that share
their user turns (MT-Bench's two-turn conversations, HH-RLHF's shared history) keep one
response turn per user turn; conversations that diverge in a user turn keep their differing
tail as one response (noted ``diverging_conversations_joined``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from prefkit.data.fileio import (
    as_number,
    read_csv_text,
    read_json_or_jsonl,
    read_parquet_records,
)
from prefkit.data.kaggle import align_turns
from prefkit.data.readers import (
    _ASSISTANT,
    _SYSTEM,
    TIE,
    A,
    B,
    _content,
    _hash,
    _maybe_json,
    _unique_ids,
    conversation_turns,
    pair_group,
)
from prefkit.data.report import ReadContext
from prefkit.schema import LABELS, make_pairs, prompt_group, turns_text, validate_pairs

# --------------------------------------------------------------------------- records


def read_records(ctx: ReadContext) -> tuple[list[tuple[int, object]], int]:
    """(records with their 1-based row, rows read): Parquet and CSV by their suffix (CSV
    cells as text), anything else as a JSON list or JSON lines."""
    name = ctx.path.name.lower()
    if name.endswith((".parquet", ".pq")):
        records = list(enumerate(read_parquet_records(ctx), start=1))
        return records, len(records)
    if ".csv" in name:
        raw = read_csv_text(ctx)
        return list(enumerate(raw.to_dict(orient="records"), start=1)), len(raw)
    records = read_json_or_jsonl(ctx)
    return records, len(records) + ctx.report.skipped.get("invalid_json", 0)


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and value != ""


# --------------------------------------------------------------------------- conversations

_HH_MARKER = re.compile(r"(?:^|\n\n)(Human|Assistant):[ ]?")


def _hh_messages(text: str) -> list[dict] | None:
    """``"\\n\\nHuman: q\\n\\nAssistant: a"`` -> messages; None for text without both markers."""
    parts = _HH_MARKER.split(text)
    if "Human" not in parts[1::2] or "Assistant" not in parts[1::2]:
        return None
    roles = ["user" if r == "Human" else "assistant" for r in parts[1::2]]
    return [{"role": r, "content": c.strip()} for r, c in zip(roles, parts[2::2])]


class BadCell(TypeError):
    """A prompt or side that is neither text nor chat messages; ``side`` says which
    (``prompt``, ``a`` or ``b``)."""

    def __init__(self, expected: str, side: str) -> None:
        super().__init__(expected)
        self.side = side


def _messages(ctx: ReadContext, value, role: str) -> list[dict]:
    """A side or a prompt as chat messages ``{role, content}`` (roles lower-cased); a string
    is one message of ``role`` unless it is HH-RLHF dialogue text."""
    if isinstance(value, str):
        hh = _hh_messages(value) if "\n\nAssistant:" in value or value.startswith("Human:") else None
        if hh is not None:
            ctx.report.note("hh_dialogue_text_parsed")
            return [{"role": m["role"], "content": ctx.clean(m["content"])} for m in hh]
        return [{"role": role, "content": ctx.clean(value)}]
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(m, dict) for m in value):
        raise TypeError("a string or a list of messages {role, content}")
    return [{"role": str(m.get("role", role)).lower(), "content": _content(ctx, m.get("content"))} for m in value]


def _side_messages(ctx: ReadContext, value, side: str, role: str) -> list[dict]:
    try:
        return _messages(ctx, value, role)
    except TypeError as err:
        raise BadCell(str(err), side) from None


def _is_assistant(msg: dict) -> bool:
    return msg["role"] in _ASSISTANT


def _tail_turns(tail: list[dict]) -> list[tuple[str | None, str]]:
    """A conversation's tail -> (user text before it or None, assistant turn) per turn;
    consecutive messages of one side are joined with a blank line."""
    turns: list[list] = []  # [user text or None, assistant text]
    user: list[str] = []
    for msg in tail:
        if not _is_assistant(msg):
            user.append(msg["content"])
        elif turns and not user:  # the same assistant turn continues
            turns[-1][1] += "\n\n" + msg["content"]
        else:
            turns.append(["\n\n".join(user) if user else None, msg["content"]])
            user = []
    if user:  # the tail ends on a user message: an empty answer to it
        turns.append(["\n\n".join(user), ""])
    return [(u, a) for u, a in turns] or [(None, "")]


def conversation_pair(ctx: ReadContext, prompt, first, second) -> tuple[list[str], list[str], list[str]]:
    """(prompt turns, side-1 turns, side-2 turns) from a prompt (None when absent) and two
    sides, each a string, chat messages, HH-RLHF text, or (with the prompt) JSON lists of
    turns as the Kaggle files hold them. :class:`BadCell` names the cell and what was expected."""
    prompt, first, second = _cell(prompt), _cell(first), _cell(second)
    if _is_turn_list(first) and _is_turn_list(second):
        turns = prompt if _is_turn_list(prompt) else [prompt if isinstance(prompt, str) else ""]
        return tuple(align_turns(ctx, *([ctx.clean(t) for t in side] for side in (turns, first, second))))
    conv1, conv2 = (_side_messages(ctx, value, side, "assistant") for value, side in ((first, "a"), (second, "b")))
    if prompt is not None and _is_assistant(conv1[0]) and _is_assistant(conv2[0]):  # sides hold answers only
        context = _side_messages(ctx, prompt, "prompt", "user")
        while context and _is_assistant(context[-1]) and not context[-1]["content"]:
            context.pop()  # HH-style prompt text ending in an empty "Assistant:"
        conv1, conv2 = context + conv1, context + conv2
    k = 0
    while k < min(len(conv1), len(conv2)) and conv1[k] == conv2[k]:
        k += 1
    while k and _is_assistant(conv1[k - 1]):  # each side's own part starts with its answer
        k -= 1
    if k:
        prompts, history = conversation_turns(ctx, conv1[:k])
    else:
        prompts, history = [], []
    tail1, tail2 = _tail_turns(conv1[k:]), _tail_turns(conv2[k:])
    users1, users2 = [u for u, _ in tail1], [u for u, _ in tail2]
    if users1 == users2:
        if users1[0] is None and not prompts:  # answers with no prompt at all
            ctx.report.note("no_prompt")
            prompts = [""]
        prompts = prompts + [u for u in users1 if u is not None]
        return prompts, history + [a for _, a in tail1], history + [a for _, a in tail2]
    ctx.report.note("diverging_conversations_joined")
    if not prompts:
        prompts = [""]
    joined = ["\n\n".join(m["content"] for m in conv[k:] if m["role"] not in _SYSTEM) for conv in (conv1, conv2)]
    return prompts, history + [joined[0]], history + [joined[1]]


def _is_message(value) -> bool:
    return isinstance(value, dict) and "content" in value


def _cell(value):
    """A cell holding JSON text of turns or chat messages parsed; any other text (an answer
    that happens to be a JSON object or a list of numbers) stays text."""
    parsed = _maybe_json(value)
    if parsed is value or _is_turn_list(parsed) or _is_message(parsed):
        return parsed
    if isinstance(parsed, list) and parsed and all(_is_message(m) for m in parsed):
        return parsed
    return value


def _is_turn_list(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(t, str) for t in value)


def _pair_group(prompt: list[str], side_a: list[str], side_b: list[str]) -> str:
    """By prompt; pairs with no prompt text by their two texts (one group per item pair)."""
    if any(t.strip() for t in prompt):
        return prompt_group(prompt)
    return pair_group(turns_text(side_a), turns_text(side_b))


# --------------------------------------------------------------------------- TRL-style preference


def chosen_on_a(row_id: str, seed: int) -> bool:
    """The seeded coin: whether the chosen response of row ``row_id`` goes to side A."""
    return int(_hash(str(seed), row_id, n=8), 16) % 2 == 0


def _number(ctx: ReadContext, rec: dict, column: str, row: int, *, default: float, minimum: float | None = None) -> float | None:
    """A numeric cell (``weight``, ``margin``); ``default`` when empty; None for a bad row."""
    cell = rec.get(column)
    if not _present(cell):
        return default
    x = as_number(cell)
    if not math.isfinite(x) or (minimum is not None and x < minimum):
        bound = f" >= {minimum:g}" if minimum is not None else ""
        ctx.bad("not_a_number", f"expected a finite number{bound}, got {str(cell)[:40]!r}", row=row, column=column)
        return None
    return x


def read_preference(path: str | Path, *, on_bad_row: str = "error", seed: int = 0) -> pd.DataFrame:
    """``prompt`` (optional) / ``chosen`` / ``rejected`` records -> a labelled pair table.

    ``id`` = the record's ``id`` (the row number when absent); the chosen side is A or B by
    :func:`chosen_on_a` (``seed``); ``group`` = the prompt's hash. A ``margin`` field (TRL:
    how much the chosen should win by) is kept as the ``margin`` column.
    """
    ctx = ReadContext(path, "preference", on_bad_row)
    records, n_read = read_records(ctx)
    has_margin = any(isinstance(r, dict) and "margin" in r for _, r in records)
    kept = []
    for row, rec in records:
        if not isinstance(rec, dict):
            ctx.bad("not_an_object", "expected a record with chosen and rejected", row=row)
            continue
        missing = next((f for f in ("chosen", "rejected") if not _present(rec.get(f))), None)
        if missing:
            ctx.bad("missing_field", "missing or empty (expected a response: text or chat messages)", row=row, column=missing)
            continue
        prompt = rec.get("prompt") if _present(rec.get("prompt")) else None
        try:
            turns, chosen, rejected = conversation_pair(ctx, prompt, rec["chosen"], rec["rejected"])
        except BadCell as err:
            ctx.bad("bad_response", f"expected {err}", row=row, column={"a": "chosen", "b": "rejected"}.get(err.side, err.side))
            continue
        margin = _number(ctx, rec, "margin", row, default=0.0) if has_margin else 0.0
        if margin is None:
            continue
        id_ = ctx.clean(str(rec["id"])) if _present(rec.get("id")) else str(row)
        on_a = chosen_on_a(id_, seed)
        a, b = (chosen, rejected) if on_a else (rejected, chosen)
        kept.append({"row": row, "id": id_, "prompt": turns, "a": a, "b": b, "label": A if on_a else B, "margin": margin})
    return _pair_table(ctx, kept, n_read, "id", labelled=True, optional=("margin",) if has_margin else ())


def _pair_table(ctx: ReadContext, kept: list[dict], n_read: int, id_column: str, *, labelled: bool, optional=()) -> pd.DataFrame:
    """The rows a reader kept (dicts: row, id, prompt, a, b, label, optional weight and the
    ``optional`` columns) with duplicate ids as bad rows -> the validated pair table."""
    keep = [True] * len(kept)
    _unique_ids(ctx, [r["id"] for r in kept], [r["row"] for r in kept], id_column, keep)
    rows = [r for r, k in zip(kept, keep) if k]
    pairs = make_pairs(
        [r["id"] for r in rows],
        [r["prompt"] for r in rows],
        [r["a"] for r in rows],
        [r["b"] for r in rows],
        labels=np.array([r["label"] for r in rows]) if labelled and rows else None,
        weights=[r.get("weight", 1.0) for r in rows],
        groups=[_pair_group(r["prompt"], r["a"], r["b"]) for r in rows],
        **{c: [r[c] for r in rows] for c in optional},
    )
    return ctx.finish(pairs, n_read, validate=validate_pairs)


# --------------------------------------------------------------------------- column-mapped pairs

COLUMN_KEYS = ("prompt", "a", "b", "label", "id", "model_a", "model_b", "weight", "margin")
DEFAULT_COLUMNS = {"prompt": "prompt", "a": "response_a", "b": "response_b", "label": "label", "id": "id"}
REQUIRED_COLUMNS = ("a", "b")
LABEL_KEYS = ("a", "b", "tie")
DEFAULT_LABELS = {"a": ("1", "a"), "b": ("2", "b"), "tie": ("0", "tie")}


def _mapping(value, what: str, example: str) -> dict[str, str]:
    """``"k=v,k=v"`` or a mapping -> {k: v} (stripped); ValueError naming the bad part."""
    if isinstance(value, Mapping):
        return {str(k).strip(): v for k, v in value.items()}
    out = {}
    for part in str(value).split(","):
        key, sep, val = part.partition("=")
        if not sep or not key.strip() or not val.strip():
            raise ValueError(f"{what} {part.strip()!r} is not KEY=VALUE (e.g. {example})")
        out[key.strip()] = val.strip()
    return out


def parse_columns(value) -> dict[str, str]:
    """A column mapping (``"prompt=input,a=output_1,b=output_2,label=label"`` or a dict) over
    :data:`COLUMN_KEYS` -> {key: file column}; ValueError for an unknown key."""
    columns = _mapping(value, "column mapping", "prompt=input,a=output_1,b=output_2")
    for key, col in columns.items():
        if key not in COLUMN_KEYS:
            raise ValueError(f"unknown column key {key!r}; known: {', '.join(COLUMN_KEYS)}")
        if not isinstance(col, str) or not col.strip():
            raise ValueError(f"column for {key!r} must be a column name, got {col!r}")
    return {k: v.strip() for k, v in columns.items()}


def parse_labels(value) -> dict[str, tuple[str, ...]]:
    """A label coding (``"a=1,b=2,tie=0"``; several codes as ``tie=tie|tie (bothbad)``; or a
    dict whose values are a code or a list of codes) -> {class: codes}."""
    coding = _mapping(value, "label code", "a=1,b=2,tie=0")
    out: dict[str, tuple[str, ...]] = {}
    for key, codes in coding.items():
        if key not in LABEL_KEYS:
            raise ValueError(f"unknown label class {key!r}; known: {', '.join(LABEL_KEYS)}")
        codes = codes.split("|") if isinstance(codes, str) else codes if isinstance(codes, (list, tuple)) else [codes]
        codes = tuple(str(c).strip() for c in codes if str(c).strip())
        if not codes:
            raise ValueError(f"no code for label class {key!r}")
        out[key] = codes
    seen: dict[str, str] = {}
    for key, codes in out.items():
        for c in codes:
            norm = _code(c)
            if norm in seen and seen[norm] != key:
                raise ValueError(f"label code {c!r} stands for both {seen[norm]!r} and {key!r}")
            seen[norm] = key
    return out


def _code(value):
    """A label cell or code in comparable form: a number as a float, text lower-cased."""
    x = as_number(value)
    if math.isfinite(x):
        return x
    return str(value).strip().lower()


def _label_reader(coding: dict[str, tuple[str, ...]]):
    lookup = {_code(c): {"a": A, "b": B, "tie": TIE}[key] for key, codes in coding.items() for c in codes}
    expected = ", ".join(f"{key}={'|'.join(codes)}" for key, codes in coding.items())
    return lookup, expected


def _resolve_columns(ctx: ReadContext, given: dict[str, str], records) -> dict[str, str]:
    """The mapping ``given`` over the defaults the file has; a mapped column the file lacks
    is an error naming it."""
    fields: set[str] = set()
    for _, rec in records:
        if isinstance(rec, dict):
            fields.update(rec)
    cols = {k: v for k, v in DEFAULT_COLUMNS.items() if k not in given and (k in REQUIRED_COLUMNS or v in fields)}
    cols.update(given)
    for key, col in cols.items():
        if col not in fields and records:
            found = ", ".join(sorted(map(str, fields))[:20])
            raise ctx.error(f"no such column for {key!r} (found {found})", column=col)
    return cols


def read_column_pairs(
    path: str | Path,
    *,
    on_bad_row: str = "error",
    columns: Mapping[str, str] | str | None = None,
    labels: Mapping | str | None = None,
) -> pd.DataFrame:
    """A pair table in any layout -> the internal schema, through ``columns`` (keys
    :data:`COLUMN_KEYS`, values the file's column names) and the label coding ``labels``.

    Columns not mapped default to ``prompt``, ``response_a``, ``response_b``, ``label``
    and ``id`` where the file has them; ``a`` and ``b`` are required. With no label column
    the table is unlabelled; ``id`` is the row number unless mapped. Cells may be text,
    chat messages or JSON lists of turns (see :func:`conversation_pair`).
    """
    ctx = ReadContext(path, "pairs", on_bad_row)
    try:
        given = parse_columns(columns) if columns is not None else {}
        coding = parse_labels(labels) if labels is not None else dict(DEFAULT_LABELS)
    except ValueError as err:
        raise ctx.error(str(err)) from None
    records, n_read = read_records(ctx)
    cols = _resolve_columns(ctx, given, records)
    lookup, expected = _label_reader(coding)
    labelled = "label" in cols

    optional = tuple(k for k in ("model_a", "model_b", "margin") if k in cols)
    kept = []
    for row, rec in records:
        if not isinstance(rec, dict):
            ctx.bad("not_an_object", "expected a record (object)", row=row)
            continue
        missing = next((cols[k] for k in REQUIRED_COLUMNS if cols[k] not in rec), None)
        if missing:
            ctx.bad("missing_field", "missing field (expected a response)", row=row, column=missing)
            continue
        prompt = rec.get(cols["prompt"]) if "prompt" in cols and _present(rec.get(cols["prompt"])) else None
        try:
            turns, side_a, side_b = conversation_pair(ctx, prompt, _side(rec[cols["a"]]), _side(rec[cols["b"]]))
        except BadCell as err:
            ctx.bad("bad_response", f"expected {err}", row=row, column=cols[err.side])
            continue
        label = None
        if labelled:
            cell = rec.get(cols["label"])
            if not _present(cell):
                ctx.bad("label_missing", f"label missing (expected {expected})", row=row, column=cols["label"])
                continue
            label = lookup.get(_code(cell))
            if label is None:
                ctx.bad("label_invalid", f"label {str(cell)[:40]!r} is not one of {expected}", row=row, column=cols["label"])
                continue
        weight = _number(ctx, rec, cols["weight"], row, default=1.0, minimum=0.0) if "weight" in cols else 1.0
        margin = _number(ctx, rec, cols["margin"], row, default=0.0) if "margin" in cols else 0.0
        if weight is None or margin is None:
            continue
        id_ = ctx.clean(str(rec[cols["id"]])) if "id" in cols and _present(rec.get(cols["id"])) else str(row)
        out = {"row": row, "id": id_, "prompt": turns, "a": side_a, "b": side_b, "label": label, "weight": weight, "margin": margin}
        for key in ("model_a", "model_b"):
            if key in cols:
                out[key] = ctx.clean(str(rec[cols[key]])) if _present(rec.get(cols[key])) else ""
        kept.append(out)
    return _pair_table(ctx, kept, n_read, cols.get("id", "id"), labelled=labelled, optional=optional)


def _side(value):
    """An empty or missing response cell is an empty answer, not a bad row."""
    return value if _present(value) else ""


# --------------------------------------------------------------------------- unpairing

ITEM_COUNT_COLUMNS = ("n_pairs", "wins", "losses", "ties")


def item_id(prompt: str, text: str) -> str:
    return "item:" + _hash(prompt, text)


def unpair(pairs: pd.DataFrame) -> pd.DataFrame:
    """A pair table -> an item table: one row per distinct (prompt, text) with ``id``,
    ``prompt``, ``text`` (turns joined), ``model`` (where the pairs name models) and its
    counts over the pairs it appears in: ``n_pairs``, ``wins``, ``losses``, ``ties`` (a soft
    label counts its shares; unlabelled pairs count in ``n_pairs`` only).

    The id is ``item_a`` / ``item_b`` where the pairs carry item ids (document comparisons),
    else ``item:`` + a hash of prompt and text, the same in every table.
    """
    validate_pairs(pairs)
    labels = np.nan_to_num(pairs[list(LABELS)].to_numpy(dtype=float))
    prompts = [turns_text(p) for p in pairs["prompt"]]
    has_items = "item_a" in pairs.columns and "item_b" in pairs.columns
    has_models = "model_a" in pairs.columns and "model_b" in pairs.columns
    sides = []
    for side, win, lose in (("a", 0, 1), ("b", 1, 0)):
        texts = [turns_text(t) for t in pairs[f"response_{side}"]]
        ids = pairs[f"item_{side}"].astype(str).tolist() if has_items else [item_id(p, t) for p, t in zip(prompts, texts)]
        frame = pd.DataFrame(
            {"id": ids, "prompt": prompts, "text": texts, "wins": labels[:, win], "losses": labels[:, lose], "ties": labels[:, 2]}
        )
        if has_models:
            frame.insert(3, "model", pairs[f"model_{side}"].astype(str).to_numpy())
        sides.append(frame)
    both = pd.concat(sides, keys=[0, 1]).swaplevel().sort_index(level=0, kind="stable").reset_index(drop=True)  # pair by pair
    first = both.drop_duplicates("id")[[c for c in both.columns if c not in ("wins", "losses", "ties")]]
    counts = both.groupby("id", sort=False).agg(
        n_pairs=("wins", "size"), wins=("wins", "sum"), losses=("losses", "sum"), ties=("ties", "sum")
    )
    items = first.merge(counts, left_on="id", right_index=True).reset_index(drop=True)
    return items
