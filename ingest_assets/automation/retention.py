"""Archive retention: a daily job drops archived days older than each source's ``keep_days``.

``archive: {keep_days: N}`` in ``defaults`` or a source keeps N days of that source's archive
(days before today minus N go, with every object no kept day still names); without it a
source's archive is kept. The job logs what it removed and shows it as metadata.
"""

import datetime as dt

import dagster as dg

from ingest_assets.archive import ArchiveStore, archive_location
from ingest_assets.config import SourceConfig

RETENTION_JOB = "archive_retention"


def build_retention(
    sources: tuple[SourceConfig, ...],
) -> tuple[dg.JobDefinition, dg.ScheduleDefinition]:
    keep_days = {s.name: s.archive.keep_days for s in sources}

    # Nothing to store: the removal is the work, shown as the output's metadata.
    @dg.op(name="prune_archive", out=dg.Out(dg.Nothing))
    def prune_archive(context: dg.OpExecutionContext) -> dg.Output:
        """Drop archived days past their source's keep_days, then unreferenced objects."""
        store = ArchiveStore(archive_location())
        today = dt.datetime.now(dt.UTC).date()
        removed = store.prune(keep_days, today)
        for source, days in removed["days"].items():
            context.log.info(
                f"archive {source}: dropped {len(days)} days ({days[0]} .. {days[-1]})"
            )
        context.log.info(f"archive: {removed['objects']} objects no kept day names were removed")
        return dg.Output(
            None,
            metadata={
                "days_removed": sum(len(d) for d in removed["days"].values()),
                "objects_removed": removed["objects"],
                "keep_days": dg.MetadataValue.json(
                    {k: v for k, v in keep_days.items() if v is not None}
                ),
            },
        )

    @dg.job(
        name=RETENTION_JOB,
        description="Drop archived days older than each source's archive.keep_days.",
    )
    def archive_retention() -> None:
        prune_archive()

    schedule = dg.ScheduleDefinition(
        name="archive_retention_daily",
        job=archive_retention,
        cron_schedule="30 3 * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING
        if any(v is not None for v in keep_days.values())
        else dg.DefaultScheduleStatus.STOPPED,
    )
    return archive_retention, schedule
