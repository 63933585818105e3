"""Jobs: one per source (its raw asset) and one for the whole pipeline."""

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from ingest_assets.config import SourceConfig

PIPELINE_JOB = "ingest_pipeline"


def source_job_name(source: SourceConfig) -> str:
    return f"ingest_{source.name}"


def build_jobs(sources: tuple[SourceConfig, ...]) -> list[UnresolvedAssetJobDefinition]:
    """Source jobs materialize raw/<source>; downstream assets follow by automation condition."""
    jobs = [
        dg.define_asset_job(
            source_job_name(s),
            selection=dg.AssetSelection.assets(dg.AssetKey(["raw", s.name])),
            description=f"Fetch {s.name} for a day; cleaned/features/metrics follow automatically.",
            tags={"source": s.name},
        )
        for s in sources
    ]
    jobs.append(
        dg.define_asset_job(
            PIPELINE_JOB,
            selection=dg.AssetSelection.all(),
            description="Every source and every table for a day (or a backfill range).",
        )
    )
    return jobs
