"""The record-level split: every raw record ends up valid or quarantined with its reasons.

The rules come from the Pandera models in ``quality.schemas``: each field is coerced to the
model's declared type (strictly: ``5.0`` is a whole number, ``5.5`` is not), the dataset's
cleaning step runs, the model's checks run lazily, and the model's ``unique`` key is enforced
within each partition (a repeat of an earlier valid record's key is quarantined as
``duplicate``). Nothing is dropped: ``len(valid) + len(quarantined) == len(raw)``. No dagster
here.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pandera.errors
import pandera.pandas as pa

from ingest_assets.quality.schemas import CLEANED_MODELS, DATASET_KEYS

SYSTEM_COLUMNS = ("partition_date", "source", "_run_id", "_ingested_at")
QUARANTINE_COLUMNS = [
    "partition_date", "source", "dataset", "record", "errors", "run_id", "quarantined_at",
]  # fmt: skip
PARSE_ERROR = "_parse_error"


class CoercionError(ValueError):
    pass


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def to_text(value: Any) -> str | None:
    """Trimmed text; empty after trimming is null."""
    if _is_missing(value):
        return None
    if isinstance(value, dict | list):
        raise CoercionError(f"expected text, got a JSON {type(value).__name__}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def to_float(value: Any) -> float | None:
    if _is_missing(value):
        return None
    if isinstance(value, bool | dict | list):
        raise CoercionError(f"expected a number, got {value!r}")
    if isinstance(value, str):
        value = value.strip()
        if not value:
            return None
        try:
            value = float(value)
        except ValueError:
            raise CoercionError(f"expected a number, got {value!r}") from None
    number = float(value)
    if math.isnan(number):
        return None
    if math.isinf(number):
        raise CoercionError(f"expected a finite number, got {value!r}")
    return number


def to_whole(value: Any) -> int | None:
    """A whole number: ``5`` and ``5.0`` are, ``5.5`` is not."""
    number = to_float(value)
    if number is None:
        return None
    if not number.is_integer():
        raise CoercionError(f"expected a whole number, got {value!r}")
    whole = int(number)
    if not -(2**63) <= whole < 2**63:
        raise CoercionError(f"whole number out of the 64-bit range: {value!r}")
    return whole


def to_utc_timestamp(value: Any) -> pd.Timestamp | None:
    if _is_missing(value) or (isinstance(value, str) and not value.strip()):
        return None
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise CoercionError(f"expected a timestamp, got {value!r}") from None
    if stamp is pd.NaT:
        return None
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _coercer_for(dtype: str) -> tuple[Callable[[Any], Any], str]:
    """(value coercer, pandas dtype of the column) for a Pandera column dtype."""
    if dtype.startswith("datetime64") and "UTC" in dtype:
        return to_utc_timestamp, "datetime64[ns, UTC]"
    if dtype in ("Int64", "int64"):
        return to_whole, "Int64"
    if dtype in ("float64", "float"):
        return to_float, "float64"
    if dtype in ("bool", "boolean"):
        return lambda v: None if _is_missing(v) else bool(v), "boolean"
    return to_text, "object"


@dataclass
class SplitResult:
    valid: pd.DataFrame
    quarantined: pd.DataFrame

    @property
    def counts(self) -> dict[str, int]:
        return {"valid": len(self.valid), "quarantined": len(self.quarantined)}


def map_record(record: Mapping[str, Any], fields: list[str], mapping: Mapping[str, str]) -> dict:
    """Pick each target field from the record under its mapped (or its own) name."""
    return {f: record.get(mapping.get(f, f)) for f in fields}


def split_records(
    raw: pd.DataFrame,
    *,
    source: str,
    dataset: str,
    mapping: Mapping[str, str],
    run_id: str,
    quarantined_at: pd.Timestamp,
    clean: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
) -> SplitResult:
    """Split one source's raw rows (with ``_record`` JSON) into cleaned rows and quarantine rows."""
    schema = CLEANED_MODELS[dataset].to_schema()
    fields = [c for c in schema.columns if c not in SYSTEM_COLUMNS]
    records = [json.loads(text) for text in raw["_record"]]
    errors: list[list[dict[str, Any]]] = [[] for _ in records]
    coerced_bad: set[tuple[int, str]] = set()

    columns: dict[str, Any] = {}
    for field in fields:
        coerce, pandas_dtype = _coercer_for(str(schema.columns[field].dtype))
        values = []
        for i, record in enumerate(records):
            try:
                values.append(coerce(record.get(mapping.get(field, field))))
            except CoercionError as exc:
                errors[i].append({"column": field, "check": "dtype", "message": str(exc)})
                coerced_bad.add((i, field))
                values.append(None)
        columns[field] = pd.Series(values, dtype=pandas_dtype)
    for i, record in enumerate(records):
        if record.get(PARSE_ERROR):
            errors[i].append(
                {"column": None, "check": "parse", "message": str(record[PARSE_ERROR])}
            )

    frame = pd.DataFrame(
        {
            "partition_date": pd.to_datetime(raw["partition_date"]).to_numpy(),
            "source": source,
            **{
                f: columns[f].to_numpy() if columns[f].dtype == object else columns[f].array
                for f in fields
            },
            "_run_id": run_id,
            "_ingested_at": pd.to_datetime(raw["_ingested_at"], utc=True).to_numpy(),
        }
    )
    frame["_ingested_at"] = pd.to_datetime(frame["_ingested_at"], utc=True)
    frame["partition_date"] = frame["partition_date"].astype("datetime64[ns]")
    if clean is not None and not frame.empty:
        frame = clean(frame)

    uncoercible_rows = {i for i, _ in coerced_bad}
    for i, column, check, message in schema_failures(frame, schema):
        # A value that could not be coerced is already reported; its null would only echo it.
        echo = (i, column) in coerced_bad or (column is None and i in uncoercible_rows)
        if not echo:
            errors[i].append({"column": column, "check": check, "message": message})

    ok = np.array([not e for e in errors], dtype=bool)
    key = DATASET_KEYS[dataset]
    # A backfill splits several days at once; a key repeats only within its own partition.
    repeated = frame[ok].duplicated(subset=["partition_date", *key], keep="first")
    for i in repeated[repeated].index:
        values = ", ".join(f"{k}={frame.at[i, k]}" for k in key)
        errors[i].append(
            {
                "column": ",".join(key),
                "check": "duplicate",
                "message": f"repeats the key of an earlier valid record ({values})",
            }
        )
        ok[i] = False

    valid = frame[ok].reset_index(drop=True)[list(schema.columns)]
    bad = np.flatnonzero(~ok)
    quarantined = pd.DataFrame(
        {
            "partition_date": frame["partition_date"].to_numpy()[bad],
            "source": source,
            "dataset": dataset,
            "record": raw["_record"].to_numpy()[bad],
            "errors": [json.dumps(errors[i], default=str) for i in bad],
            "run_id": run_id,
            "quarantined_at": quarantined_at,
        },
        columns=QUARANTINE_COLUMNS,
    )
    quarantined["partition_date"] = quarantined["partition_date"].astype("datetime64[ns]")
    quarantined["quarantined_at"] = pd.to_datetime(quarantined["quarantined_at"], utc=True)
    return SplitResult(valid=valid, quarantined=quarantined)


def schema_failures(
    frame: pd.DataFrame, schema: pa.DataFrameSchema
) -> list[tuple[int, str | None, str, str]]:
    """Row-level failures of a schema's checks, uniqueness left out (handled as ``duplicate``)."""
    row_schema = copy.deepcopy(schema)
    row_schema.unique = None
    try:
        row_schema.validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    else:
        return []
    failures, seen = [], set()
    for case in cases.itertuples(index=False):
        if pd.isna(case.index):
            continue
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
