"""One raw asset per configured source: fetch each day, stream its records into the warehouse.

Each day of the run's window is fetched and written on its own: batches go from the connector
through the raw encoder into a warehouse stage as they arrive, and the day's partition is
swapped in by one transaction once the fetch has ended on a positive signal. A failed day
leaves its old partition intact and does not stop the other days of a range; the step then
fails naming the failed days, after recording the good days as materialized so their
downstream partitions can follow. A retry of the step fetches only the days that failed.
"""

import datetime as dt
import time
from collections.abc import Sequence
from typing import Any

import dagster as dg

from ingest_assets.archive import ArchiveError
from ingest_assets.assets.archiving import DayArchive
from ingest_assets.assets.checks import freshness_policy
from ingest_assets.assets.common import daily_partitions, now_utc, partition_days, retry_policy
from ingest_assets.assets.placement import where_it_ran
from ingest_assets.config import SourceConfig
from ingest_assets.connectors import FetchContext, FetchStats, get_connector_class
from ingest_assets.connectors.base import FetchError
from ingest_assets.connectors.checkpoint import PageCheckpoint
from ingest_assets.connectors.files import MissingFileError
from ingest_assets.datasets import CompiledDataset
from ingest_assets.quality.drift import DriftReport, drift_from_profiles
from ingest_assets.records.encode import RawEncoder
from ingest_assets.records.stream import stream_into
from ingest_assets.warehouse import ingest_home
from ingest_assets.warehouse.base import PartitionedTableIOManager, StagedPartition
from ingest_assets.warehouse.common import TableRef

PROGRESS_EVERY_S = 5.0
FETCH_ATTEMPT = "fetch_attempt"
FIELD_COLUMNS = "field_columns"


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


def record_attempt(
    context: dg.AssetExecutionContext, day: dt.date, outcome: dict[str, Any]
) -> None:
    """Log one day's try (committed or failed) as an observation (it shows in the UI), so a
    retry of the step knows which days are done and what the earlier tries cost."""
    context.log_event(
        dg.AssetObservation(
            asset_key=context.asset_key,
            partition=day.isoformat(),
            metadata={FETCH_ATTEMPT: dg.MetadataValue.json(outcome)},
        )
    )


def earlier_attempts(context: dg.AssetExecutionContext) -> dict[str, list[dict[str, Any]]]:
    """This run's earlier tries of this step, per day (ISO)."""
    if context.retry_number == 0:
        return {}
    found: dict[str, list[dict[str, Any]]] = {}
    for entry in context.instance.all_logs(
        context.run.run_id, of_type=dg.DagsterEventType.ASSET_OBSERVATION
    ):
        observation = entry.dagster_event.event_specific_data.asset_observation
        if observation.asset_key != context.asset_key:
            continue
        value = observation.metadata.get(FETCH_ATTEMPT)
        if value is not None and observation.partition:
            found.setdefault(observation.partition, []).append(value.data)
    return found


def with_earlier_failures(stats: dict[str, Any], earlier: Sequence[dict[str, Any]]) -> None:
    """Add what failed tries of the day cost: every request they made was re-done (or was
    itself a retry)."""
    for tried in earlier:
        if tried.get("outcome") != "failed":
            continue
        stats["requests"] += tried["requests"]
        stats["retries"] += tried["requests"]
        stats["failed_requests"] += tried["failed_requests"]


class DayFailure(Exception):
    def __init__(self, day: dt.date, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.day = day
        self.retryable = retryable


def fetch_day(
    source: SourceConfig,
    dataset: CompiledDataset,
    context: dg.AssetExecutionContext,
    warehouse: PartitionedTableIOManager,
    day: dt.date,
    ingested_at: Any,
) -> dict[str, Any]:
    """Fetch one day into its partition; returns the day's stats (and drift), or raises
    ``DayFailure`` after recording what the failed try cost."""
    connector = get_connector_class(source.connector)(source)
    stats = FetchStats()
    started = time.perf_counter()
    # Pages fetched by a failed try of this day are not fetched again; cleared once written.
    checkpoint = PageCheckpoint.for_fetch(ingest_home(), source.name, day)
    where = f"source {source.name}, day {day.isoformat()}"
    try:
        # Live: every body and landing file also archived; archive mode: read from it.
        archive = DayArchive.for_fetch(source, day, checkpoint, dict(context.run.tags))
    except (ValueError, ArchiveError, FetchError) as exc:
        # A fetch mode that does not exist, a day never archived: no retry helps.
        record_attempt(context, day, {"outcome": "failed", **stats.as_dict()})
        message = str(exc) if isinstance(exc, FetchError) else f"{where}: {exc}"
        raise DayFailure(day, message, retryable=False) from None
    try:
        ctx = FetchContext(
            partition_date=day,
            stats=stats,
            log=context.log,
            on_progress=_Progress(context),
            checkpoint=archive.page_store,
            landing_dir=archive.landing_dir,
        )
        encoder = RawEncoder()
        table = TableRef("raw", source.name)
        ingested_at = archive.ingested_at(ingested_at)
        partition = StagedPartition(table, day, context.run.run_id, ingested_at)
        archive.before_fetch(connector, ctx)
        with warehouse.stage(partition) as stage:
            stream_into(connector, ctx, stage, encoder)
            archived = archive.commit(context.run.run_id, ingested_at)
            rows = stage.commit()
    except Exception as exc:
        outcome = {"outcome": "failed", **stats.as_dict()}
        record_attempt(context, day, outcome)
        if isinstance(exc, ArchiveError):
            raise DayFailure(day, f"{where}: {exc}", retryable=False) from None
        if isinstance(exc, MissingFileError):
            raise DayFailure(
                day,
                f"{where}: {exc}. The landing sensor starts a run once it arrives.",
                retryable=False,
            ) from None
        if isinstance(exc, FetchError):
            # The message already names the source and the day (connectors.stream).
            raise DayFailure(day, str(exc), retryable=not exc.permanent) from None
        raise
    finally:
        archive.close()
    checkpoint.clear()
    if rows != stats.records:
        # The invariant of the record path: every record handed over is a raw row.
        raise DayFailure(
            day,
            f"{source.name}, {day}: {stats.records} records fetched but {rows} rows written",
            retryable=True,
        )
    drift = drift_from_profiles(source, dataset, rows, encoder.profiles)
    result = {
        "outcome": "committed",
        **stats.as_dict(),
        "records_fetched": rows,
        "parse_errors": encoder.parse_errors,
        "resumed_pages": checkpoint.hits,
        **archived,
        "duration_s": round(time.perf_counter() - started, 3),
    }
    record_attempt(context, day, result)
    return {**result, "drift": drift.__dict__, FIELD_COLUMNS: dict(encoder.columns)}


def build_raw_asset(source: SourceConfig, dataset: CompiledDataset) -> dg.AssetsDefinition:
    """The asset ``raw/<source>`` for one block of sources.yaml (feeding ``dataset``)."""

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
        required_resource_keys={"io_manager"},
        metadata={
            "json_columns": ["_record"],
            "connector": source.connector,
            "dataset": source.dataset,
            "source_config": dg.MetadataValue.json(public_options(source)),
        },
    )
    def _raw(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        started = time.perf_counter()
        warehouse: PartitionedTableIOManager = context.resources.io_manager
        ingested_at = now_utc()
        earlier = earlier_attempts(context)
        per_day: dict[str, dict[str, Any]] = {}
        failures: list[DayFailure] = []
        for day in partition_days(context):
            key = day.isoformat()
            done = [a for a in earlier.get(key, []) if a.get("outcome") == "committed"]
            if done:
                # Written by an earlier try of this run: not fetched again.
                per_day[key] = {**done[-1], "drift": None}
                continue
            try:
                per_day[key] = fetch_day(source, dataset, context, warehouse, day, ingested_at)
            except DayFailure as failure:
                failures.append(failure)
                continue
            with_earlier_failures(per_day[key], earlier.get(key, []))
        duration = round(time.perf_counter() - started, 3)
        if len(per_day) == 1 and not failures:
            # One day: its duration is the asset's whole wall time (DESIGN's duration_s).
            next(iter(per_day.values()))["duration_s"] = duration
        drift = {day: stats.pop("drift") for day, stats in per_day.items()}
        field_columns: dict[str, str] = {}
        for stats in per_day.values():
            field_columns.update(stats.pop(FIELD_COLUMNS, None) or {})
        if failures:
            fail(context, source, per_day, failures)
        totals = {
            k: sum(d[k] for d in per_day.values())
            for k in ("requests", "retries", "failed_requests", "records_fetched")
        }
        context.log.info(f"{source.name}: {totals}")
        return dg.MaterializeResult(
            metadata={
                **where_it_ran(),
                "dagster/row_count": totals["records_fetched"],
                **totals,
                "duration_s": duration,
                "fetch_stats": dg.MetadataValue.json(per_day),
                "schema_drift": dg.MetadataValue.json(
                    {d: DriftReport(**r).summary() for d, r in drift.items() if r}
                ),
                "drift_reports": dg.MetadataValue.json({d: r for d, r in drift.items() if r}),
                # Field names are data: each field's exact name → its raw column.
                FIELD_COLUMNS: dg.MetadataValue.json(field_columns),
            }
        )

    return _raw


def fail(
    context: dg.AssetExecutionContext,
    source: SourceConfig,
    per_day: dict[str, dict[str, Any]],
    failures: list[DayFailure],
) -> None:
    """Fail the step naming the failed days; the good days of a range are recorded as
    materialized first (their partitions are written and their downstream may follow)."""
    for key, stats in per_day.items():
        context.log_event(
            dg.AssetMaterialization(
                asset_key=context.asset_key,
                partition=key,
                metadata={
                    "dagster/row_count": stats["records_fetched"],
                    "records_fetched": stats["records_fetched"],
                    "fetch_stats": dg.MetadataValue.json({key: stats}),
                },
            )
        )
    days = ", ".join(f.day.isoformat() for f in failures)
    written = f"; written: {', '.join(per_day)}" if per_day else ""
    raise dg.Failure(
        description=(
            "; ".join(str(f) for f in failures)
            if len(failures) == 1 and not per_day
            else f"{source.name}: {len(failures)} day(s) failed ({days}){written}. "
            + " | ".join(str(f) for f in failures)
        ),
        metadata={"failed_days": dg.MetadataValue.json([f.day.isoformat() for f in failures])},
        allow_retries=any(f.retryable for f in failures),
    )


SECRET_BEARING_OPTIONS = ("headers", "url")


def public_options(source: SourceConfig) -> dict[str, Any]:
    """The source's options fit to show in the UI: fields that may carry credentials left out."""
    return {k: v for k, v in source.options.items() if k not in SECRET_BEARING_OPTIONS}
