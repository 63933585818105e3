"""JSON in and out of the record path: the standard library's meaning, orjson's speed.

Parsing and encoding records is most of the CPU a raw stage spends (a py-spy profile of
``fetch_vs_threads``: ``json.loads``, ``json.dumps`` of every record and of every nested value,
and of every page again for the resume checkpoint, about a third of all samples). orjson does
the same work several times faster, but its meaning differs at the edges, so it is only ever a
fast path for input where both agree; anything else takes the standard library, which then
decides exactly as before:

- parsing: orjson refuses ``NaN``/``Infinity``, unpaired surrogates, UTF-16/32 and a BOM, and
  nesting past its limit (the standard library accepts or raises as it always did); it reads
  integers past 64 bits as floats, so a body with a run of 19 or more digits is not given to it;
- encoding: orjson writes ``NaN`` as ``null`` (the standard library refuses it, which is how an
  unstorable record is found), so an encoding holding ``null`` is redone by the standard
  library; it refuses integers past 64 bits, non-text keys and deep nesting (redone too).

A ``Decimal`` is written as a JSON string of its exact digits (``"12.50"``, never ``1E+1``
nor a float); other values JSON has no type for as their ``str``.

Both write compact text (``{"a":1,"b":[1.5,"x"]}``) and differ only in how a float's exponent
is written (orjson ``1e-7``, the standard library ``1e-07``, the same number). Which path
encodes a value depends on the value alone, so a given record always gets the same text.
"""

from __future__ import annotations

import decimal
import json
from collections.abc import Sequence
from typing import Any

import orjson
import pyarrow as pa

# Digits all read as "0": a run of 19 zeros is a run of 19 digits (bytes.translate and ``in``
# scan a page many times faster than a regular expression would).
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN = b"0" * 19
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def decimal_text(value: decimal.Decimal) -> str:
    """A decimal's exact digits in positional notation (``Decimal("1E-7")`` → ``0.0000001``)."""
    return format(value, "f") if value.is_finite() else str(value)


def _default(value: Any) -> str:
    if isinstance(value, decimal.Decimal):
        return decimal_text(value)
    return str(value)


_stdlib_dumps = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, default=_default, separators=(",", ":")
).encode


def loads(data: bytes | str) -> Any:
    """``json.loads(data)``, exactly: the same values, the same errors."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if _LONG_RUN not in raw.translate(_DIGITS_AS_ZERO):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # the standard library decides: a value orjson refuses, or a real error
    return json.loads(data)


def dumps(value: Any) -> str:
    """Compact JSON text, as ``json.dumps(value, ensure_ascii=False, allow_nan=False,
    default=str, separators=(",", ":"))`` (a ``Decimal`` as its exact digits): raises
    ``ValueError`` for a non-finite number; an unpaired surrogate is kept in the text (encoding
    it as UTF-8 then fails)."""
    try:
        text = orjson.dumps(value, default=_default, option=_OPTIONS)
    except TypeError:  # past 64 bits, a non-text key, deep nesting, a surrogate
        return _stdlib_dumps(value)
    if b"null" in text:  # perhaps a NaN orjson wrote as null: the standard library knows
        return _stdlib_dumps(value)
    return text.decode("utf-8")


def dumps_array(values: Sequence[Any]) -> pa.Array:
    """``[dumps(v) for v in values]`` (``None`` stays null) as an Arrow text array, the same text
    value by value, without a Python call per value when orjson can take them all; raises as
    ``dumps`` and as UTF-8 encoding do (``ValueError``, ``UnicodeEncodeError``)."""
    encode = orjson.dumps
    try:
        blobs = [
            None if v is None else encode(v, default=_default, option=_OPTIONS) for v in values
        ]
    except TypeError:
        blobs = [None if v is None else dumps(v).encode("utf-8") for v in values]
    else:
        # A "null" (perhaps a NaN) anywhere: those values again through ``dumps``. One search
        # of all the texts at once first: most batches hold none.
        if b"null" in b"".join(b for b in blobs if b is not None):
            blobs = [
                b if b is None or b"null" not in b else dumps(v).encode("utf-8")
                for v, b in zip(values, blobs, strict=True)
            ]
    return pa.array(blobs, pa.string())


def holds(array: pa.Array, text: str) -> bool:
    """Whether any value of a text ``array`` may contain ``text`` (a fast search of its data;
    never a false "no")."""
    data = array.buffers()[2]
    return data is not None and text.encode("utf-8") in data.to_pybytes()
