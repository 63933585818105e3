"""Raw records → the raw table: one row per record, original JSON kept in ``_record``.

Every field column holds text: a string as it came, anything else as its JSON text (``9.5``,
``true``, ``[1, 2]``). A source is free to send ``"n/a"`` in a numeric field or to omit a field
one day: the raw table takes it as fetched (typing is validation's job, from ``_record``), so an
odd record lands in quarantine instead of failing the load of the whole day.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Iterable
from typing import Any

import pandas as pd

SYSTEM_COLUMNS = ("partition_date", "_run_id", "_ingested_at", "_record", "_seq")
_NOT_IDENT = re.compile(r"[^0-9a-zA-Z_]+")


def column_name(field: str) -> str:
    """A field name as a safe, lower_snake column name."""
    name = _NOT_IDENT.sub("_", str(field)).strip("_").lower() or "field"
    return f"f_{name}" if name[0].isdigit() else name


def _cell(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def raw_frame(
    records: Iterable[dict[str, Any]],
    partition_date: dt.date,
    run_id: str,
    ingested_at: pd.Timestamp,
) -> pd.DataFrame:
    """Flatten top-level fields into text columns; the exact record stays in ``_record``."""
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


def with_sequence(frame: pd.DataFrame) -> pd.DataFrame:
    """Number each day's records in arrival order (``_seq``).

    "Earlier" in the duplicate rule means this order; every reader sorts by it, since a
    warehouse may hand rows back in any order.
    """
    return frame.assign(_seq=frame.groupby("partition_date").cumcount().astype("int64"))
