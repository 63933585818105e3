"""One raw asset per configured source: fetch the partition, store records as fetched."""

import datetime as dt
import time
from typing import Any

import dagster as dg
import pandas as pd

from ingest_assets.assets.checks import freshness_policy
from ingest_assets.assets.common import daily_partitions, now_utc, partition_days, retry_policy
from ingest_assets.config import SourceConfig
from ingest_assets.connectors import FetchContext, FetchStats, collect, get_connector_class
from ingest_assets.connectors.files import MissingFileError
from ingest_assets.connectors.http import FetchError
from ingest_assets.quality.drift import drift_by_day
from ingest_assets.transforms.raw import concat_raw, raw_frame, with_sequence

PROGRESS_EVERY_S = 5.0


class _Progress:
    """Log progress at most every few seconds, so long fetches stay visible but quiet."""

    def __init__(self, context: dg.AssetExecutionContext) -> None:
        self.context = context
        self.last = 0.0
        self.events = 0

    def __call__(self, message: str) -> None:
        self.events += 1
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY_S:
            self.last = now
            self.context.log.info(f"progress: {message} (batch {self.events})")


FAILED_ATTEMPT = "failed_fetch_attempt"


def record_failed_attempt(
    context: dg.AssetExecutionContext, day: dt.date, stats: FetchStats
) -> None:
    """Log what a failed fetch cost as an observation (it shows in the UI), so that the step's
    retry can count those requests in metrics.ingestion."""
    context.log_event(
        dg.AssetObservation(
            asset_key=context.asset_key,
            partition=day.isoformat(),
            metadata={FAILED_ATTEMPT: dg.MetadataValue.json(stats.as_dict())},
        )
    )


def failed_attempts(context: dg.AssetExecutionContext, day: dt.date) -> list[dict[str, int]]:
    """The stats of this run's earlier, failed tries of this step for one day."""
    if context.retry_number == 0:
        return []
    found = []
    for entry in context.instance.all_logs(
        context.run.run_id, of_type=dg.DagsterEventType.ASSET_OBSERVATION
    ):
        observation = entry.dagster_event.event_specific_data.asset_observation
        if observation.asset_key == context.asset_key and observation.partition == day.isoformat():
            value = observation.metadata.get(FAILED_ATTEMPT)
            if value is not None:
                found.append(value.data)
    return found


def with_failed_attempts(stats: FetchStats, earlier: list[dict[str, int]]) -> FetchStats:
    """Add earlier tries: every request they made was re-done (or was itself a retry)."""
    for tried in earlier:
        stats.requests += tried["requests"]
        stats.retries += tried["requests"]
        stats.failed_requests += tried["failed_requests"]
    return stats


def fetch_partition(
    source: SourceConfig, context: dg.AssetExecutionContext
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Fetch every day of the run's window; returns the raw frame and per-day fetch stats."""
    connector = get_connector_class(source.connector)(source)
    frames, per_day = [], {}
    ingested_at = now_utc()
    run_id = context.run.run_id
    progress = _Progress(context)
    for day in partition_days(context):
        stats = FetchStats()
        started = time.perf_counter()
        ctx = FetchContext(partition_date=day, stats=stats, log=context.log, on_progress=progress)
        try:
            batches = collect(
                connector, ctx, lambda batch, day=day: raw_frame(batch, day, run_id, ingested_at)
            )
        except MissingFileError as exc:
            raise dg.Failure(
                description=f"{source.name}: {exc}. The landing sensor starts a run once it arrives.",
                allow_retries=False,
            ) from None
        except Exception as exc:
            record_failed_attempt(context, day, stats)
            if isinstance(exc, FetchError):
                raise dg.Failure(
                    description=f"{source.name}: {exc}",
                    metadata={**stats.as_dict(), "partition_date": day.isoformat()},
                ) from None
            raise
        stats = with_failed_attempts(stats, failed_attempts(context, day))
        frames.extend(batches or [raw_frame([], day, run_id, ingested_at)])
        per_day[day.isoformat()] = {
            **stats.as_dict(),
            "records_fetched": stats.records,
            "duration_s": round(time.perf_counter() - started, 3),
        }
    return with_sequence(concat_raw(frames)), per_day


SECRET_BEARING_OPTIONS = ("headers", "url")


def public_options(source: SourceConfig) -> dict[str, Any]:
    """The source's options fit to show in the UI: fields that may carry credentials left out."""
    return {k: v for k, v in source.options.items() if k not in SECRET_BEARING_OPTIONS}


def build_raw_asset(source: SourceConfig) -> dg.AssetsDefinition:
    """The asset ``raw/<source>`` for one block of sources.yaml."""

    @dg.asset(
        key=["raw", source.name],
        description=source.description or f"Records of {source.name}, as fetched.",
        group_name="raw",
        kinds={"python", source.connector},
        partitions_def=daily_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        retry_policy=retry_policy(**source.retry.model_dump()),
        pool=f"ingest_{source.name}",
        freshness_policy=freshness_policy(source),
        owners=source.owners or None,
        tags={"source": source.name, "dataset": source.dataset},
        metadata={
            "json_columns": ["_record"],
            "connector": source.connector,
            "dataset": source.dataset,
            "source_config": dg.MetadataValue.json(public_options(source)),
        },
    )
    def _raw(context: dg.AssetExecutionContext) -> dg.Output[pd.DataFrame]:
        started = time.perf_counter()
        frame, per_day = fetch_partition(source, context)
        totals = {
            k: sum(d[k] for d in per_day.values())
            for k in ("requests", "retries", "failed_requests")
        }
        drift = drift_by_day(source, frame)
        duration = round(time.perf_counter() - started, 3)
        if len(per_day) == 1:
            # One day: its duration is the asset's whole wall time (DESIGN's duration_s), not
            # only the fetch. A range keeps each day's own fetch time.
            next(iter(per_day.values()))["duration_s"] = duration
        context.log.info(f"{source.name}: {len(frame)} records, {totals}")
        return dg.Output(
            frame,
            metadata={
                "dagster/row_count": len(frame),
                "records_fetched": len(frame),
                **totals,
                "duration_s": duration,
                "fetch_stats": dg.MetadataValue.json(per_day),
                "schema_drift": dg.MetadataValue.json(drift),
            },
        )

    return _raw
