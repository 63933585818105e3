"""The record-level split, column-wise: raw rows → valid typed rows + quarantine rows.

The rules come from the dataset's compiled cleaned schema (``datasets``): each field is coerced
to its declared type, column by column (a failure is "present but not convertible" and gets a
``dtype`` reason; messages are built only for failing rows), ``lower``/``upper`` change text,
the schema's checks run lazily, and the dataset's key is enforced per dataset and
partition across all of its sources (a repeat of an earlier valid record's key is quarantined
as ``duplicate``; "earlier" is the order of ``sources.yaml``, then each source's ``_seq``).

Numbers follow JSON's grammar (plus a leading ``+`` and surrounding blanks): ``1_5``, ``１２``,
``٣``, ``NaN`` and ``Infinity`` are not numbers. Whole numbers are ``5`` or ``5.0``, not
``5.5``, within 64 bits, read exactly (``9007199254740993`` stays itself; past 64 bits is a
``dtype`` reason, never a rounded float). Text is the text the raw stage holds: an id keeps
every digit the source sent.

A split reads a raw partition in chunks (see ``DatasetSplit``), so its memory is one chunk plus
the valid rows it returns. Nothing is dropped: ``valid + quarantined == raw`` for every chunk.

A field is read from the record as the source sent it: by its exact name, or a dotted path
into nested objects (``user.login``; a missing part gives null; a name holding a dot that the
record has as it is, is that name). A top-level name is read from its raw column,
``encode.column_name(name)``: a function of the exact name alone (two names differing in case or
script never share one), holding the same text without parsing the record. A dotted path and a
``json`` field are read from the record's ``_record`` JSON, parsed once per chunk. No dagster
here.
"""

from __future__ import annotations

import decimal
import json
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pandera.errors
import pandera.pandas as pa
import pyarrow

from ingest_assets import jsontext
from ingest_assets.records.encode import (
    NUMBER_PATTERN,
    PARSE_ERROR,
    RECORD,
    SEQ,
    SOURCE_REF,
    column_name,
)

if TYPE_CHECKING:
    from ingest_assets.datasets.compile import CompiledDataset, DatasetField

SYSTEM_COLUMNS = ("partition_date", "source", "_run_id", "_ingested_at", SOURCE_REF)
QUARANTINE_COLUMNS = [
    "partition_date", "source", "dataset", "record", "errors", "run_id", "quarantined_at",
    SOURCE_REF,
]  # fmt: skip
_NUMBER = re.compile(NUMBER_PATTERN)
_ARROW_TEXT = pd.StringDtype("pyarrow")
_INT64_MIN, _INT64_END = -(2.0**63), 2.0**63


@dataclass
class SplitResult:
    valid: pd.DataFrame
    quarantined: pd.DataFrame

    @property
    def counts(self) -> dict[str, int]:
        return {"valid": len(self.valid), "quarantined": len(self.quarantined)}


def _present(text: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(stripped text, whether a value is present: not null, not blank), column-wise in Arrow."""
    if not isinstance(text.dtype, pd.ArrowDtype | pd.StringDtype):
        text = text.astype(_ARROW_TEXT)
    stripped = text.str.strip()
    present = (stripped.str.len() > 0).fillna(False).astype(bool)
    return stripped, present


def coerce_text(text: pd.Series) -> tuple[pd.Series, pd.Series, Callable[[Any], str]]:
    """Stripped text, missing where blank; Arrow-backed, so the rules run on it in Arrow."""
    stripped, present = _present(text)
    return stripped.where(present), pd.Series(False, index=text.index), str


def _as_objects(frame: pd.DataFrame) -> pd.DataFrame:
    """Arrow-backed text columns as Python strings (None where missing), as the tables take
    them."""
    for name in frame.columns:
        if isinstance(frame[name].dtype, pd.StringDtype):
            frame[name] = frame[name].to_numpy(dtype=object, na_value=None)
    return frame


def coerce_number(text: pd.Series) -> tuple[pd.Series, pd.Series, Callable[[Any], str]]:
    stripped, present = _present(text)
    grammatical = stripped.str.match(NUMBER_PATTERN).fillna(False).astype(bool)
    values = pd.Series(np.nan, index=text.index, dtype="float64")
    if grammatical.any():
        # Python's float() on what reads as a number (Arrow's parser differs on a leading "+").
        values[grammatical] = stripped[grammatical].astype(object).astype("float64")
    finite = np.isfinite(values)
    bad = present & ~(grammatical & finite)

    def message(value: Any) -> str:
        if _NUMBER.match(value):
            return f"expected a finite number, got {value!r}"
        return f"expected a number, got {value!r}"

    return values.where(~bad), bad, message


# Text of at most this many characters, without an exponent, holds at most 15 significant
# digits: a float reads it exactly, and says exactly whether it is whole.
_FLOAT_EXACT_CHARS = 15


def _exact_whole(text: str) -> int | str:
    """A whole number's exact value, or why the (grammatical) text is not one in 64 bits."""
    number = decimal.Decimal(text)
    if number.adjusted() >= 19:  # |number| ≥ 10**19 > 2**63: never expanded to its digits
        return "range"
    if number != number.to_integral_value(decimal.ROUND_FLOOR):
        return "fraction"
    whole = int(number)
    return whole if -(2**63) <= whole < 2**63 else "range"


def coerce_whole(text: pd.Series) -> tuple[pd.Series, pd.Series, Callable[[Any], str]]:
    numbers, bad, number_message = coerce_number(text)
    stripped, _ = _present(text)
    # Long text or an exponent may hold more digits than a float: those are read exactly.
    long = ~bad & numbers.notna()
    long &= (stripped.str.len() > _FLOAT_EXACT_CHARS) | stripped.str.contains("[eE]", regex=True)
    long = long.fillna(False).astype(bool).to_numpy()
    short = numbers.where(~long)
    whole = short.isna() | (np.floor(short) == short)
    in_range = short.isna() | ((short >= _INT64_MIN) & (short < _INT64_END))
    wrong = (~bad & (~whole | ~in_range)).to_numpy()
    values = short.where(~wrong & ~bad)
    result = pd.array(values.to_numpy(), dtype="Float64").astype("Int64")
    for i in np.flatnonzero(long):
        exact = _exact_whole(str(stripped.iat[i]).strip())
        if isinstance(exact, int):
            result[i] = exact
        else:
            wrong[i] = True

    def message(value: Any) -> str:
        text_value = str(value).strip()
        if not _NUMBER.match(text_value) or not np.isfinite(float(text_value)):
            return number_message(value)
        exact = _exact_whole(text_value)
        if exact == "fraction":
            return f"expected a whole number, got {value!r}"
        return f"whole number out of the 64-bit range: {value!r}"

    return pd.Series(result, index=text.index), bad | wrong, message


def coerce_timestamp(text: pd.Series) -> tuple[pd.Series, pd.Series, Callable[[Any], str]]:
    stripped, present = _present(text)
    # Parsed apart: in one call pandas gives naive values the offset of the aware ones.
    aware = stripped.str.contains(_OFFSET, regex=True).fillna(False).astype(bool)
    values = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]")
    for part in (present & aware, present & ~aware):
        if part.any():
            parsed = pd.to_datetime(
                stripped[part].astype(object), utc=True, errors="coerce", format="ISO8601"
            )
            values[part] = parsed.astype("datetime64[ns, UTC]")
    bad = present & values.isna()
    return values.astype("datetime64[ns, UTC]"), bad, lambda v: f"expected a timestamp, got {v!r}"


_OFFSET = r"(?:[zZ]|[+-]\d{2}(?::?\d{2})?)$"
_BOOLEANS = {"true": True, "false": False}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def coerce_boolean(text: pd.Series) -> tuple[pd.Series, pd.Series, Callable[[Any], str]]:
    """``true``/``false`` (any case, JSON's or as text)."""
    stripped, present = _present(text)
    lowered = stripped.str.lower()
    known = lowered.isin(list(_BOOLEANS)).fillna(False).astype(bool)
    values = pd.array(
        [_BOOLEANS[v] if ok else None for v, ok in zip(lowered.astype(object), known, strict=True)],
        dtype="boolean",
    )
    bad = present & ~known
    return pd.Series(values, index=text.index), bad, lambda v: f"expected a boolean, got {v!r}"


def coerce_date(text: pd.Series) -> tuple[pd.Series, pd.Series, Callable[[Any], str]]:
    """``YYYY-MM-DD``; a day that does not exist is invalid."""
    stripped, present = _present(text)
    shaped = stripped.str.match(_DATE.pattern).fillna(False).astype(bool)
    parsed = pd.to_datetime(stripped.where(shaped), format="%Y-%m-%d", errors="coerce")
    bad = present & parsed.isna()
    days = pyarrow.array(parsed.to_numpy(), type=pyarrow.timestamp("ns")).cast(pyarrow.date32())
    return (
        pd.Series(pd.arrays.ArrowExtensionArray(days), index=text.index),
        bad,
        lambda v: f"expected a date (YYYY-MM-DD), got {v!r}",
    )


def coerce_decimal(
    scale: int, precision: int | None
) -> Callable[[pd.Series], tuple[pd.Series, pd.Series, Callable[[Any], str]]]:
    """An exact decimal read from its text: more places than ``scale`` is invalid, never
    rounded; more digits than ``precision`` too."""
    quantum = decimal.Decimal(1).scaleb(-scale)

    def problem(value: str) -> str | None:
        if not _NUMBER.match(value):
            return f"expected a decimal number, got {value!r}"
        number = decimal.Decimal(value.strip())
        places = -number.as_tuple().exponent
        if places > scale and number != number.quantize(quantum):
            return f"expected at most {scale} decimal places, got {value!r}"
        digits = len(number.quantize(quantum).as_tuple().digits)
        if precision is not None and digits > precision:
            return f"expected at most {precision} digits, got {value!r}"
        return None

    def coerce(text: pd.Series) -> tuple[pd.Series, pd.Series, Callable[[Any], str]]:
        stripped, present = _present(text)
        values = np.array([None] * len(text), dtype=object)
        bad = np.zeros(len(text), dtype=bool)
        for i in np.flatnonzero(present.to_numpy()):
            value = str(stripped.iat[i])
            if problem(value):
                bad[i] = True
            else:
                values[i] = decimal.Decimal(value.strip()).quantize(quantum)
        exact = pyarrow.array(values, type=pyarrow.decimal128(38, scale), from_pandas=True)
        return (
            pd.Series(pd.arrays.ArrowExtensionArray(exact), index=text.index),
            pd.Series(bad, index=text.index),
            lambda v: problem(str(v)) or f"expected a decimal number, got {v!r}",
        )

    return coerce


def coerce_json(text: pd.Series) -> tuple[pd.Series, pd.Series, Callable[[Any], str]]:
    """JSON text as read from the record (null where the value is null or missing)."""
    values = text.astype(object).where(text.notna(), None)
    return (
        pd.Series(values.to_numpy(), index=text.index, dtype=object),
        pd.Series(False, index=text.index),
        str,
    )


Coercer = Callable[[pd.Series], tuple[pd.Series, pd.Series, Callable[[Any], str]]]


def coercer_for(dataset_field: DatasetField) -> Coercer:
    """The column coercer of a field's declared type."""
    kind = dataset_field.type
    if kind == "timestamp":
        return coerce_timestamp
    if kind == "integer":
        return coerce_whole
    if kind == "number":
        return coerce_number
    if kind == "boolean":
        return coerce_boolean
    if kind == "date":
        return coerce_date
    if kind == "decimal":
        column_type = dataset_field.column_type
        return coerce_decimal(column_type.scale or 0, column_type.precision)
    if kind == "json":
        return coerce_json
    return coerce_text


def _text_of(value: Any) -> str | None:
    """A record's value as the raw stage's text of it (a string as sent, else its JSON)."""
    if value is None or type(value) is str:
        return value
    return jsontext.dumps(value)


def _at_path(record: Any, path: str) -> Any:
    """The value at a field's exact name, else at its dotted path (None where a part is
    missing)."""
    if not isinstance(record, dict):
        return None
    if path in record or "." not in path:
        return record.get(path)
    for part in path.split("."):
        if not isinstance(record, dict):
            return None
        record = record.get(part)
    return record


def parse_records(records: pd.Series) -> list[Any]:
    """Each row's ``_record`` parsed (None where missing or not JSON)."""
    out: list[Any] = []
    for text in records.astype(object):
        try:
            out.append(jsontext.loads(text) if text is not None else None)
        except ValueError:
            out.append(None)
    return out


def from_records(
    records: pd.Series, path: str, as_json: bool, parsed: list[Any] | None = None
) -> pd.Series:
    """One field read from each record's JSON by its exact name or dotted path (``parsed``:
    the records already parsed by ``parse_records``)."""
    values = (_at_path(r, path) for r in (parsed if parsed is not None else parse_records(records)))
    if as_json:
        out = [None if value is None else jsontext.dumps(value) for value in values]
    else:
        out = [_text_of(value) for value in values]
    return pd.Series(out, index=records.index, dtype=object)


def row_rules(schema: pa.DataFrameSchema) -> pa.DataFrameSchema:
    """The schema's rules as the split applies them to each record: its checks and
    nullability, not its uniqueness (reported as ``duplicate``, across chunks) and not its
    column types, which the coercers built from those same types (``coercer_for``) and which
    the blocking check of ``cleaned/`` verifies on every chunk the split writes. So the rules
    may run on Arrow-backed text, in Arrow, instead of a Python call per value."""
    rules = schema.update_columns({name: {"dtype": None} for name in schema.columns})
    rules.unique = None
    return rules


def schema_failures(
    frame: pd.DataFrame, rules: pa.DataFrameSchema
) -> list[tuple[int, str | None, str, str]]:
    """Row-level failures of ``rules`` (see ``row_rules``) on ``frame``."""
    try:
        rules.validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    else:
        return []
    cases = cases[cases["index"].notna()]
    failures, seen = [], set()
    for case in cases.itertuples(index=False):
        # A frame-wide check reports each failing row once per column: report it once, unnamed.
        frame_wide = case.schema_context == "DataFrameSchema" or pd.isna(case.column)
        column = None if frame_wide else str(case.column)
        check = str(case.check)
        if (int(case.index), column, check) in seen:
            continue
        seen.add((int(case.index), column, check))
        if check == "not_nullable":
            message = "a value is required"
        else:
            message = f"{check} failed for {case.failure_case!r}"
        failures.append((int(case.index), column, check, message))
    return failures


@dataclass
class KeyRegistry:
    """The keys of valid records seen so far in one dataset split (every source, every chunk).

    Keys are kept as 64-bit hashes of (partition_date, key columns) in one sorted array, so a
    day of millions of records costs 8 bytes each, and each chunk is looked up by binary search
    and merged in (two sorted runs: linear), not tested against every earlier chunk.
    """

    seen: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))

    def repeats(self, keys: pd.DataFrame) -> np.ndarray:
        """Which rows repeat a key seen before (earlier in this frame or in earlier frames)."""
        if keys.empty:
            return np.zeros(0, dtype=bool)
        hashes = pd.util.hash_pandas_object(keys, index=False).to_numpy()
        repeated = pd.Series(hashes).duplicated(keep="first").to_numpy()
        if len(self.seen):
            at = np.searchsorted(self.seen, hashes).clip(max=len(self.seen) - 1)
            repeated |= self.seen[at] == hashes
        new = np.sort(hashes[~repeated])
        merged = np.concatenate([self.seen, new])
        merged.sort(kind="stable")  # timsort: two sorted runs merge in linear time
        self.seen = merged
        return repeated


class DatasetSplit:
    """One dataset's split over its sources' raw chunks, in order (sources.yaml, then ``_seq``)."""

    def __init__(self, dataset: CompiledDataset, run_id: str, quarantined_at: pd.Timestamp) -> None:
        self.dataset = dataset
        self.name = dataset.name
        self.schema = dataset.cleaned_schema
        self.rules = row_rules(self.schema)
        self.fields = dataset.fields
        self.key = dataset.key
        self.run_id = run_id
        self.quarantined_at = quarantined_at
        self.keys = KeyRegistry()
        self.coercers = {f.name: coercer_for(f) for f in self.fields}

    def reads(
        self, mapping: Mapping[str, str], columns: Collection[str] | None = None
    ) -> dict[str, tuple[str, bool]]:
        """Per field: (the source's name or path of it, whether it is read from the record);
        ``columns``: the raw columns there are (a name without its column, in a raw table
        written before its column was named so, is read from the record)."""
        plan = {}
        for f in self.fields:
            path = mapping.get(f.name, f.name)
            absent = columns is not None and column_name(path) not in columns
            plan[f.name] = (path, f.type == "json" or "." in path or absent)
        return plan

    def raw_columns(
        self, mapping: Mapping[str, str], existing: Collection[str] | None = None
    ) -> list[str]:
        """The raw columns a source's split reads (of ``existing``, the raw table's, if known)."""
        plan = self.reads(mapping, existing)
        columns = [column_name(path) for path, from_record in plan.values() if not from_record]
        record = [RECORD] if any(from_record for _, from_record in plan.values()) else []
        return [
            "partition_date",
            "_ingested_at",
            SEQ,
            PARSE_ERROR,
            SOURCE_REF,
            *record,
            *dict.fromkeys(columns),
        ]

    def split(
        self,
        raw: pd.DataFrame,
        source: str,
        mapping: Mapping[str, str],
        records: Callable[[pd.DataFrame], list[str]] | None = None,
    ) -> SplitResult:
        """Split one chunk of one source's raw rows (in ``_seq`` order within each day).

        The quarantine rows carry each record's JSON: from the chunk's ``_record`` column when
        it has one, else from ``records`` (given the quarantined rows' ``partition_date`` and
        ``_seq``), so a chunk of mostly valid records never holds their JSON.
        """
        raw = raw.reset_index(drop=True)
        errors: dict[int, list[dict[str, Any]]] = {}
        uncoercible: set[tuple[int, str]] = set()

        def add(i: int, column: str | None, check: str, message: str) -> None:
            errors.setdefault(i, []).append({"column": column, "check": check, "message": message})

        columns: dict[str, Any] = {}
        plan = self.reads(mapping, raw.columns if RECORD in raw.columns else None)
        parsed = None
        if RECORD in raw.columns and any(from_record for _, from_record in plan.values()):
            parsed = parse_records(raw[RECORD])
        for f in self.fields:
            path, from_record = plan[f.name]
            if from_record and parsed is not None:
                text = from_records(raw[RECORD], path, f.type == "json", parsed)
            elif not from_record and column_name(path) in raw.columns:
                text = raw[column_name(path)]
            else:
                text = pd.Series(None, index=raw.index, dtype=_ARROW_TEXT)
            values, bad, message = self.coercers[f.name](text)
            if f.lower or f.upper:
                values = values.str.lower() if f.lower else values.str.upper()
            for i in np.flatnonzero(bad.to_numpy()):
                add(int(i), f.name, "dtype", message(text.iat[i]))
                uncoercible.add((int(i), f.name))
            columns[f.name] = values.to_numpy() if values.dtype == object else values.array
        if PARSE_ERROR in raw.columns:
            parse_errors = raw[PARSE_ERROR]
            for i in np.flatnonzero(parse_errors.notna().to_numpy()):
                add(int(i), None, "parse", str(parse_errors.iat[i]))

        frame = pd.DataFrame(
            {
                "partition_date": pd.to_datetime(raw["partition_date"]).to_numpy(),
                "source": source,
                **columns,
                "_run_id": self.run_id,
                # The array, not ``to_numpy()``: that boxes every zone-aware value as a
                # Timestamp object, a Python object per row.
                "_ingested_at": pd.to_datetime(raw["_ingested_at"], utc=True)
                .astype("datetime64[ns, UTC]")
                .array,
                SOURCE_REF: _refs_of(raw),
            },
            index=raw.index,
        )
        frame["partition_date"] = frame["partition_date"].astype("datetime64[ns]")

        uncoercible_rows = {i for i, _ in uncoercible}
        for i, column, check, message in schema_failures(frame, self.rules):
            # A value that could not be coerced is already reported; its null would only echo it.
            if (i, column) in uncoercible or (column is None and i in uncoercible_rows):
                continue
            add(i, column, check, message)

        ok = np.ones(len(frame), dtype=bool)
        ok[list(errors)] = False
        key_columns = ["partition_date", *self.key]
        candidates = np.flatnonzero(ok)
        repeated = self.keys.repeats(frame.iloc[candidates][key_columns])
        for i in candidates[repeated]:
            values = ", ".join(f"{k}={frame.iat[i, frame.columns.get_loc(k)]}" for k in self.key)
            add(
                int(i),
                ",".join(self.key),
                "duplicate",
                f"repeats the key of an earlier valid record ({values})",
            )
            ok[i] = False

        valid = _as_objects(frame[ok].reset_index(drop=True)[list(self.schema.columns)])
        valid = self.dataset.conform(valid, self.dataset.cleaned_types)
        bad_rows = np.flatnonzero(~ok)
        quarantined = pd.DataFrame(
            {
                "partition_date": frame["partition_date"].to_numpy()[bad_rows],
                "source": source,
                "dataset": self.name,
                "record": _records_of(raw, bad_rows, records),
                "errors": [json.dumps(errors[i], default=str) for i in bad_rows],
                "run_id": self.run_id,
                "quarantined_at": self.quarantined_at,
                SOURCE_REF: _refs_of(raw)[bad_rows],
            },
            columns=QUARANTINE_COLUMNS,
        )
        quarantined["partition_date"] = quarantined["partition_date"].astype("datetime64[ns]")
        quarantined["quarantined_at"] = pd.to_datetime(quarantined["quarantined_at"], utc=True)
        return SplitResult(valid=valid, quarantined=quarantined)


def _refs_of(raw: pd.DataFrame) -> np.ndarray:
    """Each raw row's ``_source_ref`` (None where the raw table predates it)."""
    if SOURCE_REF in raw.columns:
        return raw[SOURCE_REF].to_numpy(dtype=object, na_value=None)
    return np.full(len(raw), None, dtype=object)


def _records_of(
    raw: pd.DataFrame, rows: np.ndarray, records: Callable[[pd.DataFrame], list[str]] | None
) -> list[str]:
    if RECORD in raw.columns:
        return raw[RECORD].iloc[rows].astype(object).tolist()
    if records is None or not len(rows):
        if len(rows):
            raise ValueError("the raw chunk has no _record column and no way to read it")
        return []
    return records(raw.iloc[rows][["partition_date", SEQ]])
