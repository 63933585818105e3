"""metrics/ingestion: what each source cost and yielded, per partition date.

Record counts come from the warehouse (raw rows, quarantined rows); request counts and
durations from the raw assets' materialization metadata in Dagster's event log, where the raw
asset recorded them per day (``fetch_stats``).
"""

from collections.abc import Sequence
from typing import Any

import dagster as dg
import pandas as pd

from ingest_assets.assets.common import derived_asset, partition_days, timed
from ingest_assets.assets.datasets import PRIMARY_KEYS, raw_input_name
from ingest_assets.config import SourceConfig

STAT_COLUMNS = ("requests", "retries", "failed_requests", "duration_s")


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


def ingestion_rows(
    day: pd.Timestamp,
    sources: Sequence[SourceConfig],
    fetched: dict[str, int],
    quarantined: dict[str, int],
    stats: dict[str, dict[str, Any] | None],
) -> list[dict[str, Any]]:
    rows = []
    for source in sources:
        recorded = stats.get(source.name) or {}
        rows.append(
            {
                "partition_date": day,
                "source": source.name,
                "records_fetched": fetched.get(source.name, 0),
                "records_valid": fetched.get(source.name, 0) - quarantined.get(source.name, 0),
                "records_quarantined": quarantined.get(source.name, 0),
                **{column: recorded.get(column) for column in STAT_COLUMNS},
            }
        )
    return rows


def build_ingestion_metrics_asset(sources: Sequence[SourceConfig]) -> dg.AssetsDefinition:
    names = {raw_input_name(s): s for s in sources}
    date_only = {"columns": ["partition_date"]}
    ins = {n: dg.AssetIn(key=["raw", s.name], metadata=date_only) for n, s in names.items()}
    ins["quarantine"] = dg.AssetIn(
        key=["quarantine", "records"], metadata={"columns": ["partition_date", "source"]}
    )

    @derived_asset(
        key=["metrics", "ingestion"],
        ins=ins,
        description=(
            "Per partition date and source: records fetched, valid and quarantined; HTTP "
            "attempts, retries and failed attempts; and the raw asset's wall time."
        ),
        group_name="quality",
        metadata={"primary_key": PRIMARY_KEYS[("metrics", "ingestion")]},
    )
    @timed
    def ingestion_metrics(
        context: dg.AssetExecutionContext, quarantine: pd.DataFrame, **raws: pd.DataFrame
    ) -> dg.Output[pd.DataFrame]:
        rows = []
        for day in partition_days(context):
            stamp = pd.Timestamp(day)
            fetched = {
                names[n].name: int((raw["partition_date"] == stamp).sum())
                for n, raw in raws.items()
            }
            on_day = quarantine[quarantine["partition_date"] == stamp]
            quarantined = on_day["source"].value_counts().to_dict()
            stats = {
                s.name: latest_fetch_stats(context.instance, s, day.isoformat()) for s in sources
            }
            missing = [name for name, found in stats.items() if found is None]
            if missing:
                context.log.warning(
                    f"{day}: no fetch stats in this Dagster instance for {', '.join(missing)}; "
                    "their request counts stay null (were they materialized under another DAGSTER_HOME?)"
                )
            rows.extend(ingestion_rows(stamp, sources, fetched, quarantined, stats))
        frame = pd.DataFrame(rows)
        for column in (
            "records_fetched",
            "records_valid",
            "records_quarantined",
            "requests",
            "retries",
            "failed_requests",
        ):
            frame[column] = frame[column].astype("Int64")
        frame["duration_s"] = frame["duration_s"].astype(float)
        frame["partition_date"] = frame["partition_date"].astype("datetime64[ns]")
        return dg.Output(frame, metadata={"dagster/row_count": len(frame)})

    return ingestion_metrics
