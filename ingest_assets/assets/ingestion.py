"""metrics.ingestion rows: what each source cost and yielded, per partition date.

Record counts are counted in the warehouse after the split wrote them (raw rows, cleaned rows,
quarantined rows), so the ``records_conserved`` rule can fail when a record is lost; request
counts and durations come from the raw assets' materialization metadata in Dagster's event
log, where the raw asset recorded them per day (``fetch_stats``).
"""

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
import pandas as pd

from ingest_assets.config import SourceConfig

STAT_COLUMNS = ("requests", "retries", "failed_requests", "duration_s")
COUNT_COLUMNS = (
    "records_fetched", "records_valid", "records_quarantined", "requests", "retries",
    "failed_requests",
)  # fmt: skip


def latest_fetch_stats(
    instance: dg.DagsterInstance, source: SourceConfig, partition_key: str
) -> dict[str, Any] | None:
    """The raw asset's recorded stats for one partition, from its latest materialization."""
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey(["raw", source.name]), asset_partitions=[partition_key]
        ),
        limit=1,
    )
    if not result.records:
        return None
    materialization = result.records[0].asset_materialization
    stats = materialization.metadata.get("fetch_stats") if materialization else None
    return (getattr(stats, "data", None) or {}).get(partition_key) if stats else None


def ingestion_frame(
    instance: dg.DagsterInstance,
    sources: Sequence[SourceConfig],
    days: Sequence[str],
    written: Mapping[str, Mapping[tuple[str, str], int]],
    dataset: str,
) -> pd.DataFrame:
    """One row per day and source; ``written`` holds the warehouse's row counts per
    ``(day, source)`` of ``raw``, ``cleaned`` and ``quarantine``."""
    rows = []
    for day in days:
        for source in sources:
            recorded = latest_fetch_stats(instance, source, day) or {}
            key = (day, source.name)
            rows.append(
                {
                    "partition_date": pd.Timestamp(day),
                    "source": source.name,
                    "dataset": dataset,
                    "records_fetched": written["raw"].get(key, 0),
                    "records_valid": written["cleaned"].get(key, 0),
                    "records_quarantined": written["quarantine"].get(key, 0),
                    **{column: recorded.get(column) for column in STAT_COLUMNS},
                }
            )
    frame = pd.DataFrame(
        rows,
        columns=[
            "partition_date",
            "source",
            "dataset",
            "records_fetched",
            "records_valid",
            "records_quarantined",
            *STAT_COLUMNS,
        ],  # fmt: skip
    )
    for column in COUNT_COLUMNS:
        frame[column] = frame[column].astype("Int64")
    frame["duration_s"] = frame["duration_s"].astype(float)
    frame["partition_date"] = frame["partition_date"].astype("datetime64[ns]")
    return frame
