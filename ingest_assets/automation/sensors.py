"""Landing sensors: a file that lands for a day starts a run of its source for that day."""

import datetime as dt
import re
from pathlib import Path

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from ingest_assets.assets.common import daily_partitions
from ingest_assets.automation.jobs import source_job_name
from ingest_assets.config import SourceConfig, landing_dir, render_template, resolve_env

_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})")


def landed_files(source: SourceConfig) -> list[tuple[str, Path]]:
    """(partition key, path) for every landed file matching the source's path template."""
    template = resolve_env(str(source.options["path"]))
    pattern = Path(render_template(template, {"landing_dir": str(landing_dir()), "date": "*"}))
    found = []
    for path in sorted(pattern.parent.glob(pattern.name)):
        match = _DATE.search(path.name)
        if not match:
            continue
        try:
            day = dt.date.fromisoformat(match.group(1))
        except ValueError:
            continue
        found.append((day.isoformat(), path))
    return found


def build_landing_sensor(
    source: SourceConfig, job: UnresolvedAssetJobDefinition
) -> dg.SensorDefinition:
    @dg.sensor(
        name=f"{source.name}_landing",
        job=job,
        minimum_interval_seconds=60,
        description=f"Starts {source_job_name(source)} for a day when its file lands (or changes).",
        default_status=dg.DefaultSensorStatus.STOPPED,
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        requests, waiting = [], []
        for partition_key, path in landed_files(source):
            # A day exists as a partition once it has ended (UTC); a file for today, or one
            # dated before 2024-01-01, waits (or is ignored) instead of failing every tick.
            if not daily_partitions.has_partition_key(partition_key):
                waiting.append(path.name)
                continue
            stat = path.stat()
            requests.append(
                dg.RunRequest(
                    partition_key=partition_key,
                    # A changed file (new mtime or size) is a new run; the same file never twice.
                    run_key=f"{path.name}:{stat.st_mtime_ns}:{stat.st_size}",
                    tags={"source": source.name, "landing_file": path.name},
                )
            )
        if waiting:
            context.log.info(f"not a partition (yet): {', '.join(waiting)}")
        return dg.SensorResult(run_requests=requests)

    return _sensor


def build_automation_sensor() -> dg.AutomationConditionSensorDefinition:
    """Evaluates the downstream assets' ``day_follows_parents`` conditions: when a schedule or
    a landing sensor updates a day of raw/<source>, that day of cleaned/, features/ and
    metrics/ follows (see ``automation/conditions.py``). On by default (Dagster's own
    default automation sensor starts stopped), so turning on a schedule is all it takes."""
    return dg.AutomationConditionSensorDefinition(
        "ingest_automation",
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=30,
        description="Materializes each day downstream of raw/ again when a parent of it is updated.",
    )
