"""Landing sensors: a file that lands for a day starts a run of its source for that day."""

import datetime as dt
import glob
import re
from pathlib import Path

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from ingest_assets.assets.common import daily_partitions
from ingest_assets.automation.jobs import source_job_name
from ingest_assets.config import SourceConfig, landing_dir, render_template, resolve_env

_DATE_TOKEN = "\x00date\x00"
_DATE_GROUP = r"(?P<date>\d{4}-\d{2}-\d{2})"


def landing_pattern(template: str) -> tuple[str, re.Pattern[str]]:
    """The glob that finds a source's candidate files, and the regex a file must match in full.

    ``{date}`` may stand anywhere in the path, folders included, and more than once (then every
    occurrence is the same day). The glob only narrows the search; the regex decides, so
    ``2024-06-01 (copy).csv`` or ``old-2024-05-30.csv`` never pass for ``{date}.csv``.
    """
    rendered = render_template(
        resolve_env(template), {"landing_dir": str(landing_dir()), "date": _DATE_TOKEN}
    )
    literals = rendered.split(_DATE_TOKEN)
    glob_pattern = "*".join(glob.escape(part) for part in literals)
    regex = re.escape(literals[0])
    for index, part in enumerate(literals[1:]):
        regex += (_DATE_GROUP if index == 0 else "(?P=date)") + re.escape(part)
    return glob_pattern, re.compile(regex)


def landed_files(source: SourceConfig) -> list[tuple[str, Path]]:
    """(partition key, path) for every landed file matching the source's path template."""
    glob_pattern, regex = landing_pattern(str(source.options["path"]))
    if "date" not in regex.groupindex:
        return []  # one fixed file is not a file per day: nothing to start per partition
    found = []
    for name in sorted(glob.glob(glob_pattern)):
        match = regex.fullmatch(name)
        if not match or not Path(name).is_file():
            continue
        try:
            day = dt.date.fromisoformat(match.group("date"))
        except ValueError:
            continue  # 2024-02-30 looks like a day and is not one
        found.append((day.isoformat(), Path(name)))
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
            # With {date} in a folder every day's file has the same name: the day goes in front.
            # (A dated file name stays the key alone, so files seen before keep their run keys.)
            label = path.name if partition_key in path.name else f"{partition_key}/{path.name}"
            requests.append(
                dg.RunRequest(
                    partition_key=partition_key,
                    # A changed file (new mtime or size) is a new run; the same file never twice.
                    run_key=f"{label}:{stat.st_mtime_ns}:{stat.st_size}",
                    tags={"source": source.name, "landing_file": label},
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
