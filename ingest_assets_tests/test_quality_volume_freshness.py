"""Row-count anomalies against the trailing days, and the freshness of raw assets."""

from __future__ import annotations

import asyncio
import datetime as dt

import dagster as dg
import pytest
from dagster._core.definitions.freshness import FreshnessState
from dagster._core.definitions.freshness_evaluator import FRESHNESS_EVALUATORS_BY_POLICY_TYPE
from dagster._core.loader import LoadingContextForTest
from dagster._core.test_utils import freeze_time

from ingest_assets_tests.quality_fixtures import (  # noqa: F401 - fixtures
    QualityEnv,
    check_results,
    quality_env_fixture,
    quality_sandbox_fixture,
    shipped,
)

pytestmark = pytest.mark.timeout(300)
HEADER = "partner_sku,name,category,brand,list_price,discount,rating,stock\n"


def partner_file(rows: int) -> str:
    return HEADER + "".join(f"P-{i},Lamp {i},home,Acme,10,0,4,1\n" for i in range(rows))


def test_a_drop_of_more_than_half_warns(quality_env: QualityEnv) -> None:
    quality_env.use_sources(partner_feed=shipped("partner_feed"))
    days = {"2024-07-01": 40, "2024-07-02": 44, "2024-07-03": 36, "2024-07-04": 21, "2024-07-05": 9}
    for day, rows in days.items():
        quality_env.land("partner_feed", day, partner_file(rows))
    defs = quality_env.definitions()
    outcome = {}
    for day in days:
        result = quality_env.run(day, job="ingest_partner_feed", defs=defs)
        outcome[day] = check_results(result)[("raw/partner_feed", "row_count_anomaly")]

    assert "nothing to compare with" in outcome["2024-07-01"].description
    assert all(outcome[d].passed for d in ("2024-07-01", "2024-07-02", "2024-07-03", "2024-07-04"))
    # 21 rows is 53% of the median of 40, 44 and 36: fine. 9 is 22% of the median of four days.
    low = outcome["2024-07-05"]
    assert not low.passed and low.severity == dg.AssetCheckSeverity.WARN
    assert low.metadata["trailing_median"].value == 38.0
    assert low.metadata["ratio"].value == round(9 / 38, 4)
    assert "2024-07-05: 9 rows, 24% of the trailing median 38" in low.description


def freshness(
    defs: dg.Definitions, instance: dg.DagsterInstance, key: dg.AssetKey
) -> FreshnessState:
    """What Dagster's freshness daemon computes for the asset, now."""
    node = defs.resolve_asset_graph().get(key)
    evaluator = FRESHNESS_EVALUATORS_BY_POLICY_TYPE[type(node.freshness_policy)]()
    return asyncio.run(evaluator.evaluate_freshness(LoadingContextForTest(instance), node))


def test_raw_assets_warn_when_stale(quality_env: QualityEnv) -> None:
    source = shipped("partner_feed")
    source["freshness_warn_hours"] = 12
    quality_env.use_sources(partner_feed=source)
    defs = quality_env.definitions()
    key = dg.AssetKey(["raw", "partner_feed"])
    assert freshness(defs, quality_env.instance, key) == FreshnessState.UNKNOWN

    result = quality_env.run("2024-06-01", job="ingest_partner_feed", defs=defs)
    assert result.success
    done = quality_env.instance.get_latest_materialization_event(key).timestamp
    at = dt.datetime.fromtimestamp(done, dt.UTC)
    assert freshness(defs, quality_env.instance, key) == FreshnessState.PASS
    with freeze_time(at + dt.timedelta(hours=13)):
        assert freshness(defs, quality_env.instance, key) == FreshnessState.WARN
    with freeze_time(at + dt.timedelta(hours=25)):
        assert freshness(defs, quality_env.instance, key) == FreshnessState.FAIL
