"""Quarantine replay on real materializations: fix a mapping or a rule, replay, count."""

from __future__ import annotations

import json

import dagster as dg
import pandas as pd
import pytest

from ingest_assets.assets.replay import REPLAY_JOB, replay_run_config
from ingest_assets.assets.replay_preview import PREVIEW_JOB
from ingest_assets_tests.quality_fixtures import (  # noqa: F401 - fixtures
    QualityEnv,
    check_results,
    materialized,
    quality_env_fixture,
    quality_sandbox_fixture,
    redeclare,
    shipped,
)

pytestmark = pytest.mark.timeout(300)

DAY = "WHERE partition_date = DATE '2024-06-01'"
PARTNER = "source = 'partner_feed'"


def counts(env: QualityEnv, where: str = DAY) -> dict[str, int]:
    """Partner rows per table, and the raw records that are in neither or in both."""
    raw = env.table("raw.partner_feed", where)["_record"]
    quarantined = env.table("quarantine.records", f"{where} AND {PARTNER}")["record"]
    cleaned = env.table("cleaned.products", f"{where} AND {PARTNER}")
    return {
        "raw": len(raw),
        "cleaned": len(cleaned),
        "quarantined": len(quarantined),
        "cleaned_ids": cleaned["product_id"].nunique(),
        "quarantined_ids": len(set(quarantined)),
    }


def history(env: QualityEnv, where: str = DAY) -> pd.DataFrame:
    return env.table("quarantine.history", f"{where} AND {PARTNER}")


def test_replay_after_a_mapping_fix_moves_records_once(quality_env: QualityEnv) -> None:
    weather = shipped("open_meteo_weather")
    broken = shipped("partner_feed")
    broken["mapping"]["discount_pct"] = "discount_rate"  # the file's column is "discount"
    quality_env.use_sources(partner_feed=broken, open_meteo_weather=weather)
    first = quality_env.run()
    assert first.success
    assert counts(quality_env) == {
        "raw": 40, "cleaned": 0, "quarantined": 40, "cleaned_ids": 0, "quarantined_ids": 40,
    }  # fmt: skip
    raw_before = quality_env.table("raw.partner_feed", DAY)

    fixed = shipped("partner_feed")
    quality_env.use_sources(partner_feed=fixed, open_meteo_weather=weather)
    replay = quality_env.run(job=REPLAY_JOB, run_config=replay_run_config("partner_feed"))
    assert replay.success
    replay_id = replay.run_id

    # Nothing fetched again; 31 records moved to cleaned/, the 9 invalid ones stay.
    assert "raw/partner_feed" not in materialized(replay)
    pd.testing.assert_frame_equal(quality_env.table("raw.partner_feed", DAY), raw_before)
    after = counts(quality_env)
    assert after == {
        "raw": 40,
        "cleaned": 31,
        "quarantined": 9,
        "cleaned_ids": 31,
        "quarantined_ids": 9,
    }
    checks = check_results(replay)
    assert checks[("quarantine/products", "conservation_partner_feed")].passed
    assert checks[("cleaned/products", "pandera_schema")].passed
    assert {"features/products", "metrics/products", "metrics/ingestion_products"} <= materialized(
        replay
    )

    marks = history(quality_env)
    assert marks["status"].value_counts().to_dict() == {"replayed": 31, "quarantined": 9}
    replayed = marks[marks["status"] == "replayed"]
    assert (replayed["replay_run_id"] == replay_id).all()
    assert (replayed["quarantined_run_id"] == first.run_id).all()
    assert replayed["errors"].map(lambda e: json.loads(e)[0]["column"]).eq("discount_pct").all()
    moved_skus = {json.loads(r)["partner_sku"] for r in replayed["record"]}
    cleaned_skus = set(quality_env.table("cleaned.products", f"{DAY} AND {PARTNER}")["product_id"])
    assert moved_skus == cleaned_skus
    report = replay.asset_materializations_for_node("quarantine__history")[0].metadata
    assert report["replayed"].value == 31 and report["scope"].value == "partner_feed"
    assert report["replayed_by_source"].value == {"partner_feed": 31}

    # A normal re-run of the day (fetching again) and a second replay change nothing.
    assert quality_env.run().success
    again = quality_env.run(job=REPLAY_JOB, run_config=replay_run_config("partner_feed"))
    assert counts(quality_env) == after
    marks_after = history(quality_env)
    assert len(marks_after) == 40
    assert (
        marks_after.loc[marks_after["status"] == "replayed", "replay_run_id"] == replay_id
    ).all()
    assert (
        again.asset_materializations_for_node("quarantine__history")[0].metadata["replayed"].value
        == 0
    )
    metrics = quality_env.table("metrics.ingestion", f"{DAY} AND {PARTNER}").iloc[0]
    assert (metrics["records_valid"], metrics["records_quarantined"]) == (31, 9)


def test_replay_of_a_range_after_a_rule_fix(
    quality_env: QualityEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    quality_env.use_sources(partner_feed=shipped("partner_feed"))
    assert quality_env.run("2024-06-01", until="2024-06-02").success
    june = "WHERE partition_date BETWEEN DATE '2024-06-01' AND DATE '2024-06-02'"
    before = quality_env.table("quarantine.records", june)
    assert len(before) == 18

    # Today's rule: ratings are on a 0..10 scale (the declaration changed, nothing else).
    redeclare(monkeypatch, "products", fields={"rating": {"le": 10}})
    replay = quality_env.run(
        "2024-06-01", until="2024-06-02", job=REPLAY_JOB, run_config=replay_run_config()
    )
    assert replay.success
    partitions = {
        e.partition for e in replay.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey(["cleaned", "products"])
    }  # fmt: skip
    assert partitions == {"2024-06-01", "2024-06-02"}

    # PRT-0017 (06-01) and PRT-0021 (06-02) had rating 7.2: valid under today's rule.
    marks = quality_env.table("quarantine.history", june)
    replayed = marks[marks["status"] == "replayed"]
    assert sorted(json.loads(r)["partner_sku"] for r in replayed["record"]) == [
        "PRT-0017",
        "PRT-0021",
    ]
    assert set(replayed["partition_date"].dt.strftime("%Y-%m-%d")) == {"2024-06-01", "2024-06-02"}
    assert len(quality_env.table("quarantine.records", june)) == 16
    for day in ("2024-06-01", "2024-06-02"):
        where = f"WHERE partition_date = DATE '{day}'"
        numbers = counts(quality_env, where)
        assert numbers["cleaned"] + numbers["quarantined"] == numbers["raw"]
        assert numbers["cleaned"] == numbers["cleaned_ids"]
    rating = quality_env.table("cleaned.products", f"{DAY} AND product_id = 'PRT-0017'")
    assert rating["rating"].tolist() == [7.2]


def test_the_preview_says_what_the_replay_then_does(
    quality_env: QualityEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    quality_env.use_sources(partner_feed=shipped("partner_feed"))
    assert quality_env.run("2024-06-01").success
    before = quality_env.table("quarantine.records")
    redeclare(monkeypatch, "products", fields={"rating": {"le": 10}})

    preview = quality_env.run(
        "2024-06-01",
        job=PREVIEW_JOB,
        run_config={"ops": {"preview_replay": {"config": {"source": None}}}},
    )
    assert preview.success
    (output,) = [e for e in preview.all_events if e.event_type == dg.DagsterEventType.STEP_OUTPUT]
    metadata = output.step_output_data.metadata
    assert metadata["summary"].value == {
        "products": {"quarantined": 9, "would_accept": 1, "would_stay": 8, "newly_quarantined": 0}
    }
    checks = {
        (r.data["dataset"], r.data["check"]): r.data for r in metadata["by_check"].value.records
    }
    assert checks[("products", "rating: less_than_or_equal_to(5)")]["would_accept"] == "1"
    accepted = [r.data for r in metadata["examples"].value.records if r.data["verdict"] == "accept"]
    assert [json.loads(r["record"])["partner_sku"] for r in accepted] == ["PRT-0017"]
    # The preview wrote nothing.
    pd.testing.assert_frame_equal(quality_env.table("quarantine.records"), before)

    replay = quality_env.run("2024-06-01", job=REPLAY_JOB, run_config=replay_run_config())
    assert replay.success
    marks = quality_env.table("quarantine.history")
    released = marks[marks["status"] == "replayed"]
    assert [json.loads(r)["partner_sku"] for r in released["record"]] == ["PRT-0017"]
    assert len(quality_env.table("quarantine.records")) == 8
