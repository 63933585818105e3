"""Connector batches → Arrow record batches of the raw table, each record encoded once.

Every field column holds text: a string as it came, anything else as its JSON text (``9.5``,
``true``, ``[1, 2]``); an integer past 64 bits keeps all its digits and a ``Decimal`` is its
exact text (``12.50``), never a float. A source is free to send ``"n/a"`` in a numeric field or
to omit a field one day: the raw table takes it as fetched (typing is the split's job), so an odd
record lands in quarantine instead of failing the load of the whole day.

A field's name is data, not an identifier: its column is ``column_name(field)``, a function of
the name alone (so every run of a source appends to the same columns, whatever else the day
holds). A clean lower_snake name is its own column; any other name (another case or script, a
reserved or system name, longer than PostgreSQL's 63 bytes) gets a readable prefix and a hash of
the exact name, so names differing only in case never share a column on DuckDB (whose names are
case-insensitive) nor lose their tail on PostgreSQL. Readers of a top-level field go by its
exact name through ``column_name``; a nested path is read from ``_record``.

A record that no warehouse can store as it is — a non-finite number (JSON has none: ``NaN``,
``Infinity``), an unpaired surrogate (not encodable as UTF-8) or a NUL character (PostgreSQL
text cannot hold one) — is kept as a parse-error record: ``_parse_error`` says why, ``_record``
holds the record with those characters/values made visible (``\\ufffd``, ``"NaN"``). It is then
quarantined, identically on DuckDB and PostgreSQL, instead of failing the day or being altered
silently.
"""

from __future__ import annotations

import decimal
import functools
import hashlib
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ingest_assets import jsontext

SEQ, RECORD, PARSE_ERROR = "_seq", "_record", "_parse_error"
# Where the record came from: ``<archive object>#<index in the page>`` or ``#L<line>``.
SOURCE_REF = "_source_ref"
SYSTEM_COLUMNS = (
    "partition_date", "_run_id", "_ingested_at", RECORD, SEQ, PARSE_ERROR, SOURCE_REF,
)  # fmt: skip
# Names no field column may take: the raw table's own columns (with one the archive adds),
# PostgreSQL's system columns and DuckDB's row id.
RESERVED_COLUMNS = frozenset(
    [*SYSTEM_COLUMNS, "oid", "tableoid", "xmin", "xmax", "cmin", "cmax", "ctid"] + ["rowid"]
)
MAX_COLUMN_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1; DuckDB has no lower limit
_HASH_HEX = 16  # 64 bits of the name's hash: a collision in one table is not a practical risk
_PREFIX_CHARS = 40
_CLEAN = re.compile(r"[a-z_][a-z0-9_]*")
_HASHED = re.compile(rf".*_[0-9a-f]{{{_HASH_HEX}}}")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NOT_IDENT = re.compile(r"[^0-9a-z]+")
_SURROGATE = re.compile("[\ud800-\udfff]")
_dumps = jsontext.dumps


def is_own_column(field: str) -> bool:
    """Whether a field's raw column is named by the field's name itself: a lower_snake ASCII
    name, short enough, not reserved and not of the shape derived names take."""
    return (
        len(field) <= MAX_COLUMN_BYTES
        and _CLEAN.fullmatch(field) is not None
        and field not in RESERVED_COLUMNS
        and _HASHED.fullmatch(field) is None
    )


@functools.lru_cache(maxsize=4096)
def column_name(field: str) -> str:
    """The raw column of a field: the name itself when ``is_own_column``, else a readable
    lower_snake prefix and 16 hex digits of a hash of the exact name (``discount_percentage_
    1f0c…``). Deterministic, stateless, lower-case ASCII within 63 bytes, never reserved: two
    names map to one column only if their hashes collide."""
    field = str(field)
    if is_own_column(field):
        return field
    ascii_name = unicodedata.normalize("NFKD", _CAMEL.sub("_", field))
    ascii_name = ascii_name.encode("ascii", "ignore").decode("ascii").lower()
    prefix = _NOT_IDENT.sub("_", ascii_name)[:_PREFIX_CHARS].strip("_") or "field"
    if prefix[0].isdigit():
        prefix = f"f_{prefix}"
    digest = hashlib.blake2b(field.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
    return f"{prefix}_{digest}"


def _visible(value: Any) -> Any:
    """The value with what cannot be stored made visible: NaN → "NaN", bad characters → U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value).replace("\x00", "\ufffd")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value).replace("inf", "Infinity").replace("nan", "NaN")
    if isinstance(value, Mapping):
        return {_visible(str(k)): _visible(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_visible(v) for v in value]
    return value


def _unstorable(value: Any) -> str | None:
    """Why a value cannot be stored as it is, or None."""
    if isinstance(value, str):
        if "\x00" in value:
            return "a NUL character (U+0000)"
        if _SURROGATE.search(value):
            return "an unpaired surrogate (not valid Unicode)"
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"a non-finite number ({value})"
    if isinstance(value, Mapping):
        for k, v in value.items():
            reason = _unstorable(str(k)) or _unstorable(v)
            if reason:
                return reason
        return None
    if isinstance(value, list | tuple):
        for v in value:
            reason = _unstorable(v)
            if reason:
                return reason
    return None


_SCALAR_TYPES = {pa.string(), pa.int64(), pa.float64(), pa.bool_(), pa.null()}
_PROFILE_ROWS = 200_000  # text values profiled per call, at most (a day's memory holds them)
_BOOLEAN = r"^\s*(?i:true|false)\s*$"


def _count(mask: pa.Array) -> int:
    return pc.sum(mask).as_py() or 0


def _cell(value: Any) -> str | None:
    if value is None or type(value) is str:
        return value
    if isinstance(value, decimal.Decimal):
        return jsontext.decimal_text(value)
    return _dumps(value)


def _nested_kind(values: list[Any]) -> str | None:
    """ "array" or "object" when every present value is a list, or every one a dict; else None."""
    types = set(map(type, values))
    types.discard(type(None))
    if types == {list}:
        return "array"
    if types == {dict}:
        return "object"
    return None


@dataclass
class FieldProfile:
    """What one field looked like across the records of a day (for schema drift)."""

    kinds: dict[str, int] = field(default_factory=dict)
    # non-missing text values that read as a number / a whole number / a boolean
    text_numbers: int = 0
    text_wholes: int = 0
    text_booleans: int = 0
    example: str | None = None


# A number as JSON writes one, plus a leading "+" and surrounding blanks (the value rules').
NUMBER_PATTERN = r"^\s*[+-]?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?\s*$"
_NUMBER = re.compile(NUMBER_PATTERN)
_WHOLE = re.compile(r"^\s*[+-]?(?:0|[1-9][0-9]*)(?:\.0+)?\s*$")


def value_kind(value: Any) -> str | None:
    """The wire type of a value; ``None`` for a missing one (null, NaN, blank text)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return "number"
        return "integer" if value == value.to_integral_value() else "number"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "string" if str(value).strip() else None


class RawEncoder:
    """Encodes one fetch (a source and a day) batch by batch, in the source's order.

    ``_seq`` numbers the records in the order the connector hands them over, which is the
    source's own order (page, place in the page, line of a file), never arrival time. A field's
    column is ``column_name`` of its name, whatever else the day holds; ``columns`` records
    the derivation.
    """

    def __init__(self) -> None:
        self.seq = 0
        # source field name → raw column (``column_name``), in first-seen order
        self.columns: dict[str, str] = {}
        self._fields: dict[str, str] = {}
        self._profiles: dict[str, FieldProfile] = {}
        # Text columns waiting to be profiled together: a pattern test costs the same small
        # fixed price per call, so a day is profiled in a few large calls, not one per page.
        self._pending: dict[str, list[pa.Array]] = {}
        self._pending_rows = 0
        self.parse_errors = 0

    @property
    def profiles(self) -> dict[str, FieldProfile]:
        """What each field looked like in the records encoded so far."""
        self._profile_pending()
        return self._profiles

    def _profile_pending(self, key: str | None = None) -> None:
        """Profile the waiting arrays of ``key`` (of every field when None), in their order."""
        for name in [key] if key is not None else list(self._pending):
            arrays = self._pending.pop(name, None)
            if arrays:
                self._pending_rows -= sum(len(a) for a in arrays)
                self._profile_array(name, pa.concat_arrays(arrays))

    def _column(self, key: str) -> str:
        name = self.columns.get(key)
        if name is None:
            name = column_name(key)
            other = self._fields.get(name)
            if other is not None:
                # Two names, one hash: never merge two fields' values silently.
                raise ValueError(
                    f"fields {other!r} and {key!r} both derive the raw column {name!r}"
                )
            self.columns[key] = name
            self._fields[name] = key
        return name

    def encode(self, records: Sequence[Mapping[str, Any]]) -> pa.RecordBatch:
        """One Arrow batch: ``_seq``, ``_record``, ``_parse_error`` and a text column per field."""
        kept, texts, errors = self._records(records)
        keys: dict[str, None] = {}
        for record in kept:
            keys.update(dict.fromkeys(record))
        keys.pop(PARSE_ERROR, None)
        refs = getattr(records, "refs", None)
        arrays: dict[str, pa.Array] = {
            SEQ: pa.array(range(self.seq, self.seq + len(kept)), pa.int64()),
            RECORD: texts,
            PARSE_ERROR: pa.array(errors, pa.string()),
            SOURCE_REF: pa.array(
                refs if refs is not None and len(refs) == len(kept) else [None] * len(kept),
                pa.string(),
            ),
        }
        self.seq += len(kept)
        for key in keys:
            values = [record.get(key) for record in kept]
            arrays[self._column(key)] = self._text_column(key, values)
        return pa.RecordBatch.from_pydict(arrays)

    def _records(
        self, records: Sequence[Any]
    ) -> tuple[list[Mapping[str, Any]], pa.Array, list[str | None]]:
        """(records, their JSON texts, parse errors): one JSON encoding per record; the slow,
        record-by-record path only for a batch holding something unstorable."""
        if all(isinstance(r, Mapping) for r in records):
            try:
                array = jsontext.dumps_array(records)
                if not jsontext.holds(array, "\\u0000"):
                    errors = [r.get(PARSE_ERROR) for r in records]
                    errors = [None if e is None else str(e) for e in errors]
                    self.parse_errors += sum(e is not None for e in errors)
                    return list(records), array, errors
            except (ValueError, UnicodeEncodeError):
                pass
        kept, texts, errors = [], [], []
        for record in records:
            record, text, error = self._encode_one(record)
            kept.append(record)
            texts.append(text)
            errors.append(error)
        return kept, pa.array(texts, pa.string()), errors

    def _encode_one(self, record: Any) -> tuple[Mapping[str, Any], str, str | None]:
        if not isinstance(record, Mapping):
            record = {PARSE_ERROR: f"not a JSON object: {type(record).__name__}", "_raw": record}
        error = record.get(PARSE_ERROR)
        reason = None
        try:
            text = _dumps(record)
            text.encode("utf-8")
        except (ValueError, UnicodeEncodeError):
            reason = "a value that cannot be stored"
        if reason or "\\u0000" in text:
            found = next(
                (
                    f"{why} in field {_visible(str(k))!r}"
                    for k, v in record.items()
                    if (why := _unstorable(str(k)) or _unstorable(v))
                ),
                reason,
            )
            if found:
                record = _visible(record)
                text = _dumps(record)
                error = (f"{error}; " if error else "") + f"the record holds {found}"
        if error is not None:
            self.parse_errors += 1
            error = str(error)
        return record, text, error

    def _text_column(self, key: str, values: list[Any]) -> pa.Array:
        """The field's values as text; profiled for drift on the way (column-wise where the
        values share one JSON scalar type, value by value otherwise)."""
        nested = _nested_kind(values)
        if nested is not None:
            if not key.startswith("_"):
                self._profile_nested(key, nested, values)
            return jsontext.dumps_array(values)
        try:
            array = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError):
            array = None
        if array is None or array.type not in _SCALAR_TYPES:
            self._profile(key, values)
            return pa.array([_cell(v) for v in values], pa.string())
        if not key.startswith("_"):
            if array.type == pa.string():
                self._profiles.setdefault(key, FieldProfile())  # first-seen order
                self._pending.setdefault(key, []).append(array)
                self._pending_rows += len(array)
                if self._pending_rows >= _PROFILE_ROWS:
                    self._profile_pending()
            else:
                self._profile_array(key, array)
        return array if array.type == pa.string() else array.cast(pa.string())

    def _profile(self, key: str, values: list[Any]) -> None:
        if key.startswith("_"):
            return
        self._profile_pending(key)
        profile = self._profiles.setdefault(key, FieldProfile())
        kinds = profile.kinds
        for value in values:
            kind = value_kind(value)
            if kind is None:
                continue
            kinds[kind] = kinds.get(kind, 0) + 1
            if kind == "string":
                if _NUMBER.match(value):
                    profile.text_numbers += 1
                    if _WHOLE.match(value):
                        profile.text_wholes += 1
                elif value.strip().lower() in ("true", "false"):
                    profile.text_booleans += 1
            if profile.example is None:
                profile.example = str(value)[:80]

    def _profile_nested(self, key: str, kind: str, values: list[Any]) -> None:
        present = len(values) - values.count(None)
        if not present:
            return
        self._profile_pending(key)
        profile = self._profiles.setdefault(key, FieldProfile())
        profile.kinds[kind] = profile.kinds.get(kind, 0) + present
        if profile.example is None:
            profile.example = str(next(v for v in values if v is not None))[:80]

    def _profile_array(self, key: str, array: pa.Array) -> None:
        if array.type != pa.string():
            self._profile_pending(key)
        profile = self._profiles.setdefault(key, FieldProfile())
        kinds = profile.kinds
        present = array.drop_null()
        if not len(present):
            return
        kind_type = array.type
        if kind_type == pa.int64():
            counts = {"integer": len(present)}
        elif kind_type == pa.float64():
            whole = pc.sum(pc.equal(present, pc.floor(present))).as_py() or 0
            counts = {"integer": whole, "number": len(present) - whole}
        elif kind_type == pa.bool_():
            counts = {"boolean": len(present)}
        else:
            # Blank text is missing; anchored patterns give up on long text at once.
            blank = pc.or_(pc.equal(pc.binary_length(present), 0), pc.utf8_is_space(present))
            counts = {"string": len(present) - _count(blank)}
            numbers = present.filter(pc.match_substring_regex(present, _NUMBER.pattern))
            profile.text_numbers += len(numbers)
            if len(numbers):
                profile.text_wholes += _count(pc.match_substring_regex(numbers, _WHOLE.pattern))
            profile.text_booleans += _count(pc.match_substring_regex(present, _BOOLEAN))
        for kind, n in counts.items():
            if n:
                kinds[kind] = kinds.get(kind, 0) + n
        if profile.example is None:
            profile.example = str(present[0].as_py())[:80]
