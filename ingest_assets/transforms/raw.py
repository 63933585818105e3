"""Raw records → the raw table: one row per record, original JSON kept in ``_record``."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Iterable
from typing import Any

import pandas as pd

SYSTEM_COLUMNS = ("partition_date", "_run_id", "_ingested_at", "_record")
_NOT_IDENT = re.compile(r"[^0-9a-zA-Z_]+")


def column_name(field: str) -> str:
    """A field name as a safe, lower_snake column name."""
    name = _NOT_IDENT.sub("_", str(field)).strip("_").lower() or "field"
    return f"f_{name}" if name[0].isdigit() else name


def _cell(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return value


def raw_frame(
    records: Iterable[dict[str, Any]],
    partition_date: dt.date,
    run_id: str,
    ingested_at: pd.Timestamp,
) -> pd.DataFrame:
    """Flatten top-level fields into columns; nested values stay JSON text; types left to pandas.

    Object columns are made plain text so one odd value never changes a column's type, and the
    exact record stays in ``_record`` for validation and replay.
    """
    rows, originals = [], []
    for record in records:
        originals.append(json.dumps(record, ensure_ascii=False, default=str, sort_keys=True))
        row: dict[str, Any] = {}
        for key, value in record.items():
            name = column_name(key)
            while name in row or name in SYSTEM_COLUMNS:
                name = f"{name}_"
            row[name] = _cell(value)
        rows.append(row)
    frame = text_object_columns(pd.DataFrame.from_records(rows) if rows else pd.DataFrame())
    frame.insert(0, "partition_date", pd.Timestamp(partition_date))
    frame["_run_id"] = run_id
    frame["_ingested_at"] = ingested_at
    frame["_record"] = originals
    frame["partition_date"] = frame["partition_date"].astype("datetime64[ns]")
    frame["_ingested_at"] = pd.to_datetime(frame["_ingested_at"], utc=True).astype(
        "datetime64[ns, UTC]"
    )
    return frame


def _text(value: Any) -> str | None:
    # A concat fills the gaps of object columns with NaN: a gap is null, not the text "nan".
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def text_object_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Make every object column plain text (or null), so mixed values never mix types."""
    for column in frame.columns:
        if frame[column].dtype == object:
            frame[column] = frame[column].map(_text).astype(object)
    return frame


def concat_raw(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Batches of one fetch as one raw frame: a column typed differently per batch becomes text."""
    if len(frames) == 1:
        return frames[0]
    return text_object_columns(pd.concat(frames, ignore_index=True))
