"""Readers for the non-Kaggle formats (:mod:`prefkit.data.formats` names them all).

Every reader returns a validated table in the internal schema (:mod:`prefkit.schema`)
with a :class:`~prefkit.data.report.ReadReport` in ``df.attrs["report"]`` and takes
``on_bad_row="error"|"skip"`` (see :mod:`prefkit.data.report`).

Choices worth knowing:

* **Groups.** Pairs of *items* with no real prompt (pairwise JSONL, document comparisons)
  get ``group`` = a hash of the unordered item pair (``item_a``, ``item_b``), so repeated
  comparisons of the same two items share a fold; grouping by the (empty or constant)
  prompt would put every row in one group. Chat formats group by prompt.
* **RM-Gallery ``preference_strength``** (HelpSteer2 style, -3..3; its sign refers to the
  source's response order, so only the magnitude is used, the side comes from
  ``metadata.preferred``): by default a **sample weight** ``|strength|`` for A/B rows
  (ties and rows without a strength weigh 1). ``strength="soft"`` makes it a soft label
  instead (winner ``0.5 + |s| / 6``, loser the rest, clipped to 1), ``"ignore"`` leaves
  weights and labels alone. The raw value stays in the ``preference_strength`` column
  (NaN where a record has none) whenever the file has one, for strength-weighted rewards.
* **RM-Gallery multi-turn input.** User messages become prompt turns; an assistant
  message between two user turns is shared history and becomes the earlier turn of
  *both* responses (``response_a = [history..., answer_a]``), keeping turn alignment.
  System messages are prepended to the next user turn. Consecutive messages of one role
  are joined with a blank line.
* **AlpacaEval preference**: 1 -> A, 2 -> B, 0 or exactly 1.5 -> tie, other values in
  (1, 2) -> soft label ``p_a = 2 - pref``, ``p_b = pref - 1`` (no tie mass); ``null`` ->
  row skipped under either policy and counted (``skipped["preference_null"]``).
* **Votes** aggregated: one row per (prompt, left, right, left text, right text); a pair
  seen in both orders is merged into the orientation seen first (votes swapped); soft
  label = vote shares, ``weight`` = ``n_votes`` = number of votes.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from prefkit.data.fileio import (
    JSON_ERRORS,
    as_number,
    loads,
    read_csv_text,
    read_json_or_jsonl,
    read_parquet_records,
    require_columns,
)
from prefkit.data.kaggle import find_file
from prefkit.data.report import ReadContext
from prefkit.errors import InputError
from prefkit.schema import make_pairs, validate_items, validate_pairs

A, B, TIE = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]


def _hash(*parts: str, n: int = 16) -> str:
    h = hashlib.sha1()
    for p in parts:
        h.update(p.encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    return h.hexdigest()[:n]


def pair_group(item_a: str, item_b: str) -> str:
    """Group key of an unordered item pair."""
    lo, hi = sorted((item_a, item_b))
    return "pair:" + _hash(lo, hi)


def _text(ctx: ReadContext, value, row: int, field: str, *, null_note: str = "null_texts") -> str | None:
    """A text field: str kept, None/NaN -> "" (noted), numbers -> their text; else bad row."""
    if isinstance(value, str):
        return ctx.clean(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        ctx.report.note(null_note)
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        ctx.report.note("numeric_texts")
        return str(value)
    ctx.bad("text_not_string", f"expected text, got {type(value).__name__}", row=row, column=field)
    return None


def _unique_ids(ctx: ReadContext, raw_ids: list[str], rows: list[int], column: str, keep: list[bool]) -> None:
    """Mark duplicate ids as bad rows (keep[i] = False when skipped)."""
    seen: set[str] = set()
    for i, id_ in enumerate(raw_ids):
        if not keep[i]:
            continue
        if id_ in seen:
            ctx.bad("duplicate_id", f"duplicate id {id_[:60]!r}", row=rows[i], column=column)
            keep[i] = False
        else:
            seen.add(id_)


# --------------------------------------------------------------------------- JSONL pairs



def _has_fields(ctx: ReadContext, rec, row: int, fields: tuple[str, ...]) -> bool:
    """A JSON record that is an object holding every field; otherwise a bad row (False)."""
    if not isinstance(rec, dict):
        ctx.bad("not_an_object", "expected a JSON object", row=row)
        return False
    missing = [f for f in fields if f not in rec]
    if missing:
        ctx.bad("missing_field", "missing field", row=row, column=missing[0])
        return False
    return True


def _label_012(ctx: ReadContext, value, row: int, column: str) -> list[float] | None:
    """1 = first wins, 2 = second wins, 0 = tie (ints, integral floats or numeric strings)."""
    x = as_number(value)
    if x == 1.0:
        return A
    if x == 2.0:
        return B
    if x == 0.0:
        return TIE
    ctx.bad("label_invalid", f"label {str(value)[:40]!r} is not 1 (first wins), 2 (second wins) or 0 (tie)", row=row, column=column)
    return None


def read_pairwise_jsonl(path: str | Path, *, on_bad_row: str = "error") -> pd.DataFrame:
    """Pairwise JSON lines (Licht et al.): ``pair_id``, ``id1``, ``id2``, ``text1``,
    ``text2``, ``label`` (1 first wins, 2 second, 0 tie), optional ``prompt``.

    ``item_a``/``item_b`` = ``id1``/``id2``; prompt ``[""]`` unless a ``prompt`` field
    exists; ``id`` = ``pair_id`` (the line number when absent). A file where no record has
    a ``label`` is read as unlabelled; otherwise a record without one is a bad row.
    """
    ctx = ReadContext(path, "jsonl", on_bad_row)
    records = read_json_or_jsonl(ctx)
    n_read = len(records) + ctx.report.skipped.get("invalid_json", 0)
    labelled = any(isinstance(r, dict) and r.get("label") is not None for _, r in records)

    ids, rows, prompts, ra, rb, labels, item_a, item_b = [], [], [], [], [], [], [], []
    for row, rec in records:
        if not _has_fields(ctx, rec, row, ("id1", "id2", "text1", "text2")):
            continue
        t1 = _text(ctx, rec["text1"], row, "text1")
        t2 = _text(ctx, rec["text2"], row, "text2")
        if t1 is None or t2 is None:
            continue
        prompt = rec.get("prompt")
        if isinstance(prompt, list) and all(isinstance(t, str) for t in prompt):
            ctx.report.note("prompt_list_joined")
            prompt = "\n\n".join(prompt)
        prompt = _text(ctx, prompt, row, "prompt", null_note="no_prompt") if prompt is not None else ""
        if prompt is None:
            continue
        label = None
        if labelled:
            if rec.get("label") is None:
                ctx.bad("label_missing", "label missing", row=row, column="label")
                continue
            label = _label_012(ctx, rec["label"], row, "label")
            if label is None:
                continue
        pid = rec.get("pair_id")
        ids.append(ctx.clean(str(pid)) if pid is not None else str(row))
        rows.append(row)
        prompts.append([prompt])
        ra.append([t1])
        rb.append([t2])
        labels.append(label)
        item_a.append(ctx.clean(str(rec["id1"])))
        item_b.append(ctx.clean(str(rec["id2"])))

    keep = [True] * len(ids)
    _unique_ids(ctx, ids, rows, "pair_id", keep)
    sel = [i for i, k in enumerate(keep) if k]
    groups = [pair_group(item_a[i], item_b[i]) for i in sel]
    pairs = make_pairs(
        [ids[i] for i in sel],
        [prompts[i] for i in sel],
        [ra[i] for i in sel],
        [rb[i] for i in sel],
        labels=np.array([labels[i] for i in sel]) if labelled and sel else None,
        groups=groups,
        item_a=[item_a[i] for i in sel],
        item_b=[item_b[i] for i in sel],
    )
    return ctx.finish(pairs, n_read, validate=validate_pairs)


# --------------------------------------------------------------------------- RM-Gallery

_USER = {"user", "human", "prompter"}
_ASSISTANT = {"assistant", "bot", "gpt", "model", "ai"}
_SYSTEM = {"system", "developer"}
STRENGTH_MODES = ("weight", "soft", "ignore")
MAX_STRENGTH = 3.0


def _content(ctx: ReadContext, content) -> str:
    if content is None:
        ctx.report.note("null_turns")
        return ""
    if isinstance(content, str):
        return ctx.clean(content)
    if isinstance(content, list):  # multimodal parts: keep the text ones
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        ctx.report.note("content_parts_joined")
        return ctx.clean("\n".join(parts))
    ctx.report.note("non_string_turns")
    return ctx.clean(str(content))


def _maybe_json(value):
    if isinstance(value, str):
        stripped = value.strip()
        if stripped[:1] in ("[", "{"):
            try:
                return loads(stripped)
            except JSON_ERRORS:
                return value
    return value


def conversation_turns(ctx: ReadContext, messages) -> tuple[list[str], list[str]]:
    """Chat messages -> (user turns, assistant history aligned with all but the last)."""
    messages = _maybe_json(messages)
    if isinstance(messages, str):
        return [ctx.clean(messages)], []
    if isinstance(messages, dict):
        messages = [messages]
    if not isinstance(messages, list):
        raise TypeError(type(messages).__name__)
    prompts: list[str] = []
    history: list[str] = []
    system: list[str] = []
    last = None  # role of the previous stored message
    for msg in messages:
        if isinstance(msg, str):
            role, text = "user", ctx.clean(msg)
        elif isinstance(msg, dict):
            role = str(msg.get("role", "user")).lower()
            text = _content(ctx, msg.get("content"))
        else:
            raise TypeError(type(msg).__name__)
        if role in _SYSTEM:
            system.append(text)
            continue
        if role not in _ASSISTANT:
            if role not in _USER:
                ctx.report.note("unknown_roles_as_user")
            if system:
                text = "\n\n".join([*system, text])
                system = []
            if last == "user":
                prompts[-1] = prompts[-1] + "\n\n" + text
            else:
                prompts.append(text)
            last = "user"
        else:
            if last == "assistant":
                history[-1] = history[-1] + "\n\n" + text
            else:
                if len(history) == len(prompts):  # assistant speaks first: empty user turn
                    prompts.append("")
                history.append(text)
            last = "assistant"
    if system:  # system text after the last user turn (or no user turn at all)
        ctx.report.note("trailing_system_messages")
        if last == "user":
            prompts[-1] = prompts[-1] + "\n\n" + "\n\n".join(system)
        else:
            prompts.append("\n\n".join(system))
            last = "user"
    if last == "assistant" or not prompts:
        ctx.report.note("input_ends_with_assistant" if prompts else "empty_inputs")
        prompts.append("")
    return prompts, history


def _answer_text(ctx: ReadContext, output) -> str:
    output = _maybe_json(output)
    if isinstance(output, str):
        return ctx.clean(output)
    if isinstance(output, dict):
        answer = output.get("answer", output)
        answer = _maybe_json(answer)
        if isinstance(answer, str):
            return ctx.clean(answer)
        if isinstance(answer, dict):
            return _content(ctx, answer.get("content"))
    raise TypeError(type(output).__name__)


def _answer_preference(output) -> str | None:
    """``chosen``/``rejected`` from an output's ``answer.label`` (RMB-style), if any."""
    if isinstance(output, dict) and isinstance(output.get("answer"), dict):
        label = output["answer"].get("label")
        if isinstance(label, dict):
            pref = label.get("preference")
            if isinstance(pref, str):
                return pref.strip().lower()
    return None


def _rm_label(ctx, meta, outputs, row) -> tuple[list[float] | None, str | None]:
    """(label, why-bad) for one record; (None, None) when it carries no label at all."""
    preferred = meta.get("preferred") if isinstance(meta, dict) else None
    if preferred is None:
        prefs = [_answer_preference(o) for o in outputs]
        if prefs == ["chosen", "rejected"]:
            return A, None
        if prefs == ["rejected", "chosen"]:
            return B, None
        return None, None
    key = str(preferred).strip().lower()
    if key in ("a", "response_a"):
        return A, None
    if key in ("b", "response_b"):
        return B, None
    if key in ("tie", "draw", "both", "equal", "none"):
        return TIE, None
    return None, f"preferred {str(preferred)[:40]!r} is not A, B or tie"


def read_rm_gallery(path: str | Path, *, on_bad_row: str = "error", strength: str = "weight") -> pd.DataFrame:
    """RM-Gallery chat-style pairwise data (Parquet, or JSON / JSON lines of the same
    records): ``input`` = messages ``{role, content}``, ``output`` = two responses each
    ``{"answer": {role, content, ...}}``, ``metadata.preferred`` in A/B/tie and optional
    ``metadata.preference_strength`` (see the module notes for how it is used).

    ``id`` = ``unique_id`` (or ``id``; the row number when neither exists). Records with no
    label anywhere in the file make an unlabelled table.
    """
    if strength not in STRENGTH_MODES:
        raise InputError(f"strength must be one of {list(STRENGTH_MODES)}, got {strength!r}")
    ctx = ReadContext(path, "rm_gallery", on_bad_row)
    name = ctx.path.name.lower()
    if name.endswith(".parquet") or name.endswith(".pq"):
        records = list(enumerate(read_parquet_records(ctx), start=1))
    else:
        records = read_json_or_jsonl(ctx)
    n_read = len(records) + ctx.report.skipped.get("invalid_json", 0)

    parsed = []
    any_label = False
    any_strength = False  # keep preference_strength as a column when the file has one
    for row, rec in records:
        if not isinstance(rec, dict):
            ctx.bad("not_an_object", "expected a record (object)", row=row)
            continue
        if "input" not in rec or "output" not in rec:
            ctx.bad("missing_field", "missing field", row=row, column="input" if "input" not in rec else "output")
            continue
        try:
            prompts, history = conversation_turns(ctx, rec["input"])
        except TypeError as err:
            ctx.bad("bad_input", f"expected a list of messages {{role, content}} (found {err})", row=row, column="input")
            continue
        outputs = _maybe_json(rec["output"])
        if not isinstance(outputs, list) or len(outputs) != 2:
            n_out = len(outputs) if isinstance(outputs, list) else type(outputs).__name__
            ctx.bad("not_two_outputs", f"expected exactly two outputs, found {n_out}", row=row, column="output")
            continue
        try:
            answers = [_answer_text(ctx, o) for o in outputs]
        except TypeError as err:
            ctx.bad("bad_output", f"expected outputs with an answer {{role, content}} (found {err})", row=row, column="output")
            continue
        meta = _maybe_json(rec.get("metadata"))
        label, why = _rm_label(ctx, meta, outputs, row)
        if why is not None:
            ctx.bad("label_invalid", why, row=row, column="metadata.preferred")
            continue
        any_label = any_label or label is not None
        weight = 1.0
        s = meta.get("preference_strength") if isinstance(meta, dict) else None
        raw_strength = as_number(s) if s is not None else math.nan
        if s is not None and not math.isfinite(raw_strength):
            ctx.bad("strength_invalid", "preference_strength is not a number", row=row, column="metadata.preference_strength")
            continue
        any_strength = any_strength or s is not None
        if label is not None and label is not TIE and strength != "ignore" and s is not None:
            s = abs(raw_strength)
            if s > 0:
                if strength == "weight":
                    weight = s
                else:
                    win = min(1.0, 0.5 + s / (2 * MAX_STRENGTH))
                    label = [win, 1 - win, 0.0] if label is A else [1 - win, win, 0.0]
        uid = rec.get("unique_id", rec.get("id"))
        id_ = ctx.clean(str(uid)) if uid is not None and str(uid) != "" else str(row)
        parsed.append((row, id_, prompts, history + [answers[0]], history + [answers[1]], label, weight, raw_strength))

    keep = []
    for row, *_rest, label, _w, _s in parsed:
        if any_label and label is None:
            ctx.bad("label_missing", "label missing (no metadata.preferred)", row=row, column="metadata.preferred")
            keep.append(False)
        else:
            keep.append(True)
    _unique_ids(ctx, [p[1] for p in parsed], [p[0] for p in parsed], "unique_id", keep)
    sel = [p for p, k in zip(parsed, keep) if k]
    pairs = make_pairs(
        [p[1] for p in sel],
        [p[2] for p in sel],
        [p[3] for p in sel],
        [p[4] for p in sel],
        labels=np.array([p[5] for p in sel]) if any_label and sel else None,
        weights=[p[6] for p in sel],
        **({"preference_strength": [p[7] for p in sel]} if any_strength else {}),
    )
    return ctx.finish(pairs, n_read, validate=validate_pairs)


# --------------------------------------------------------------------------- AlpacaEval


def _alpaca_label(ctx: ReadContext, value, row: int) -> list[float] | None | str:
    """Label from an AlpacaEval ``preference``; ``"null"`` for a null preference."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "null"
    x = as_number(value)
    if x == 1.0:
        return A
    if x == 2.0:
        return B
    if x == 0.0 or x == 1.5:
        return TIE
    if 1.0 < x < 2.0:
        return [2.0 - x, x - 1.0, 0.0]
    ctx.bad("label_invalid", f"preference {str(value)[:40]!r} is not 0, 1, 2 or a number in (1, 2)", row=row, column="preference")
    return None


def read_alpaca_eval(path: str | Path, *, on_bad_row: str = "error") -> pd.DataFrame:
    """AlpacaEval annotations (a JSON list, or JSON lines) with ``instruction``,
    ``output_1``, ``output_2``, ``preference``, ``generator_1/2`` (-> ``model_a/b``).

    ``id`` = the record's ``id`` when present, else a hash of instruction, outputs and
    generators (``#2``, ``#3`` appended for repeats). An ``input`` field, when non-empty,
    is appended to the instruction after a blank line.
    """
    ctx = ReadContext(path, "alpaca_eval", on_bad_row)
    records = read_json_or_jsonl(ctx)
    n_read = len(records) + ctx.report.skipped.get("invalid_json", 0)
    has_models = any(isinstance(r, dict) and ("generator_1" in r or "generator_2" in r) for _, r in records)

    ids, rows, prompts, ra, rb, labels, ma, mb = [], [], [], [], [], [], [], []
    counts: dict[str, int] = {}
    for row, rec in records:
        if not _has_fields(ctx, rec, row, ("instruction", "output_1", "output_2", "preference")):
            continue
        label = _alpaca_label(ctx, rec["preference"], row)
        if label is None:
            continue
        if label == "null":
            ctx.report.skip("preference_null", ctx.error("preference is null", row=row, column="preference").one_line())
            continue
        texts = [_text(ctx, rec[f], row, f) for f in ("instruction", "output_1", "output_2")]
        if any(t is None for t in texts):
            continue
        instruction, out1, out2 = texts
        extra = rec.get("input")
        if isinstance(extra, str) and extra.strip():
            instruction = instruction + "\n\n" + ctx.clean(extra)
        g1 = rec.get("generator_1")
        g2 = rec.get("generator_2")
        g1 = "" if g1 is None else ctx.clean(str(g1))
        g2 = "" if g2 is None else ctx.clean(str(g2))
        if rec.get("id") is not None:
            id_ = ctx.clean(str(rec["id"]))
        else:
            base = _hash(instruction, out1, out2, g1, g2)
            counts[base] = counts.get(base, 0) + 1
            id_ = base if counts[base] == 1 else f"{base}#{counts[base]}"
        ids.append(id_)
        rows.append(row)
        prompts.append([instruction])
        ra.append([out1])
        rb.append([out2])
        labels.append(label)
        ma.append(g1)
        mb.append(g2)

    keep = [True] * len(ids)
    _unique_ids(ctx, ids, rows, "id", keep)
    sel = [i for i, k in enumerate(keep) if k]
    optional = {"model_a": [ma[i] for i in sel], "model_b": [mb[i] for i in sel]} if has_models else {}
    pairs = make_pairs(
        [ids[i] for i in sel],
        [prompts[i] for i in sel],
        [ra[i] for i in sel],
        [rb[i] for i in sel],
        labels=np.array([labels[i] for i in sel]) if sel else None,
        **optional,
    )
    return ctx.finish(pairs, n_read, validate=validate_pairs)


# --------------------------------------------------------------------------- votes

VOTE_WINNERS = {"left": 0, "x": 0, "a": 0, "right": 1, "y": 1, "b": 1, "tie": 2, "draw": 2}


def read_votes(path: str | Path, aggregate: bool = True, *, on_bad_row: str = "error") -> pd.DataFrame:
    """Crowd votes, several per pair (LLMFAO layout): ``winner`` (left/right/tie),
    ``prompt_text``, ``result_x`` (left text), ``result_y`` (right text), optional ``left``
    / ``right`` (model names -> ``model_a``/``model_b``), ``pair_id``, ``worker``.

    ``aggregate=True``: one row per pair with label = vote shares (A, B, tie), ``weight`` =
    ``n_votes`` = number of votes; the same pair in both orders is merged (votes of the
    reversed rows swapped). ``id`` is the ``pair_id`` of the pair's first vote (a hash of
    the pair when there is no usable ``pair_id``). ``aggregate=False``: one row per vote,
    hard label, ``id`` = the data row number.
    """
    ctx = ReadContext(path, "votes", on_bad_row)
    raw = read_csv_text(ctx)
    require_columns(ctx, raw, ("winner", "prompt_text", "result_x", "result_y"))
    names = "left" in raw.columns and "right" in raw.columns
    has_pair_id = "pair_id" in raw.columns
    n = len(raw)
    col = {c: raw[c].tolist() for c in raw.columns}

    votes = []  # (row, prompt, name_x, name_y, text_x, text_y, class index, pair_id)
    for i in range(n):
        row = i + 1
        w = str(col["winner"][i]).strip().lower()
        if w not in VOTE_WINNERS:
            ctx.bad("label_invalid", f"winner {w[:40]!r} is not left, right or tie", row=row, column="winner")
            continue
        prompt = ctx.clean(col["prompt_text"][i])
        tx, ty = ctx.clean(col["result_x"][i]), ctx.clean(col["result_y"][i])
        if not tx or not ty:
            ctx.report.note("empty_texts", int(not tx) + int(not ty))
        nx = ctx.clean(col["left"][i].strip()) if names else ""
        ny = ctx.clean(col["right"][i].strip()) if names else ""
        pid = col["pair_id"][i].strip() if has_pair_id else ""
        votes.append((row, prompt, nx, ny, tx, ty, VOTE_WINNERS[w], pid))

    optional = {}
    if not aggregate:
        if names:
            optional = {"model_a": [v[2] for v in votes], "model_b": [v[3] for v in votes]}
        labels = np.eye(3)[[v[6] for v in votes]] if votes else None
        pairs = make_pairs(
            [str(v[0]) for v in votes],
            [[v[1]] for v in votes],
            [[v[4]] for v in votes],
            [[v[5]] for v in votes],
            labels=labels,
            n_votes=[1] * len(votes),
            **optional,
        )
        return ctx.finish(pairs, n, validate=validate_pairs)

    groups: dict[tuple, dict] = {}
    flipped = 0
    for row, prompt, nx, ny, tx, ty, cls, pid in votes:
        key = (prompt, nx, ny, tx, ty)
        rev = (prompt, ny, nx, ty, tx)
        if key in groups:
            g = groups[key]
        elif rev in groups:
            g = groups[rev]
            cls = (1, 0, 2)[cls]
            flipped += 1
            g["both_orders"] = True
        else:
            g = groups[key] = {"key": key, "counts": [0, 0, 0], "pair_id": pid, "both_orders": False}
        g["counts"][cls] += 1
    if flipped:
        ctx.report.note("votes_in_reversed_order_merged", flipped)
        ctx.report.note("pairs_seen_in_both_orders", sum(g["both_orders"] for g in groups.values()))
    glist = list(groups.values())
    pair_ids = [g["pair_id"] for g in glist]
    use_pair_ids = has_pair_id and all(pair_ids) and len(set(pair_ids)) == len(pair_ids)
    ids = pair_ids if use_pair_ids else [_hash(*g["key"]) for g in glist]
    counts = np.array([g["counts"] for g in glist], dtype=float).reshape(len(glist), 3)
    n_votes = counts.sum(axis=1)
    if names:
        optional = {"model_a": [g["key"][1] for g in glist], "model_b": [g["key"][2] for g in glist]}
    pairs = make_pairs(
        ids,
        [[g["key"][0]] for g in glist],
        [[g["key"][3]] for g in glist],
        [[g["key"][4]] for g in glist],
        labels=counts / n_votes[:, None] if len(glist) else None,
        weights=n_votes,
        n_votes=n_votes.astype(int).tolist(),
        **optional,
    )
    return ctx.finish(pairs, n, validate=validate_pairs)


# --------------------------------------------------------------------------- documents

DOC_ID_COLUMNS = ("document_id", "ids", "id", "doc_id")
DOC_TEXT_COLUMNS = ("text", "V3", "full_text")
DOC_WINNERS = {"a": 0, "doc_a": 0, "b": 1, "doc_b": 1, "tie": 2}


def _pick(ctx: ReadContext, df: pd.DataFrame, given: str | None, candidates, what: str) -> str:
    if given is not None:
        if given not in df.columns:
            raise ctx.error(f"missing {what} column", column=given)
        return given
    for c in candidates:
        if c in df.columns:
            return c
    raise ctx.error(f"no {what} column (looked for {', '.join(candidates)})", column=candidates[0])


def read_documents(path: str | Path, *, id_column: str | None = None, text_column: str | None = None) -> pd.DataFrame:
    """A document table -> items (``id``, ``text``). Id column: ``document_id``, ``ids``,
    ``id`` or ``doc_id``; text column: ``text``, ``V3`` or ``full_text`` (or as given).
    An id listed again with the same text is kept once (noted: the SentimentIt table lists
    47 boilerplate texts under several countries); with a different text it is an error."""
    ctx = ReadContext(path, "documents")
    raw = read_csv_text(ctx, allow_skip_lines=False)
    id_col = _pick(ctx, raw, id_column, DOC_ID_COLUMNS, "document id")
    text_col = _pick(ctx, raw, text_column, DOC_TEXT_COLUMNS, "document text")
    ids = [ctx.clean(str(x).strip()) for x in raw[id_col]]
    for i, id_ in enumerate(ids):
        if not id_:
            raise ctx.error("empty document id", row=i + 1, column=id_col)
    texts = [ctx.clean(str(t)) for t in raw[text_col]]
    first: dict[str, int] = {}
    keep = []
    for i, id_ in enumerate(ids):
        if id_ not in first:
            first[id_] = i
            keep.append(i)
        elif texts[i] == texts[first[id_]]:
            ctx.report.note("repeated_doc_ids_same_text")  # same document listed twice (e.g. per country)
        else:
            raise ctx.error(
                f"document id {id_[:60]!r} repeats row {first[id_] + 1} with a different text", row=i + 1, column=id_col
            )
    items = pd.DataFrame({"id": [ids[i] for i in keep], "text": [texts[i] for i in keep]})
    return ctx.finish(items, len(raw), validate=validate_items)


def read_comparisons(
    comparisons_path: str | Path,
    docs_path: str | Path | None = None,
    *,
    on_bad_row: str = "error",
    doc_id_column: str | None = None,
    doc_text_column: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Crowd comparisons of documents (SentimentIt layout) -> ``(pairs, items)``.

    Comparisons: ``doc_a``, ``doc_b``, ``winner`` (a / b, or tie; the winning doc's id is
    accepted too), optional ``comparison_id`` (-> ``id``; the row number otherwise).
    Pairs carry ``item_a``/``item_b``, the document texts as one-turn responses and an
    empty prompt; ``group`` is the unordered document pair. A comparison naming a document
    absent from the document table is a bad row (``unknown_doc``). The document table is
    ``docs.csv`` (optionally compressed) beside the comparisons unless ``docs_path`` is given.
    """
    if docs_path is None:
        docs_path = find_file(Path(comparisons_path).parent, "docs")
        if docs_path is None:
            raise InputError("no document table: pass --docs (looked for docs.csv* beside it)", file=str(comparisons_path))
    items = read_documents(docs_path, id_column=doc_id_column, text_column=doc_text_column)
    texts = dict(zip(items["id"], items["text"]))
    ctx = ReadContext(comparisons_path, "comparisons", on_bad_row)
    raw = read_csv_text(ctx)
    require_columns(ctx, raw, ("doc_a", "doc_b", "winner"))
    has_cid = "comparison_id" in raw.columns
    col = {c: raw[c].tolist() for c in raw.columns}
    ids, rows, da, db, labels = [], [], [], [], []
    for i in range(len(raw)):
        row = i + 1
        a, b = ctx.clean(col["doc_a"][i].strip()), ctx.clean(col["doc_b"][i].strip())
        bad = next(((c, d) for c, d in (("doc_a", a), ("doc_b", b)) if d not in texts), None)
        if bad is not None:
            ctx.bad("unknown_doc", f"document id {bad[1][:60]!r} is not in {docs_path}", row=row, column=bad[0])
            continue
        w = str(col["winner"][i]).strip()
        cls = DOC_WINNERS.get(w.lower())
        if cls is None:
            cls = 0 if w == a else 1 if w == b else None
        if cls is None:
            ctx.bad("label_invalid", f"winner {w[:40]!r} is not a, b or tie", row=row, column="winner")
            continue
        ids.append(ctx.clean(col["comparison_id"][i].strip()) if has_cid and col["comparison_id"][i].strip() else str(row))
        rows.append(row)
        da.append(a)
        db.append(b)
        labels.append(cls)
    keep = [True] * len(ids)
    _unique_ids(ctx, ids, rows, "comparison_id" if has_cid else "id", keep)
    sel = [i for i, k in enumerate(keep) if k]
    pairs = make_pairs(
        [ids[i] for i in sel],
        [[""] for _ in sel],
        [[texts[da[i]]] for i in sel],
        [[texts[db[i]]] for i in sel],
        labels=np.eye(3)[[labels[i] for i in sel]] if sel else None,
        groups=[pair_group(da[i], db[i]) for i in sel],
        item_a=[da[i] for i in sel],
        item_b=[db[i] for i in sel],
    )
    return ctx.finish(pairs, len(raw), validate=validate_pairs), items


# --------------------------------------------------------------------------- absolute scores


class ScorePreset(NamedTuple):
    id_column: str
    text_column: str
    score_columns: tuple[str, ...]


SCORE_PRESETS = {
    "fb3_ell": ScorePreset(
        "text_id", "full_text", ("cohesion", "syntax", "vocabulary", "phraseology", "grammar", "conventions")
    ),
    "commonlit": ScorePreset("id", "excerpt", ("target", "standard_error")),
}


def read_scores_csv(
    path: str | Path,
    id_column: str | None = None,
    text_column: str | None = None,
    score_columns=None,
    *,
    preset: str | None = None,
    on_bad_row: str = "error",
) -> pd.DataFrame:
    """Texts with absolute scores -> items (``id``, ``text``, one float column per score,
    named as in the file). ``preset`` (``fb3_ell``, ``commonlit``) fills the column names
    not given. A score that is empty or not a finite number is a bad row."""
    if preset is not None:
        if preset not in SCORE_PRESETS:
            raise InputError(f"unknown score preset {preset!r}; known: {sorted(SCORE_PRESETS)}")
        p = SCORE_PRESETS[preset]
        id_column = id_column or p.id_column
        text_column = text_column or p.text_column
        score_columns = score_columns if score_columns is not None else p.score_columns
    if not id_column or not text_column or score_columns is None:
        raise InputError("read_scores_csv needs id_column, text_column and score_columns (or a preset)")
    score_columns = [score_columns] if isinstance(score_columns, str) else list(score_columns)
    ctx = ReadContext(path, preset or "scores", on_bad_row)
    raw = read_csv_text(ctx)
    require_columns(ctx, raw, (id_column, text_column, *score_columns))
    clash = [c for c in score_columns if c in ("id", "text")]
    if clash:
        raise ctx.error("a score column may not be called 'id' or 'text'", column=clash[0])
    col = {c: raw[c].tolist() for c in (id_column, text_column, *score_columns)}
    ids, rows, texts, scores = [], [], [], []
    for i in range(len(raw)):
        row = i + 1
        id_ = ctx.clean(str(col[id_column][i]).strip())
        if not id_:
            ctx.bad("missing_id", "empty id", row=row, column=id_column)
            continue
        values = []
        for c in score_columns:
            text = str(col[c][i]).strip()
            x = as_number(text)
            if not math.isfinite(x):
                ctx.bad("score_not_numeric", f"score {text[:40]!r} is not a number", row=row, column=c)
                break
            values.append(x)
        else:
            ids.append(id_)
            rows.append(row)
            texts.append(ctx.clean(str(col[text_column][i])))
            scores.append(values)
    keep = [True] * len(ids)
    _unique_ids(ctx, ids, rows, id_column, keep)
    sel = [i for i, k in enumerate(keep) if k]
    items = pd.DataFrame({"id": [ids[i] for i in sel], "text": [texts[i] for i in sel]})
    arr = np.array([scores[i] for i in sel], dtype=float).reshape(len(sel), len(score_columns))
    for j, c in enumerate(score_columns):
        items[c] = arr[:, j]
    return ctx.finish(items, len(raw), validate=validate_items)


def read_fb3_ell(path: str | Path, *, on_bad_row: str = "error") -> pd.DataFrame:
    return read_scores_csv(path, preset="fb3_ell", on_bad_row=on_bad_row)


def read_commonlit(path: str | Path, *, on_bad_row: str = "error") -> pd.DataFrame:
    return read_scores_csv(path, preset="commonlit", on_bad_row=on_bad_row)


# --------------------------------------------------------------------------- internal parquet


def read_pairs_parquet(path: str | Path, *, on_bad_row: str = "error") -> pd.DataFrame:
    """A pair table written by ``prefkit read --out`` (or ``DataFrame.to_parquet``): turn
    columns come back from Parquet as arrays and are turned into lists again, then the
    table is validated. The original read report, if stored, stays in ``attrs``.

    The table was validated when it was written, so a bad row is always an error
    (``on_bad_row="skip"`` drops nothing)."""
    ctx = ReadContext(path, "parquet", on_bad_row)
    from prefkit.data.fileio import existing_file

    existing_file(ctx)
    try:
        df = pd.read_parquet(ctx.path)
    except Exception as err:  # pyarrow's own error types, OSError, ValueError
        raise ctx.error(f"cannot read as Parquet: {' '.join(str(err).split())[:300]}") from None
    for col in ("prompt", "response_a", "response_b"):
        if col in df.columns:
            df[col] = [list(v) if isinstance(v, (list, tuple, np.ndarray)) else v for v in df[col]]
    validate_pairs(df, source=ctx.file)
    return df

