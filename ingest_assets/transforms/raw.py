"""Raw records → raw frames, for tools and tests that hold a few records in memory.

The raw asset streams instead (``records.encode.RawEncoder`` batch by batch into the
warehouse); both build the same rows: one per record, ``_record`` with its JSON, ``_seq`` in the
source's order, ``_parse_error`` and a text column per field.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import pandas as pd
import pyarrow as pa

from ingest_assets.records.encode import SYSTEM_COLUMNS, RawEncoder, column_name

__all__ = ["SYSTEM_COLUMNS", "column_name", "concat_raw", "raw_frame", "with_sequence"]


def raw_frame(
    records: Iterable[dict[str, Any]],
    partition_date: dt.date,
    run_id: str,
    ingested_at: pd.Timestamp,
) -> pd.DataFrame:
    """One day's records as the raw table holds them."""
    batch = RawEncoder().encode(list(records))
    frame = pa.Table.from_batches([batch]).to_pandas()
    frame.insert(0, "partition_date", pd.Timestamp(partition_date))
    frame["partition_date"] = frame["partition_date"].astype("datetime64[ns]")
    frame["_run_id"] = run_id
    frame["_ingested_at"] = pd.Series(
        pd.Timestamp(ingested_at), index=frame.index, dtype="datetime64[ns, UTC]"
    )
    return frame


def concat_raw(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Several raw frames as one (gaps of a field another frame lacks are null)."""
    if len(frames) == 1:
        return frames[0]
    frame = pd.concat(frames, ignore_index=True)
    for column in frame.columns:
        if frame[column].dtype == object:
            frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame


def with_sequence(frame: pd.DataFrame) -> pd.DataFrame:
    """Number each day's records in frame order (``_seq``), as the raw asset does per fetch."""
    return frame.assign(_seq=frame.groupby("partition_date").cumcount().astype("int64"))
