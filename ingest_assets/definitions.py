"""The one place that builds ``dg.Definitions`` for this code location."""

from __future__ import annotations

import warnings

import dagster as dg

from ingest_assets.assets.checks import build_quality_checks
from ingest_assets.assets.datasets import build_dataset_assets
from ingest_assets.assets.metadata import with_ui_metadata
from ingest_assets.assets.raw import build_raw_asset
from ingest_assets.assets.replay import build_history_asset, build_replay_job
from ingest_assets.assets.replay_preview import build_preview_job
from ingest_assets.automation.alerts import alert_on_check_failure, alert_on_run_failure
from ingest_assets.automation.jobs import build_jobs, source_job_name
from ingest_assets.automation.retention import build_retention
from ingest_assets.automation.schedules import build_schedules
from ingest_assets.automation.sensors import build_automation_sensor, build_landing_sensor
from ingest_assets.config import SourcesFile
from ingest_assets.executors import build_executor, check_deployment
from ingest_assets.loading import load_sources
from ingest_assets.sandbox.switch import use_sandbox_if_requested
from ingest_assets.warehouse import build_io_manager

# We use backfill policies and partitioned asset checks on purpose; their beta/preview notices
# would otherwise repeat on every load of this code location.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)


def build_definitions(
    sources: SourcesFile | None = None, warehouse_url: str | None = None
) -> dg.Definitions:
    """Everything for a sources file and a warehouse (defaults: the environment's)."""
    sources = sources or load_sources()
    # Before anything is built: what cannot work across machines fails here, saying why.
    check_deployment(warehouse_url, archiving=any(s.archive.enabled for s in sources.sources))
    catalog = sources.catalog
    assets: list[dg.AssetsDefinition] = [
        build_raw_asset(s, catalog[s.dataset]) for s in sources.sources
    ]
    for dataset in sources.datasets:
        assets += build_dataset_assets(dataset, sources.for_dataset(dataset.name))
    assets.append(build_history_asset(sources.sources))
    # Columns, owners, layer kinds, previews and code references, over whatever was built.
    assets = with_ui_metadata(assets, sources.sources, catalog)

    jobs = build_jobs(sources.sources)
    jobs_by_name = {job.name: job for job in jobs}
    sensors = [
        build_landing_sensor(s, jobs_by_name[source_job_name(s)])
        for s in sources.sources
        if s.sensor
    ]
    retention_job, retention_schedule = build_retention(sources.sources)
    return dg.Definitions(
        assets=assets,
        asset_checks=build_quality_checks(
            sources.sources, {key for a in assets for key in a.keys}, catalog
        ),
        jobs=[
            *jobs,
            build_replay_job(sources.sources),
            build_preview_job(sources.sources, catalog),
            retention_job,
        ],
        schedules=[*build_schedules(sources.sources, jobs_by_name), retention_schedule],
        sensors=[*sensors, build_automation_sensor(), alert_on_run_failure, alert_on_check_failure],
        resources={"io_manager": build_io_manager(warehouse_url)},
        executor=build_executor(),
    )


# INGEST_SANDBOX=1: the REST sources talk to a loopback sandbox API in this process (offline).
use_sandbox_if_requested()
defs = build_definitions()
