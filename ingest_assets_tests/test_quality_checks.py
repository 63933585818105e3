"""The asset checks, on real materializations: sandbox over HTTP, files, a DuckDB warehouse."""

from __future__ import annotations

import json

import dagster as dg
import pandas as pd
import pytest

from ingest_assets.assets import datasets as dataset_assets
from ingest_assets.datasets import shipped as shipped_datasets
from ingest_assets.quality.validate import SplitResult
from ingest_assets.records.split import DatasetSplit
from ingest_assets_tests.quality_fixtures import (  # noqa: F401 - fixtures
    QualityEnv,
    check_results,
    materialized,
    quality_env_fixture,
    quality_sandbox_fixture,
    shipped,
)

pytestmark = pytest.mark.timeout(300)

SOURCES = ("dummyjson_products", "partner_feed", "supplier_catalog", "open_meteo_weather")
TABLES = ("cleaned/products", "features/products", "metrics/products", "cleaned/weather")


def value(evaluation: dg.AssetCheckEvaluation, key: str) -> object:
    return getattr(evaluation.metadata[key], "value", evaluation.metadata[key])


def test_every_table_has_its_checks(quality_env: QualityEnv) -> None:
    graph = quality_env.definitions().resolve_asset_graph()
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    for table in (*TABLES, "features/weather", "metrics/weather"):
        assert (table, "pandera_schema") in checks
    for dataset in ("products", "weather"):
        for table in (f"quarantine/{dataset}", f"metrics/ingestion_{dataset}"):
            assert (table, "pandera_schema") in checks
    assert ("quarantine/history", "pandera_schema") in checks
    for source in SOURCES:
        dataset = "weather" if source == "open_meteo_weather" else "products"
        assert {
            (f"quarantine/{dataset}", f"conservation_{source}"),
            (f"quarantine/{dataset}", f"quarantine_rate_{source}"),
        } <= checks
        assert {(f"raw/{source}", "schema_drift"), (f"raw/{source}", "row_count_anomaly")} <= checks
        node = graph.get(dg.AssetKey(["raw", source]))
        assert isinstance(node.freshness_policy, dg.FreshnessPolicy)
    blocking = {
        k.asset_key.to_user_string()
        for k in graph.asset_check_keys
        if graph.get_check_spec(k).blocking
    }
    assert blocking == {"cleaned/products", "cleaned/weather"}


def test_the_demo_partition_passes_every_check_and_counts_each_record_once(
    quality_env: QualityEnv,
) -> None:
    result = quality_env.run()
    assert result.success
    checks = check_results(result)
    failed = {key: e.description for key, e in checks.items() if not e.passed}
    assert not failed
    # schema checks; per source: conservation, rate, drift, volume
    assert len(checks) == 11 + 4 * 4

    partner = checks[("quarantine/products", "conservation_partner_feed")]
    assert partner.severity == dg.AssetCheckSeverity.ERROR
    assert (value(partner, "raw"), value(partner, "valid"), value(partner, "quarantined")) == (
        40,
        31,
        9,
    )
    weather = checks[("quarantine/weather", "conservation_open_meteo_weather")]
    assert (value(weather, "raw"), value(weather, "valid"), value(weather, "quarantined")) == (
        120,
        120,
        0,
    )
    rate = checks[("quarantine/products", "quarantine_rate_partner_feed")]
    assert (
        value(rate, "share") == round(9 / 40, 4) and "price: greater_than(0) ×2" in rate.description
    )
    drift = checks[("raw/dummyjson_products", "schema_drift")]
    assert value(drift, "records") == 194 and value(drift, "new_fields") == []
    volume = checks[("raw/partner_feed", "row_count_anomaly")]
    assert "nothing to compare with" in volume.description


def corrupt_categories(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in cleaning: valid products leave the split with upper-case categories."""
    split = DatasetSplit.split

    def buggy(self, raw, source, mapping, records=None) -> SplitResult:
        result = split(self, raw, source, mapping, records)
        if self.name == "products":
            result.valid["category"] = result.valid["category"].str.upper()
        return result

    monkeypatch.setattr(DatasetSplit, "split", buggy)


def test_a_failing_cleaned_check_blocks_everything_downstream_in_the_run(
    quality_env: QualityEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    corrupt_categories(monkeypatch)
    result = quality_env.run(raise_on_error=False)
    assert not result.success
    check = check_results(result)[("cleaned/products", "pandera_schema")]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert value(check, "failures_by_check") == {"category: lower_case": 250}
    assert all("product_id=" in r.data["row"] for r in value(check, "sample").records)

    done = materialized(result)
    assert "cleaned/products" in done
    assert not {"features/products", "metrics/products", "quarantine/history"} & done
    # The weather branch does not depend on cleaned/products: it completes.
    assert {"cleaned/weather", "features/weather", "metrics/weather"} <= done
    started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert "features__weather" in started
    assert not {"features__products", "metrics__products"} & started


def test_the_cleaned_check_runs_on_the_written_chunks_and_catches_a_key_repeated_across_them(
    quality_env: QualityEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dataset_assets, "SPLIT_CHUNK_ROWS", 7)
    split = DatasetSplit.split
    chunks_seen: list[pd.DataFrame] = []

    def repeats_the_first(self, raw, source, mapping, records=None) -> SplitResult:
        result = split(self, raw, source, mapping, records)
        if source == "partner_feed" and not result.valid.empty:
            chunks_seen.append(result.valid)
            if len(chunks_seen) == 2:
                # The second chunk's last row repeats the key of the first chunk's first row.
                again = chunks_seen[0].iloc[:1].assign(title="Another lamp")
                result.valid = pd.concat([result.valid, again], ignore_index=True)
        return result

    monkeypatch.setattr(DatasetSplit, "split", repeats_the_first)
    result = quality_env.run(raise_on_error=False)
    check = check_results(result)[("cleaned/products", "pandera_schema")]
    assert not check.passed
    assert value(check, "failures_by_check") == {"(frame): multiple_fields_uniqueness": 1}
    assert value(check, "rows_checked") == quality_env.count("cleaned.products") > 7
    (row,) = [r.data["row"] for r in value(check, "sample").records]
    assert "source=partner_feed" in row
    assert "features/products" not in materialized(result)


def test_features_and_metrics_checks_report_errors_without_blocking(
    quality_env: QualityEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    products = shipped_datasets()["products"]
    features = products.features

    def off_by_a_cent(df: pd.DataFrame) -> pd.DataFrame:
        computed = features(df)
        return computed.assign(final_price=computed["final_price"] + 0.01)

    monkeypatch.setattr(products, "features", off_by_a_cent)
    result = quality_env.run()
    assert result.success
    check = check_results(result)[("features/products", "pandera_schema")]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert value(check, "failures_by_check") == {"(frame): final_price_formula": 250}
    assert {"metrics/products", "quarantine/history"} <= materialized(result)


def test_conservation_fails_when_a_record_is_lost(
    quality_env: QualityEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    split = DatasetSplit.split

    def loses_one(self, raw, source, mapping, records=None) -> SplitResult:
        result = split(self, raw, source, mapping, records)
        if source == "partner_feed":
            result.valid = result.valid.iloc[1:].reset_index(drop=True)
        return result

    monkeypatch.setattr(DatasetSplit, "split", loses_one)
    result = quality_env.run()
    checks = check_results(result)
    lost = checks[("quarantine/products", "conservation_partner_feed")]
    assert not lost.passed and lost.severity == dg.AssetCheckSeverity.ERROR
    assert "40 raw ≠ 30 valid + 9 quarantined" in lost.description
    assert value(lost, "per_day") == {"2024-06-01": {"raw": 40, "valid": 30, "quarantined": 9}}
    assert checks[("quarantine/products", "conservation_supplier_catalog")].passed


ONLY_BAD = """partner_sku,name,category,brand,list_price,discount,rating,stock
BAD-1,Lamp,home,Acme,-1,0,4,1
BAD-2,   ,home,Acme,10,0,4,1
BAD-3,Desk,home,Acme,10,150,4,1
BAD-4,Sofa,home,Acme,10,0,4,2.5
BAD-5,Sofa,,Acme,0,0,4,2
"""


def test_a_partition_of_only_invalid_records(quality_env: QualityEnv) -> None:
    quality_env.use_sources(partner_feed=shipped("partner_feed"))
    quality_env.land("partner_feed", "2024-06-03", ONLY_BAD)
    result = quality_env.run("2024-06-03")
    assert result.success

    day = "WHERE partition_date = DATE '2024-06-03'"
    assert quality_env.count("raw.partner_feed", day) == 5
    assert quality_env.count("cleaned.products", day) == 0
    assert quality_env.count("features.products", day) == 0
    assert quality_env.count("metrics.products", day) == 0
    quarantined = quality_env.table("quarantine.records", day)
    assert sorted(quarantined["record"].map(lambda r: json.loads(r)["partner_sku"])) == [
        f"BAD-{i}" for i in range(1, 6)
    ]

    checks = check_results(result)
    assert checks[("cleaned/products", "pandera_schema")].passed
    assert value(checks[("cleaned/products", "pandera_schema")], "rows_checked") == 0
    conserved = checks[("quarantine/products", "conservation_partner_feed")]
    assert (
        conserved.passed
        and conserved.description == "partner_feed: 5 raw = 0 valid + 5 quarantined"
    )
    why = checks[("quarantine/products", "quarantine_rate_partner_feed")]
    assert not why.passed and why.severity == dg.AssetCheckSeverity.WARN
    assert value(why, "share") == 1.0
    for reason in (
        "price: greater_than(0) ×2",
        "title: not_nullable ×1",
        "discount_pct: less_than_or_equal_to(100) ×1",
        "stock: dtype ×1",
    ):
        assert reason in why.description
    assert any("expected a whole number" in r.data["errors"] for r in value(why, "sample").records)
    ingestion = quality_env.table("metrics.ingestion", day).iloc[0]
    assert (ingestion["records_valid"], ingestion["records_quarantined"]) == (0, 5)
