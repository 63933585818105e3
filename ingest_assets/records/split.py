"""The record-level split, column-wise: raw rows → valid typed rows + quarantine rows.

The rules come from the Pandera models in ``quality.schemas``: each field is coerced to the
model's declared type, column by column (a failure is "present but not convertible" and gets a
``dtype`` reason; messages are built only for failing rows), the dataset's cleaning step runs,
the model's checks run lazily, and the model's ``unique`` key is enforced per dataset and
partition across all of its sources (a repeat of an earlier valid record's key is quarantined
as ``duplicate``; "earlier" is the order of ``sources.yaml``, then each source's ``_seq``).

Numbers follow JSON's grammar (plus a leading ``+`` and surrounding blanks): ``1_5``, ``１２``,
``٣``, ``NaN`` and ``Infinity`` are not numbers. Whole numbers are ``5`` or ``5.0``, not
``5.5``, within 64 bits.

A split reads a raw partition in chunks (see ``DatasetSplit``), so its memory is one chunk plus
the valid rows it returns. Nothing is dropped: ``valid + quarantined == raw`` for every chunk.
No dagster here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pandera.errors
import pandera.pandas as pa

from ingest_assets.quality.schemas import CLEANED_MODELS, DATASET_KEYS
from ingest_assets.records.encode import NUMBER_PATTERN, PARSE_ERROR, RECORD, SEQ, column_name

SYSTEM_COLUMNS = ("partition_date", "source", "_run_id", "_ingested_at")
QUARANTINE_COLUMNS = [
    "partition_date", "source", "dataset", "record", "errors", "run_id", "quarantined_at",
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


def coerce_whole(text: pd.Series) -> tuple[pd.Series, pd.Series, Callable[[Any], str]]:
    numbers, bad, number_message = coerce_number(text)
    whole = numbers.isna() | (np.floor(numbers) == numbers)
    in_range = numbers.isna() | ((numbers >= _INT64_MIN) & (numbers < _INT64_END))
    wrong = ~bad & (~whole | ~in_range)
    values = numbers.where(~wrong & ~bad)
    result = pd.array(values.to_numpy(), dtype="Float64").astype("Int64")

    def message(value: Any) -> str:
        text_value = str(value).strip()
        try:
            number = float(text_value)
        except ValueError:
            return number_message(value)
        if not np.isfinite(number):
            return number_message(value)
        if number != int(number):
            return f"expected a whole number, got {value!r}"
        return f"whole number out of the 64-bit range: {value!r}"

    return pd.Series(result, index=text.index), bad | wrong, message


def coerce_timestamp(text: pd.Series) -> tuple[pd.Series, pd.Series, Callable[[Any], str]]:
    stripped, present = _present(text)
    values = pd.to_datetime(stripped.where(present), utc=True, errors="coerce", format="ISO8601")
    bad = present & values.isna()
    return values.astype("datetime64[ns, UTC]"), bad, lambda v: f"expected a timestamp, got {v!r}"


def coercer_for(dtype: str) -> Callable[[pd.Series], tuple[pd.Series, pd.Series, Callable]]:
    """The column coercer for a Pandera column dtype."""
    if dtype.startswith("datetime64") and "UTC" in dtype:
        return coerce_timestamp
    if dtype in ("Int64", "int64"):
        return coerce_whole
    if dtype in ("float64", "float"):
        return coerce_number
    return coerce_text


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

    def __init__(
        self,
        dataset: str,
        run_id: str,
        quarantined_at: pd.Timestamp,
        clean: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
    ) -> None:
        self.dataset = dataset
        self.schema = CLEANED_MODELS[dataset].to_schema()
        self.rules = row_rules(self.schema)
        self.fields = [c for c in self.schema.columns if c not in SYSTEM_COLUMNS]
        self.key = DATASET_KEYS[dataset]
        self.run_id = run_id
        self.quarantined_at = quarantined_at
        self.clean = clean
        self.keys = KeyRegistry()

    def raw_columns(self, mapping: Mapping[str, str]) -> list[str]:
        """The raw columns a source's split reads."""
        mapped = [column_name(mapping.get(f, f)) for f in self.fields]
        return ["partition_date", "_ingested_at", SEQ, PARSE_ERROR, *dict.fromkeys(mapped)]

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
        for name in self.fields:
            source_column = column_name(mapping.get(name, name))
            text = (
                raw[source_column]
                if source_column in raw.columns
                else pd.Series(None, index=raw.index, dtype=_ARROW_TEXT)
            )
            coerce = coercer_for(str(self.schema.columns[name].dtype))
            values, bad, message = coerce(text)
            for i in np.flatnonzero(bad.to_numpy()):
                add(int(i), name, "dtype", message(text.iat[i]))
                uncoercible.add((int(i), name))
            columns[name] = values.to_numpy() if values.dtype == object else values.array
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
            },
            index=raw.index,
        )
        frame["partition_date"] = frame["partition_date"].astype("datetime64[ns]")
        if self.clean is not None and not frame.empty:
            frame = self.clean(frame)

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
        bad_rows = np.flatnonzero(~ok)
        quarantined = pd.DataFrame(
            {
                "partition_date": frame["partition_date"].to_numpy()[bad_rows],
                "source": source,
                "dataset": self.dataset,
                "record": _records_of(raw, bad_rows, records),
                "errors": [json.dumps(errors[i], default=str) for i in bad_rows],
                "run_id": self.run_id,
                "quarantined_at": self.quarantined_at,
            },
            columns=QUARANTINE_COLUMNS,
        )
        quarantined["partition_date"] = quarantined["partition_date"].astype("datetime64[ns]")
        quarantined["quarantined_at"] = pd.to_datetime(quarantined["quarantined_at"], utc=True)
        return SplitResult(valid=valid, quarantined=quarantined)


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
