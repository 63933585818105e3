"""Schedules: each source with a ``schedule:`` cron fetches the day that last ended (UTC)."""

import datetime as dt

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from ingest_assets.assets.common import START_DATE
from ingest_assets.automation.jobs import source_job_name
from ingest_assets.config import SourceConfig


def previous_day(scheduled: dt.datetime) -> str:
    """The partition key of the last complete UTC day before a tick."""
    return (scheduled.astimezone(dt.UTC).date() - dt.timedelta(days=1)).isoformat()


def build_source_schedule(
    source: SourceConfig, job: UnresolvedAssetJobDefinition
) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=f"{source.name}_daily",
        cron_schedule=source.schedule,
        job=job,
        execution_timezone="UTC",
        description=f"Fetch {source.name} for the previous day, at '{source.schedule}' UTC.",
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        partition_key = previous_day(context.scheduled_execution_time)
        if partition_key < START_DATE:
            # The tick on the first day (or a backfilled tick before it) has no day to fetch.
            return dg.SkipReason(
                f"{partition_key} is before the first partition ({START_DATE}): nothing to fetch"
            )
        return dg.RunRequest(run_key=f"{source.name}:{partition_key}", partition_key=partition_key)

    return _schedule


def build_schedules(
    sources: tuple[SourceConfig, ...], jobs: dict[str, UnresolvedAssetJobDefinition]
) -> list[dg.ScheduleDefinition]:
    return [build_source_schedule(s, jobs[source_job_name(s)]) for s in sources if s.schedule]
