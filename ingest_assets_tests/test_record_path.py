"""The record path end to end: streamed raw days, one split per dataset, deterministic order,
measured counts, and the same verdicts on DuckDB and PostgreSQL."""

from __future__ import annotations

import gc
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import dagster as dg
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest_assets.quality.validate import to_float
from ingest_assets.records.split import KeyRegistry
from ingest_assets.records.stream import GC_YOUNG_THRESHOLD, fewer_collections
from ingest_assets_tests.pg import pg_url_fixture, query  # noqa: F401
from ingest_assets_tests.quality_fixtures import (  # noqa: F401
    QualityEnv,
    check_results,
    quality_env_fixture,
    quality_sandbox_fixture,
    shipped,
)

DAY = "2024-06-01"
PRODUCT = {
    "title": "Lamp",
    "category": "home",
    "brand": "Acme",
    "sku": "L",
    "price": 10,
    "discountPercentage": 5,
    "rating": 4,
    "stock": 3,
}

# A JSON-lines products source reading {landing_dir}/feed/<day>.jsonl.
FEED = {
    "connector": "jsonl",
    "dataset": "products",
    "path": "{landing_dir}/feed/{date}.jsonl",
    "mapping": {"product_id": "id", "discount_pct": "discountPercentage"},
}


class PagedCatalogue:
    """A loopback products API: limit/skip pages with a total; ``slow`` pages answer late, so
    pages complete out of order."""

    def __init__(self, products: list[dict[str, Any]], slow: dict[int, float]) -> None:
        self.products = products
        self.slow = slow
        catalogue = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                query = parse_qs(urlparse(self.path).query)
                limit = int(query.get("limit", ["10"])[0])
                skip = int(query.get("skip", ["0"])[0])
                time.sleep(catalogue.slow.get(skip, 0.0))
                body = json.dumps(
                    {
                        "products": catalogue.products[skip : skip + limit],
                        "total": len(catalogue.products),
                        "skip": skip,
                        "limit": limit,
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def catalogue_source(url: str) -> dict[str, Any]:
    block = shipped("dummyjson_products")
    block["base_url"] = url
    block["pagination"]["page_size"] = 10
    block.pop("fields", None)
    block["http"] = {"max_concurrency": 4, "rate_limit_per_s": 1000, "burst": 100}
    return block


def _stable(frame: pd.DataFrame) -> pd.DataFrame:
    dropped = [c for c in frame.columns if c in ("_run_id", "_ingested_at", "run_id")]
    dropped += [c for c in frame.columns if c.endswith("_at")]
    return frame.drop(columns=dropped).reset_index(drop=True)


def test_identical_source_data_gives_identical_tables_whatever_the_timing(
    quality_env: QualityEnv,
) -> None:
    """Product 1 is on page 1 (price 11) and again on page 4 (price 99): the earlier one, in
    the source's order, is kept however late page 1 arrives."""
    products = [{"id": i, **PRODUCT} for i in range(1, 41)]
    products[0]["price"] = 11
    products[35] = {**products[0], "price": 99}
    tables = []
    for slow in ({0: 0.6}, {30: 0.6}, {}):
        with PagedCatalogue(products, slow) as url:
            quality_env.use_sources(api=catalogue_source(url))
            quality_env.run(DAY)
        tables.append(
            {
                name: _stable(quality_env.table(name, "ORDER BY ALL"))
                for name in ("raw.api", "cleaned.products", "quarantine.records")
            }
        )
    for later in tables[1:]:
        for name, frame in tables[0].items():
            pd.testing.assert_frame_equal(later[name], frame, check_like=True)
    cleaned = tables[0]["cleaned.products"]
    assert cleaned.loc[cleaned["product_id"] == "1", "price"].tolist() == [11.0]
    raw = tables[0]["raw.api"].sort_values("_seq")
    assert raw["id"].tolist() == [str(p["id"]) for p in products]
    (reason,) = json.loads(tables[0]["quarantine.records"]["errors"][0])
    assert reason["check"] == "duplicate"


def test_the_weather_key_holds_across_weather_sources(quality_env: QualityEnv) -> None:
    weather = shipped("open_meteo_weather")
    quality_env.use_sources(weather_a=weather, weather_b=weather)
    result = quality_env.run(DAY)
    assert result.success
    cleaned = quality_env.table("cleaned.weather")
    assert not cleaned.duplicated(["city", "observed_at"]).any()
    assert set(cleaned["source"]) == {"weather_a"}  # the first source in sources.yaml wins
    quarantined = quality_env.table("quarantine.records")
    assert set(quarantined["source"]) == {"weather_b"}
    assert len(quarantined) == len(cleaned)
    assert all(json.loads(e)[0]["check"] == "duplicate" for e in quarantined["errors"])
    checks = check_results(result)
    assert checks[("cleaned/weather", "pandera_schema")].passed


def test_a_lost_record_fails_conservation(
    quality_env: QualityEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """metrics.ingestion counts what was written: a writer that drops a cleaned row is caught."""
    from ingest_assets.warehouse.duckdb_io import DuckDBPartitionedIOManager

    write = DuckDBPartitionedIOManager.write

    def lossy(self, table, df, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(table) == "cleaned.weather":
            df = pd.concat(list(df), ignore_index=True).iloc[1:]
        return write(self, table, df, *args, **kwargs)

    monkeypatch.setattr(DuckDBPartitionedIOManager, "write", lossy)
    quality_env.use_sources(open_meteo_weather=shipped("open_meteo_weather"))
    result = quality_env.run(DAY, raise_on_error=False)
    ingestion = quality_env.table("metrics.ingestion").set_index("source")
    row = ingestion.loc["open_meteo_weather"]
    assert row["records_valid"] == row["records_fetched"] - 1
    checks = check_results(result)
    assert not checks[("quarantine/weather", "conservation_open_meteo_weather")].passed
    assert not checks[("metrics/ingestion_weather", "pandera_schema")].passed


HOSTILE_LINES = [
    json.dumps({"id": 1, **PRODUCT}),
    '{"id": 2, "title": "NaN price", "category": "home", "price": NaN, "discountPercentage": 0, "stock": 1}',
    '{"id": 3, "title": "inf", "category": "home", "price": Infinity, "discountPercentage": 0, "stock": 1}',
    '{"id": 4, "title": "lone \\ud800", "category": "home", "price": 1, "discountPercentage": 0, "stock": 1}',
    '{"id": 5, "title": "nul \\u0000", "category": "home", "price": 1, "discountPercentage": 0, "stock": 1}',
    json.dumps({"id": 6, **PRODUCT, "price": "1_5"}),
    json.dumps({"id": 7, **PRODUCT, "stock": "１２"}),
    json.dumps({"id": 8, **PRODUCT, "stock": "٣"}),
    json.dumps({"id": 9, **PRODUCT, "price": " +2.5e1 "}),
    json.dumps({"id": 10, **PRODUCT, "price": "1e999"}),
    json.dumps({"id": 11, **PRODUCT, "title": "Nul\u0000 twin"}),
    json.dumps({"id": 11, **PRODUCT, "title": "Nul\ufffd twin"}),
]
HOSTILE_VERDICTS = [
    ("1", "valid"),
    ("10", "dtype"),  # 1e999 is no finite number
    ("11", "parse"),  # the NUL twin...
    ("11", "valid"),  # ...so the U+FFFD twin is the first valid id 11, not a duplicate
    ("2", "parse"),
    ("3", "parse"),
    ("4", "parse"),
    ("5", "parse"),
    ("6", "dtype"),
    ("7", "dtype"),
    ("8", "dtype"),
    ("9", "valid"),
]


def _verdicts(quality_env: QualityEnv, pg_url: str | None) -> list[tuple[str, str]]:
    if pg_url is None:
        cleaned = quality_env.table("cleaned.products")
        quarantined = quality_env.table("quarantine.records")
    else:
        cleaned = pd.DataFrame(
            query(pg_url, "SELECT product_id FROM cleaned.products"), columns=["product_id"]
        )
        quarantined = pd.DataFrame(
            query(pg_url, "SELECT record::text, errors::text FROM quarantine.records"),
            columns=["record", "errors"],
        )
    verdicts = [(pid, "valid") for pid in cleaned["product_id"]]
    for record, errors in zip(quarantined["record"], quarantined["errors"], strict=True):
        checks = {e["check"] for e in json.loads(errors)}
        verdicts.append(
            (str(json.loads(record)["id"]), "parse" if "parse" in checks else sorted(checks)[0])
        )
    return sorted(verdicts)


@pytest.mark.parametrize(
    "warehouse", ["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_hostile_values_are_quarantined_alike_on_both_warehouses(
    quality_env: QualityEnv, warehouse: str, request: pytest.FixtureRequest
) -> None:
    pg_url = request.getfixturevalue("pg_url") if warehouse == "postgres" else None
    if pg_url:
        quality_env.monkeypatch.setenv("INGEST_WAREHOUSE_URL", pg_url)
    quality_env.use_sources(feed=FEED)
    quality_env.land("feed", DAY, "\n".join(HOSTILE_LINES) + "\n", suffix="jsonl")
    result = quality_env.run(DAY, raise_on_error=False)
    raw_count = (
        quality_env.count("raw.feed")
        if pg_url is None
        else query(pg_url, "SELECT count(*) FROM raw.feed")[0][0]
    )
    assert raw_count == len(HOSTILE_LINES)
    assert _verdicts(quality_env, pg_url) == HOSTILE_VERDICTS
    checks = check_results(result)
    assert checks[("quarantine/products", "conservation_feed")].passed


def test_number_grammar() -> None:
    assert to_float(" +2.5e1 ") == 25.0 and to_float("-0.5") == -0.5
    for bad in ("1_5", "１２", "٣", "NaN", "Infinity", "0x10", "1.", ".5", "1e", "--1"):
        with pytest.raises(ValueError):
            to_float(bad)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(0, 40), max_size=30), max_size=8))
def test_key_registry_flags_exactly_the_keys_seen_before(chunks: list[list[int]]) -> None:
    """A key repeats when any earlier row had it: earlier in its chunk or in any earlier chunk."""
    registry, seen = KeyRegistry(), set()
    for ids in chunks:
        keys = pd.DataFrame({"partition_date": pd.Timestamp(DAY), "id": [str(i) for i in ids]})
        expected = []
        for i in ids:
            expected.append(i in seen)
            seen.add(i)
        assert registry.repeats(keys).tolist() == expected
    assert len(registry.seen) == len(seen)


def test_the_collector_tuning_of_a_stream_is_undone_even_when_it_fails() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), fewer_collections():
        assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD and gc.get_freeze_count() > 0
        raise RuntimeError("the fetch failed")
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_a_failed_fetch_leaves_the_old_partition(quality_env: QualityEnv) -> None:
    quality_env.use_sources(feed=FEED)
    path = quality_env.land("feed", DAY, json.dumps({"id": 1, **PRODUCT}) + "\n", suffix="jsonl")
    quality_env.run(DAY)
    path.unlink()  # the day's file is gone: the next fetch fails
    result = quality_env.run(DAY, raise_on_error=False)
    assert not result.success
    assert quality_env.table("raw.feed")["id"].tolist() == ["1"]
    assert quality_env.table("cleaned.products")["product_id"].tolist() == ["1"]


def test_a_range_writes_every_good_day_and_names_the_bad_one(quality_env: QualityEnv) -> None:
    quality_env.use_sources(feed=FEED)
    for day in ("2024-06-01", "2024-06-03"):
        quality_env.land("feed", day, json.dumps({"id": 1, **PRODUCT}) + "\n", suffix="jsonl")
    result = quality_env.run("2024-06-01", until="2024-06-03", raise_on_error=False)
    assert not result.success
    raw = quality_env.table("raw.feed")
    assert sorted(pd.to_datetime(raw["partition_date"]).dt.strftime("%Y-%m-%d")) == [
        "2024-06-01",
        "2024-06-03",
    ]
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "2024-06-02" in str(failure.event_specific_data.error)
    # The good days are recorded as materialized, so their downstream partitions can follow.
    materialized = quality_env.instance.get_materialized_partitions(dg.AssetKey(["raw", "feed"]))
    assert materialized == {"2024-06-01", "2024-06-03"}


def test_request_counts_stay_exact_for_every_day_of_a_retried_range(
    quality_env: QualityEnv, quality_sandbox
) -> None:
    """The first request fails for good within its try (one attempt allowed): the step fails
    on 06-01 only, 06-02 is written; the step's retry fetches 06-01 alone. metrics.ingestion
    then counts every request the server saw, on the right day."""
    from ingest_assets.sandbox import Faults

    block = shipped("dummyjson_products")
    block["http"] = {"max_attempts": 1, "rate_limit_per_s": 1000, "burst": 100}
    block["retry"] = {"max_retries": 2, "delay_s": 0, "jitter": "none"}
    block.pop("fields", None)
    quality_env.use_sources(dummyjson_products=block)
    quality_sandbox.reset_stats()
    quality_sandbox.set_faults(Faults(fail_first=1))
    try:
        result = quality_env.run("2024-06-01", until="2024-06-02")
    finally:
        quality_sandbox.set_faults(Faults())
    assert result.success
    served = quality_sandbox.stats()["requests"]
    ingestion = quality_env.table("metrics.ingestion").set_index(
        pd.to_datetime(quality_env.table("metrics.ingestion")["partition_date"]).dt.strftime(
            "%Y-%m-%d"
        )
    )
    assert ingestion["requests"].sum() == served
    first, second = ingestion.loc["2024-06-01"], ingestion.loc["2024-06-02"]
    assert first["failed_requests"] == 1 and first["retries"] >= 1
    assert second["failed_requests"] == 0 and second["retries"] == 0
    assert first["records_fetched"] == second["records_fetched"] == 194
    assert first["requests"] == second["requests"] + 1
