"""Schema drift on real materializations: visible per partition, missing required → quarantine."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from ingest_assets_tests.quality_fixtures import (  # noqa: F401 - fixtures
    QualityEnv,
    check_results,
    quality_env_fixture,
    quality_sandbox_fixture,
    shipped,
)

pytestmark = pytest.mark.timeout(300)

# The partner changed its export: no category column, a new colour column, prices in words.
DRIFTED = """partner_sku,name,colour,brand,list_price,discount,rating,stock
PRT-0001,Chef Knife,steel,Victorinox,cheap,10,4.7,35
PRT-0002,Cutting Board,brown,Totally Bamboo,affordable,0,4.4,120
PRT-0003,Skillet,black,Lodge,39.95,15,4.8,64
"""


def drift_of(result: dg.ExecuteInProcessResult, source: str) -> dg.AssetCheckEvaluation:
    return check_results(result)[(f"raw/{source}", "schema_drift")]


def test_drift_is_a_warning_per_partition_and_missing_required_fields_quarantine(
    quality_env: QualityEnv,
) -> None:
    quality_env.use_sources(partner_feed=shipped("partner_feed"))
    quality_env.land("partner_feed", "2024-06-02", DRIFTED)
    usual = quality_env.run("2024-06-01")
    drifted = quality_env.run("2024-06-02")
    assert usual.success and drifted.success

    assert drift_of(usual, "partner_feed").passed
    check = drift_of(drifted, "partner_feed")
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.partition == "2024-06-02"
    metadata = {k: getattr(v, "value", v) for k, v in check.metadata.items()}
    assert metadata["new_fields"] == ["colour"]
    assert metadata["missing_fields"] == ["category"]
    assert metadata["missing_required_fields"] == ["category"]
    assert metadata["type_changes"]["list_price"]["declared"] == "number"
    assert metadata["type_changes"]["list_price"]["nonconforming"] == 2
    assert "required category missing: those records are quarantined" in check.description

    # The raw asset's own materialization says the same, for that day.
    raw = drifted.asset_materializations_for_node("raw__partner_feed")[0]
    assert raw.metadata["schema_drift"].value == {
        "2024-06-02": {
            "records": 3,
            "new_fields": ["colour"],
            "missing_fields": ["category"],
            "type_changes": ["list_price"],
        }
    }
    # Every record lacks the required category: all three are quarantined, none is cleaned.
    day = "WHERE partition_date = DATE '2024-06-02'"
    assert quality_env.count("cleaned.products", day) == 0
    quarantined = quality_env.table("quarantine.records", day)
    assert len(quarantined) == 3
    for errors in quarantined["errors"]:
        assert {
            "column": "category",
            "check": "not_nullable",
            "message": "a value is required",
        } in json.loads(errors)

    # Per partition in Dagster: the latest evaluation of each day keeps its own outcome.
    key = dg.AssetCheckKey(dg.AssetKey(["raw", "partner_feed"]), "schema_drift")
    records = quality_env.instance.event_log_storage.get_asset_check_execution_history(
        key, limit=10
    )
    outcome = {
        r.event.dagster_event.event_specific_data.partition: r.event.dagster_event.event_specific_data.passed
        for r in records
    }
    assert outcome == {"2024-06-01": True, "2024-06-02": False}


def test_the_shipped_http_sources_match_their_declarations(quality_env: QualityEnv) -> None:
    quality_env.use_sources(
        dummyjson_products=shipped("dummyjson_products"),
        open_meteo_weather=shipped("open_meteo_weather"),
    )
    result = quality_env.run("2024-06-01")
    for source, records in (("dummyjson_products", 194), ("open_meteo_weather", 120)):
        check = drift_of(result, source)
        assert check.passed, check.description
        assert check.metadata["records"].value == records


def test_an_api_that_renames_a_field_drifts(quality_env: QualityEnv) -> None:
    products = shipped("dummyjson_products")
    products["fields"]["discount_percentage"] = products["fields"].pop("discountPercentage")
    quality_env.use_sources(dummyjson_products=products)
    check = drift_of(quality_env.run("2024-06-01"), "dummyjson_products")
    assert not check.passed
    assert check.metadata["new_fields"].value == ["discountPercentage"]
    assert check.metadata["missing_fields"].value == ["discount_percentage"]
