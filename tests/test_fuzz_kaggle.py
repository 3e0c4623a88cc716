"""Fuzzing the Kaggle CSV reader: whatever the file holds, it returns a valid pair table or
raises InputError -- never any other exception, never a string that cannot be encoded."""

from __future__ import annotations

import csv
import gzip
import io
import json
import lzma
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefkit.data import get_report, read_kaggle_csv
from prefkit.data.kaggle import parse_turns
from prefkit.data.report import ReadContext
from prefkit.errors import InputError
from prefkit.schema import validate_pairs

HEADER = ["id", "model_a", "model_b", "prompt", "response_a", "response_b", "winner_model_a", "winner_model_b", "winner_tie"]

FRAGMENTS = ['[', ']', '"', "null", '["a"', "[null]", '["a", null]', "\\ud83d", '["\\ud83d"]', '["\\ude00 x"]',
             '{"a": 1}', "[[[", "[]", '""', "\n", "\r\n", ",", "\\", "NaN", "1e999", "\x00", '["""]']
SURROGATES = st.sampled_from(["\ud83d", "\udc00", "\udfff"])

text = st.text(max_size=12)
fragment = st.one_of(st.sampled_from(FRAGMENTS), text, SURROGATES)
json_cell = st.lists(st.one_of(st.none(), text, st.integers(), SURROGATES), max_size=3).map(
    lambda xs: json.dumps(xs, ensure_ascii=bool(len(xs) % 2))
)
cell = st.one_of(json_cell, st.lists(fragment, max_size=4).map("".join), st.just(""), st.just("null"))
label = st.one_of(st.sampled_from([0, 1, "1.0", "0.0", "", "x", "nan", "inf", 2, -1, " 1", "True"]), st.text(max_size=3))
one_hot = st.sampled_from([(1, 0, 0), (0, 1, 0), (0, 0, 1)])
row = st.tuples(
    st.one_of(st.integers(0, 6).map(str), st.text(max_size=3)),  # ids: repeats likely
    text,
    text,
    cell,
    cell,
    cell,
    st.one_of(one_hot, st.tuples(label, label, label)),
)


def _file_bytes(rows, drop, encode_errors) -> bytes:
    header = [c for c in HEADER if c not in drop]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for id_, ma, mb, p, a, b, lab in rows:
        full = dict(zip(HEADER, [id_, ma, mb, p, a, b, *lab]))
        w.writerow([full[c] for c in header])
    return buf.getvalue().encode("utf-8", encode_errors)


def _check(path: Path, on_bad_row: str) -> None:
    try:
        df = read_kaggle_csv(path, on_bad_row=on_bad_row)
    except InputError as err:
        assert "\n" not in err.one_line()
        return
    validate_pairs(df)
    assert len(df) > 0 and get_report(df) is not None
    for col in ("prompt", "response_a", "response_b"):
        lengths = df[col].map(len).to_numpy()
        assert (lengths >= 1).all()
        for turns in df[col]:
            for t in turns:
                t.encode("utf-8")  # no lone surrogates survive
    assert np.array_equal(df["prompt"].map(len), df["response_a"].map(len))
    assert np.array_equal(df["prompt"].map(len), df["response_b"].map(len))
    df.to_parquet(path.with_suffix(".parquet"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(row, max_size=6),
    drop=st.one_of(st.just(frozenset()), st.frozensets(st.sampled_from(HEADER), max_size=2)),
    encode_errors=st.sampled_from(["surrogatepass", "surrogateescape", "replace"]),
    compression=st.sampled_from(["", ".gz", ".xz", ".xz-truncated"]),
    on_bad_row=st.sampled_from(["error", "skip"]),
)
def test_kaggle_reader_returns_valid_pairs_or_input_error(rows, drop, encode_errors, compression, on_bad_row):
    try:
        data = _file_bytes(rows, drop, encode_errors)
    except UnicodeEncodeError:  # surrogateescape cannot write every surrogate: write them raw
        data = _file_bytes(rows, drop, "surrogatepass")
    suffix = compression.replace("-truncated", "")
    if suffix == ".gz":
        data = gzip.compress(data)
    elif suffix == ".xz":
        data = lzma.compress(data)
        if compression.endswith("truncated"):
            data = data[: len(data) // 2]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"train.csv{suffix}"
        path.write_bytes(data)
        _check(path, on_bad_row)


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=200), on_bad_row=st.sampled_from(["error", "skip"]))
def test_kaggle_reader_on_arbitrary_bytes(data, on_bad_row):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.csv"
        path.write_bytes(b"id,prompt,response_a,response_b\n" + data if data[:1] != b"\xff" else data)
        _check(path, on_bad_row)


@settings(max_examples=200, deadline=None)
@given(value=st.one_of(cell, st.text(), st.lists(fragment).map("".join)))
def test_parse_turns_always_gives_encodable_turns(value):
    ctx = ReadContext("x.csv", "kaggle", on_bad_row="skip")
    turns = parse_turns(value, ctx)
    if turns is None:  # a corrupt JSON list: a counted bad row, never a crash
        assert ctx.report.skipped == {"malformed_json": 1}
        return
    assert isinstance(turns, list) and len(turns) >= 1
    for t in turns:
        assert isinstance(t, str)
        t.encode("utf-8")
