"""jsontext: orjson's speed, the standard library's meaning (values, errors, refusals)."""

from __future__ import annotations

import datetime as dt
import decimal
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest_assets import jsontext
from ingest_assets.records.encode import RawEncoder

_STDLIB = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, default=str, separators=(",", ":")
).encode


def _outcome(parse: Any, data: Any) -> tuple:
    try:
        value = parse(data)
    except RecursionError:
        return ("recursion",)
    except ValueError as exc:
        return ("error", type(exc).__name__, str(exc))
    # NaN != NaN: compare the standard library's own rendering of what was parsed
    return ("ok", json.dumps(value, allow_nan=True), type(value).__name__)


EDGES = [
    b"NaN",
    b'{"a": NaN, "b": -Infinity}',
    b'["\\ud800"]',  # an unpaired surrogate: orjson refuses, json keeps it
    b"123456789012345678901234567890",  # past 64 bits: orjson would read a float
    b"-9223372036854775809",
    b"18446744073709551616",
    b'{"n": 12345678901234567890123}',
    b'"a\\u0000b"',
    b'{"a": 1, "a": 2}',
    b"1e400",
    b"[1.0, 1e16, -0, 0.1, -0.0]",
    b'\xef\xbb\xbf{"a": 1}',  # a BOM
    '{"a": "é"}'.encode("utf-16"),
    b"[" * 3000 + b"]" * 3000,
    b"{bad",
    b"",
    b'{"x": "\\u00e9\\n\\t\\"/"}',
    b'{"a": 1} trailing',
    '{"text": "caf\u00e9"}',  # str input
]


@pytest.mark.parametrize("data", EDGES, ids=range(len(EDGES)))
def test_loads_means_what_json_loads_means(data: bytes | str) -> None:
    assert _outcome(jsontext.loads, data) == _outcome(json.loads, data)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_loads_and_dumps_agree_with_the_standard_library(value: Any) -> None:
    try:
        expected = _STDLIB(value)
    except ValueError:  # a non-finite number: refused by both
        with pytest.raises(ValueError):
            jsontext.dumps(value)
        with pytest.raises(ValueError):
            jsontext.dumps_array([value])
        return
    text = jsontext.dumps(value)
    # The same value; the text may only differ in how an exponent is written (1e-07 / 1e-7).
    assert json.loads(text) == json.loads(expected)
    if value is not None:  # a missing value stays missing (null), not the text "null"
        assert jsontext.dumps_array([value, None]).to_pylist() == [text, None]
    if all(c not in expected for c in "eE") or not any(c.isdigit() for c in expected):
        assert text == expected
    body = json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")
    assert _outcome(jsontext.loads, body) == _outcome(json.loads, body)


def test_dumps_refuses_what_cannot_be_stored_and_keeps_other_values() -> None:
    with pytest.raises(ValueError):
        jsontext.dumps({"x": [1, float("nan")]})
    with pytest.raises(UnicodeEncodeError):
        jsontext.dumps_array([{"s": "\ud800"}])
    assert jsontext.dumps({"s": "\ud800"}) == '{"s":"\ud800"}'  # kept; encoding it fails
    assert jsontext.dumps({"n": 2**70, 1: None}) == '{"n":1180591620717411303424,"1":null}'
    assert jsontext.dumps({"d": dt.datetime(2024, 6, 1, 12)}) == '{"d":"2024-06-01 12:00:00"}'
    assert jsontext.dumps({"m": decimal.Decimal("1.50")}) == '{"m":"1.50"}'
    deep: Any = 1
    for _ in range(400):  # deeper than orjson writes
        deep = [deep]
    assert json.loads(jsontext.dumps(deep)) == deep


def test_a_day_profiles_the_same_in_one_batch_or_in_many() -> None:
    """Drift profiles are gathered across pages: the result may not depend on page size."""
    records = [
        {
            "id": i,
            "name": f" item {i} " if i % 7 else "",
            "amount": str(i * 1.5) if i % 3 else "n/a",
            "flag": ["true", " FALSE ", "maybe", None][i % 4],
            "price": i / 4 if i % 5 else i,
            "tags": ["a", "b"] if i % 2 else None,
            "mixed": [i, "x", {"k": i}, None, True][i % 5],
        }
        for i in range(3000)
    ]
    whole = RawEncoder()
    whole.encode(records)
    paged = RawEncoder()
    for start in range(0, len(records), 7):
        paged.encode(records[start : start + 7])
    assert list(paged.profiles) == list(whole.profiles)
    assert paged.profiles == whole.profiles
    flag = whole.profiles["flag"]
    assert flag.text_booleans == 1500 and flag.kinds == {"string": 2250}
    amount = whole.profiles["amount"]
    assert amount.text_numbers == 2000 and amount.kinds == {"string": 3000}
    assert whole.profiles["name"].kinds == {"string": 3000 - 429}
    assert sum(whole.profiles["price"].kinds.values()) == 3000
