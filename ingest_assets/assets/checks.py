"""Pandera schemas as partition-aware asset checks (the pudl pattern: schema → check factory)."""


import warnings

import dagster as dg
import pandas as pd
import pandera.errors
import pandera.pandas as pa

from ingest_assets.assets.common import daily_partitions
from ingest_assets.quality import schemas

SAMPLE_ROWS = 10


def failure_summary(failure_cases: pd.DataFrame) -> tuple[dict[str, int], str]:
    """Counts per ``column: check`` and a markdown sample of the failing values."""
    cases = failure_cases.assign(
        column=failure_cases["column"].fillna("(frame)").astype(str),
        check=failure_cases["check"].astype(str),
    )
    counts = cases.groupby(["column", "check"]).size().sort_values(ascending=False)
    by_check = {f"{column}: {check}": int(n) for (column, check), n in counts.items()}
    sample = cases.head(SAMPLE_ROWS)[["column", "check", "failure_case", "index"]]
    lines = ["| column | check | value | row |", "|---|---|---|---|"]
    lines += [f"| {r.column} | {r.check} | {r.failure_case} | {r.index} |" for r in sample.itertuples()]
    return by_check, "\n".join(lines)


def validate_frame(model: type[pa.DataFrameModel], df: pd.DataFrame) -> dg.AssetCheckResult:
    """Run a Pandera model lazily over a frame; failures become metadata, never exceptions."""
    try:
        model.validate(df, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        by_check, sample = failure_summary(exc.failure_cases)
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "rows_checked": len(df),
                "failures": sum(by_check.values()),
                "failures_by_check": dg.MetadataValue.json(by_check),
                "sample": dg.MetadataValue.md(sample),
            },
        )
    return dg.AssetCheckResult(passed=True, metadata={"rows_checked": len(df), "failures": 0})


def schema_check(key: list[str], model: type[pa.DataFrameModel], blocking: bool) -> dg.AssetChecksDefinition:
    """One blocking-or-not check named ``<model>_schema`` validating the asset's partition."""
    asset_key = dg.AssetKey(key)
    with warnings.catch_warnings():
        # Partitioned asset checks are a preview API in Dagster 1.13; they are what we need.
        warnings.simplefilter("ignore", dg.PreviewWarning)

        @dg.asset_check(
            asset=asset_key,
            name="pandera_schema",
            description=f"Every row of {'/'.join(key)} satisfies the Pandera model {model.__name__}.",
            blocking=blocking,
            partitions_def=daily_partitions,
        )
        def _check(context: dg.AssetCheckExecutionContext, frame: pd.DataFrame) -> dg.AssetCheckResult:
            return validate_frame(model, frame)

    return _check


SCHEMA_CHECKS: list[tuple[list[str], type[pa.DataFrameModel], bool]] = [
    (["cleaned", "products"], schemas.CleanedProducts, True),
    (["features", "products"], schemas.FeaturesProducts, False),
    (["metrics", "products"], schemas.MetricsProducts, False),
    (["cleaned", "weather"], schemas.CleanedWeather, True),
    (["features", "weather"], schemas.FeaturesWeather, False),
    (["metrics", "weather"], schemas.MetricsWeather, False),
    (["metrics", "ingestion"], schemas.MetricsIngestion, False),
]


def build_schema_checks(asset_keys: set[dg.AssetKey]) -> list[dg.AssetChecksDefinition]:
    return [schema_check(key, model, blocking) for key, model, blocking in SCHEMA_CHECKS if dg.AssetKey(key) in asset_keys]
