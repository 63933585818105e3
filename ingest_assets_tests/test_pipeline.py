"""Every asset, materialized for real into a temporary DuckDB warehouse from the sandbox."""

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from ingest_assets.definitions import build_definitions
from ingest_assets.sandbox import Faults, Sandbox
from ingest_assets_tests.conftest import DEMO_PARTITION, QUIET, read_table, run_pipeline

TABLES = [
    "raw.dummyjson_products",
    "raw.partner_feed",
    "raw.supplier_catalog",
    "raw.open_meteo_weather",
    "quarantine.records",
    "cleaned.products",
    "features.products",
    "metrics.products",
    "cleaned.weather",
    "features.weather",
    "metrics.weather",
    "metrics.ingestion",
]
RUN_SPECIFIC = {"_run_id", "_ingested_at", "_seq", "run_id", "quarantined_at"}
pytestmark = pytest.mark.slow


def snapshot(home: Path) -> dict[str, pd.DataFrame]:
    tables = {}
    for table in TABLES:
        df = read_table(home, table)
        df = df.drop(columns=[c for c in df.columns if c in RUN_SPECIFIC])
        if table == "metrics.ingestion":
            df = df.drop(columns=["duration_s"])
        # Pages and cities arrive concurrently, in any order: compare rows, not arrival order.
        keys = [
            "partition_date",
            *(
                c
                for c in ("source", "id", "partner_sku", "city", "time", "record")
                if c in df.columns
            ),
        ]
        tables[table] = df.sort_values(keys, kind="stable").reset_index(drop=True)
    return tables


def test_every_table_is_filled_and_conserves_records(
    ingest_env: Path, instance: dg.DagsterInstance
) -> None:
    result = run_pipeline(instance=instance)
    assert result.success
    tables = snapshot(ingest_env)
    for table, df in tables.items():
        assert len(df) > 0, table
        assert (df["partition_date"] == pd.Timestamp(DEMO_PARTITION)).all(), table

    raw = {
        s: len(tables[f"raw.{s}"])
        for s in ("dummyjson_products", "partner_feed", "supplier_catalog", "open_meteo_weather")
    }
    assert raw == {
        "dummyjson_products": 194,
        "partner_feed": 40,
        "supplier_catalog": 30,
        "open_meteo_weather": 120,
    }
    valid = tables["cleaned.products"]["source"].value_counts().to_dict()
    valid["open_meteo_weather"] = len(tables["cleaned.weather"])
    quarantined = tables["quarantine.records"]["source"].value_counts().to_dict()
    for source, count in raw.items():
        assert valid.get(source, 0) + quarantined.get(source, 0) == count, source
    assert quarantined == {"partner_feed": 9, "supplier_catalog": 5}

    ingestion = tables["metrics.ingestion"].set_index("source")
    assert ingestion.loc["dummyjson_products", "requests"] == 4
    assert ingestion.loc["open_meteo_weather", "requests"] == 5
    assert ingestion.loc["partner_feed", "requests"] == 1
    assert ingestion.loc["partner_feed", "records_quarantined"] == 9
    assert (
        ingestion["records_fetched"]
        == ingestion["records_valid"] + ingestion["records_quarantined"]
    ).all()
    assert (ingestion["retries"] == 0).all() and (ingestion["failed_requests"] == 0).all()

    products = tables["cleaned.products"]
    assert not products.duplicated(["partition_date", "source", "product_id"]).any()
    assert (products["category"] == products["category"].str.lower()).all()
    assert (
        len(tables["metrics.weather"]) == 5
        and (tables["metrics.weather"]["hours_observed"] == 24).all()
    )

    evaluations = result.get_asset_check_evaluations()
    assert evaluations and all(e.passed for e in evaluations)
    raw_events = instance.fetch_materializations(
        dg.AssetKey(["raw", "partner_feed"]), limit=1
    ).records
    metadata = raw_events[0].asset_materialization.metadata
    assert metadata["dagster/row_count"].value == 40 and metadata["requests"].value == 1
    cleaned = instance.fetch_materializations(dg.AssetKey(["cleaned", "products"]), limit=1).records
    cleaned_metadata = cleaned[0].asset_materialization.metadata
    assert cleaned_metadata["records_quarantined"].value == 14
    assert cleaned_metadata["duration_s"].value >= 0
    assert cleaned_metadata["dagster/row_count"].value == 250


def test_rematerializing_a_partition_leaves_identical_tables(
    ingest_env: Path, instance: dg.DagsterInstance
) -> None:
    assert run_pipeline("2024-06-01", instance=instance).success
    assert run_pipeline("2024-06-02", instance=instance).success
    before = snapshot(ingest_env)
    assert run_pipeline("2024-06-01", instance=instance).success
    after = snapshot(ingest_env)
    for table in TABLES:
        pd.testing.assert_frame_equal(before[table], after[table], check_like=True, obj=table)
    assert set(after["cleaned.products"]["partition_date"].dt.strftime("%Y-%m-%d")) == {
        "2024-06-01",
        "2024-06-02",
    }


def test_retries_are_counted_in_ingestion_metrics(
    ingest_env: Path, sandbox: Sandbox, instance: dg.DagsterInstance
) -> None:
    sandbox.set_faults(Faults(fail_first=2))
    assert run_pipeline(instance=instance).success
    ingestion = read_table(ingest_env, "metrics.ingestion").set_index("source")
    for source in ("dummyjson_products", "open_meteo_weather"):
        assert ingestion.loc[source, "retries"] == 2
        assert ingestion.loc[source, "failed_requests"] == 2
    assert ingestion.loc["dummyjson_products", "requests"] == 6
    assert ingestion.loc["dummyjson_products", "records_fetched"] == 194


def test_a_missing_landing_file_fails_only_its_source(
    ingest_env: Path, instance: dg.DagsterInstance
) -> None:
    result = run_pipeline("2024-06-03", instance=instance, raise_on_error=False)
    assert not result.success
    failures = [e for e in result.all_events if e.is_step_failure]
    assert sorted(e.step_key for e in failures) == ["raw__partner_feed", "raw__supplier_catalog"]
    message = failures[0].event_specific_data.error.message
    assert "no file for partition 2024-06-03" in message and "landing sensor" in message
    # the independent sources still landed their day
    assert len(read_table(ingest_env, "raw.dummyjson_products")) == 194
    assert len(read_table(ingest_env, "cleaned.weather")) == 120


def test_a_partition_range_runs_as_one_backfill(
    ingest_env: Path, instance: dg.DagsterInstance
) -> None:
    defs = build_definitions()
    result = defs.resolve_job_def("ingest_pipeline").execute_in_process(
        instance=instance,
        run_config=QUIET,
        tags={
            "dagster/asset_partition_range_start": "2024-06-01",
            "dagster/asset_partition_range_end": "2024-06-02",
        },
    )
    assert result.success
    cleaned = read_table(ingest_env, "cleaned.weather")
    assert cleaned.groupby(cleaned["partition_date"].dt.strftime("%Y-%m-%d")).size().to_dict() == {
        "2024-06-01": 120,
        "2024-06-02": 120,
    }
    ingestion = read_table(ingest_env, "metrics.ingestion")
    assert len(ingestion) == 8
    assert ingestion["requests"].notna().all()


def test_requests_of_a_retried_step_still_count(
    ingest_env: Path, sandbox: Sandbox, instance: dg.DagsterInstance
) -> None:
    # Five 503s exhaust the five attempts of the first page: the step fails, and Dagster's
    # RetryPolicy runs it again, which succeeds. Every attempt is counted.
    sandbox.set_faults(Faults(fail_first=5))
    result = run_pipeline(instance=instance)
    assert result.success
    retried = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert [e.step_key for e in retried] == ["raw__dummyjson_products"]
    ingestion = read_table(ingest_env, "metrics.ingestion").set_index("source")
    products = ingestion.loc["dummyjson_products"]
    assert (products["requests"], products["failed_requests"], products["retries"]) == (9, 5, 5)
    assert products["records_fetched"] == 194
    weather = ingestion.loc["open_meteo_weather"]
    assert (weather["requests"], weather["failed_requests"], weather["retries"]) == (10, 5, 5)
    assert sandbox.stats()["by_path"]["/products"] == 9
