"""Connectors against real things: the sandbox over HTTP, files on disk, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import json
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from ingest_assets.config import SourceConfig
from ingest_assets.connectors import FetchContext, collect, get_connector_class
from ingest_assets.connectors.base import PagingError
from ingest_assets.connectors.files import MissingFileError
from ingest_assets.connectors.http import (
    CircuitBreaker,
    CircuitOpenError,
    FetchError,
    retry_after_seconds,
)
from ingest_assets.connectors.ratelimit import LocalBudget, Throttle
from ingest_assets.connectors.streams import ordered_fan_in, ordered_gather
from ingest_assets.sandbox import Faults, Sandbox
from ingest_assets_tests.conftest import require_service
from ingest_assets_tests.hostile import DAY, FAST_HTTP


def source(
    connector: str, dataset: str = "products", http: dict | None = None, **options: Any
) -> SourceConfig:
    return SourceConfig.model_validate(
        {
            "name": "s",
            "connector": connector,
            "dataset": dataset,
            "http": {**FAST_HTTP, **(http or {})},
            **options,
        }
    )


def fetch(src: SourceConfig, day: dt.date = DAY) -> tuple[list[dict], FetchContext]:
    ctx = FetchContext(partition_date=day)
    batches = collect(get_connector_class(src.connector)(src), ctx)
    return [r for b in batches for r in b], ctx


def products_source(url: str, **http: Any) -> SourceConfig:
    return source(
        "rest",
        http=http,
        base_url=url,
        path="/products",
        record_path="products",
        pagination={
            "kind": "limit_offset",
            "limit_param": "limit",
            "offset_param": "skip",
            "page_size": 50,
        },
    )


def test_limit_offset_fetches_every_product_once(sandbox: Sandbox) -> None:
    records, ctx = fetch(products_source(sandbox.url))
    ids = [r["id"] for r in records]
    assert len(ids) == len(sandbox.products) == 194
    assert sorted(ids) == sorted(p["id"] for p in sandbox.products)
    assert ctx.stats.requests == 4 and ctx.stats.retries == 0 and ctx.stats.failed_requests == 0
    assert ctx.stats.batches == 4


def test_transient_failures_are_retried_and_counted(sandbox: Sandbox) -> None:
    sandbox.set_faults(Faults(fail_first=3))
    records, ctx = fetch(products_source(sandbox.url))
    assert len(records) == 194
    assert ctx.stats.failed_requests == 3
    assert ctx.stats.retries == 3
    assert ctx.stats.requests == 4 + 3


def test_rate_limit_answers_honour_retry_after(sandbox: Sandbox) -> None:
    sandbox.set_faults(Faults(rate_limit_every=2))
    records, ctx = fetch(products_source(sandbox.url))
    assert len({r["id"] for r in records}) == 194
    assert ctx.stats.failed_requests >= 1
    assert ctx.stats.requests == 4 + ctx.stats.retries
    assert sandbox.stats()["by_status"].get("429", 0) == ctx.stats.failed_requests


def test_malformed_bodies_are_retried(sandbox: Sandbox) -> None:
    sandbox.set_faults(Faults(malformed_rate=0.5, seed=7))
    records, ctx = fetch(products_source(sandbox.url, max_attempts=10))
    assert len({r["id"] for r in records}) == 194
    assert ctx.stats.failed_requests == ctx.stats.retries > 0


def test_persistent_failure_gives_up_with_a_clear_error(sandbox: Sandbox) -> None:
    sandbox.set_faults(Faults(error_rate=1.0))
    with pytest.raises(
        FetchError, match=r"gave up after 3 attempts: HTTP 50\d from http://127.0.0.1:\d+/products"
    ):
        fetch(products_source(sandbox.url, max_attempts=3, max_concurrency=1))


def test_client_errors_are_not_retried(sandbox: Sandbox) -> None:
    src = source("rest", base_url=sandbox.url, path="/nope", record_path="products")
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch(src)


def test_weather_fans_out_per_city_and_zips_hourly_columns(sandbox: Sandbox) -> None:
    cities = [
        {"city": "Berlin", "latitude": 52.52, "longitude": 13.41},
        {"city": "Paris", "latitude": 48.85, "longitude": 2.35},
    ]
    src = source(
        "rest",
        dataset="weather",
        base_url=sandbox.url,
        path="/v1/archive",
        params={
            "latitude": "{latitude}",
            "longitude": "{longitude}",
            "start_date": "{date}",
            "end_date": "{date}",
            "hourly": "temperature_2m,precipitation",
            "timezone": "UTC",
        },
        record_path="hourly",
        record_layout="columnar",
        fan_out=cities,
        attach=["city", "latitude", "longitude"],
    )
    records, ctx = fetch(src)
    assert ctx.stats.requests == 2
    assert len(records) == 48
    berlin = [r for r in records if r["city"] == "Berlin"]
    assert [r["time"] for r in berlin][:2] == ["2024-06-01T00:00", "2024-06-01T01:00"]
    assert set(berlin[0]) == {
        "city",
        "latitude",
        "longitude",
        "time",
        "temperature_2m",
        "precipitation",
    }


class _EchoesKeys(BaseHTTPRequestHandler):
    """An API that refuses a key and repeats it in its error body, as some do."""

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        key = parse_qs(urlparse(self.path).query).get("key", [""])[0]
        raw = json.dumps({"error": f"invalid api key {key}"}).encode()
        self.send_response(401)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


def test_error_bodies_that_echo_a_key_stay_out_of_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoesKeys)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("SHOP_KEY", "TOPSECRET123")
    try:
        src = source(
            "rest",
            base_url=f"http://127.0.0.1:{server.server_address[1]}",
            path="/items",
            params={"key": "${SHOP_KEY}"},
            record_path="data",
        )
        with pytest.raises(FetchError) as error:
            fetch(src)
    finally:
        server.shutdown()
    assert "HTTP 401" in str(error.value)
    assert "TOPSECRET123" not in str(error.value)


def test_secret_headers_are_sent_but_never_in_errors(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOP_TOKEN", "tok-123-secret")
    src = source(
        "rest",
        base_url=sandbox.url,
        path="/nope",
        headers={"Authorization": "Bearer ${SHOP_TOKEN}"},
        params={"key": "${SHOP_TOKEN}"},
    )
    with pytest.raises(FetchError) as error:
        fetch(src)
    assert "tok-123-secret" not in str(error.value)


class _PagedAPI(BaseHTTPRequestHandler):
    """A tiny real API with cursor, next-link and page-number pagination over 25 items."""

    items = [{"n": i} for i in range(25)]

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/cursor":
            start = int(query.get("cursor", 0))
            page = self.items[start : start + 10]
            more = start + 10 < len(self.items)
            body = {"data": page, "meta": {"next": str(start + 10) if more else None}}
        elif url.path == "/links":
            start = int(query.get("from", 0))
            page = self.items[start : start + 10]
            more = start + 10 < len(self.items)
            body = {"data": page, "next": f"/links?from={start + 10}" if more else None}
        elif url.path.startswith("/offset"):
            # Caps pages at 10 whatever the limit; /offset/liar announces more than it has.
            start = int(query.get("offset", 0))
            page = self.items[start : start + min(10, int(query["limit"]))]
            body = {"data": page}
            if url.path != "/offset/no-total":
                body["total"] = len(self.items) + (5 if url.path == "/offset/liar" else 0)
        else:
            number = int(query.get("page", 1))
            body = {"data": self.items[(number - 1) * 10 : number * 10], "pages": 3}
        raw = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture(scope="module")
def paged_api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PagedAPI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize(
    ("path", "pagination", "requests"),
    [
        ("/cursor", {"kind": "cursor", "cursor_param": "cursor", "cursor_path": "meta.next"}, 3),
        ("/links", {"kind": "next_link", "next_path": "next"}, 3),
        ("/pages", {"kind": "page_number", "page_param": "page", "total_pages_path": "pages"}, 3),
        # Without a page count, the short third page is the end: no fourth request.
        ("/pages", {"kind": "page_number", "page_param": "page"}, 3),
    ],
)
def test_other_paginations(paged_api: str, path: str, pagination: dict, requests: int) -> None:
    src = source("rest", base_url=paged_api, path=path, record_path="data", pagination=pagination)
    records, ctx = fetch(src)
    assert sorted(r["n"] for r in records) == list(range(25))
    assert ctx.stats.requests == requests


@pytest.mark.parametrize("path", ["/offset", "/offset/no-total"])
def test_limit_offset_survives_a_server_capping_page_size(paged_api: str, path: str) -> None:
    pagination = {"kind": "limit_offset", "page_size": 50}
    src = source("rest", base_url=paged_api, path=path, record_path="data", pagination=pagination)
    records, _ = fetch(src)
    assert sorted(r["n"] for r in records) == list(range(25))


def test_fewer_records_than_announced_is_an_error_not_a_silent_loss(paged_api: str) -> None:
    pagination = {"kind": "limit_offset", "page_size": 10}
    src = source(
        "rest", base_url=paged_api, path="/offset/liar", record_path="data", pagination=pagination
    )
    with pytest.raises(PagingError) as error:
        fetch(src)
    assert error.value.permanent
    assert str(error.value).startswith(
        "source s, day 2024-06-01: the page at offset 20 holds 5 records where the announced "
        "total 30 means 10"
    )


def test_csv_file_with_short_and_long_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGEST_LANDING_DIR", str(tmp_path))
    (tmp_path / "feed").mkdir()
    (tmp_path / "feed" / "2024-06-01.csv").write_text('a,b\n1,"x, y"\n2\n3,z,extra\n')
    records, ctx = fetch(source("csv", path="{landing_dir}/feed/{date}.csv"))
    assert records == [
        {"a": "1", "b": "x, y"},
        {
            "_parse_error": "line 3: fewer fields (1) than the header names (2)",
            "_line": 3,
            "_raw": "2",
        },
        {
            "_parse_error": "line 4: more fields (3) than the header names (2)",
            "_line": 4,
            "_raw": "3,z,extra",
        },
    ]
    assert ctx.stats.requests == 1


def test_missing_file_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGEST_LANDING_DIR", str(tmp_path))
    with pytest.raises(MissingFileError, match="no file for partition 2024-06-01"):
        fetch(source("csv", path="{landing_dir}/feed/{date}.csv"))


def test_jsonl_keeps_broken_lines(tmp_path: Path) -> None:
    path = tmp_path / "2024-06-01.jsonl"
    path.write_text('{"a": 1}\n\n{broken\n[1, 2]\n')
    records, _ = fetch(source("jsonl", path=str(tmp_path / "{date}.jsonl")))
    assert records == [
        {"a": 1},
        {
            "_parse_error": "line 3, column 2: Expecting property name enclosed in double quotes",
            "_line": 3,
            "_raw": "{broken",
        },
        {"_parse_error": "line 4: a JSON list, not an object", "_line": 4, "_raw": "[1, 2]"},
    ]


def test_xml_reads_attributes_and_children(tmp_path: Path) -> None:
    (tmp_path / "2024-06-01.xml").write_text(
        '<catalog><product id="P1"><name>Lamp</name><price>9.5</price></product>'
        '<product id="P2"><name/></product></catalog>'
    )
    records, _ = fetch(source("xml", path=str(tmp_path / "{date}.xml"), record_tag="product"))
    assert records == [{"id": "P1", "name": "Lamp", "price": "9.5"}, {"id": "P2", "name": None}]


def test_xml_namespaces_and_csv_byte_order_marks(tmp_path: Path) -> None:
    (tmp_path / "2024-06-01.xml").write_text(
        '<c:catalog xmlns:c="urn:supplier"><c:product c:id="P1"><c:name>Lamp</c:name></c:product></c:catalog>'
    )
    records, _ = fetch(source("xml", path=str(tmp_path / "{date}.xml"), record_tag="product"))
    assert records == [{"id": "P1", "name": "Lamp"}]
    (tmp_path / "2024-06-01.csv").write_bytes("\ufeffpartner_sku,name\nP1,Lamp\n".encode())
    records, _ = fetch(source("csv", path=str(tmp_path / "{date}.csv")))
    assert records == [{"partner_sku": "P1", "name": "Lamp"}]


@pytest.mark.parametrize(
    "document",
    [
        '<?xml version="1.0"?><!DOCTYPE c [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><c><product id="1"><name>&b;</name></product></c>',
        '<?xml version="1.0"?><!DOCTYPE c [<!ENTITY x SYSTEM "file:///etc/passwd">]><c><product id="1"><name>&x;</name></product></c>',
    ],
)
def test_xml_refuses_entities_and_dtds(tmp_path: Path, document: str) -> None:
    (tmp_path / "2024-06-01.xml").write_text(document)
    src = source("xml", path=str(tmp_path / "{date}.xml"), record_tag="product")
    with pytest.raises(Exception, match="(?i)dtd|entit"):
        fetch(src)


def test_sql_reads_one_partition_from_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "shop.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE orders (id INTEGER, day TEXT, amount REAL)")
        con.executemany(
            "INSERT INTO orders VALUES (?, ?, ?)",
            [(1, "2024-06-01", 9.5), (2, "2024-06-02", 3.0), (3, "2024-06-01", 1.25)],
        )
    src = source(
        "sql",
        url=f"sqlite:///{db}",
        query="SELECT * FROM orders WHERE day = :start ORDER BY id",
        batch_size=1,
    )
    ctx = FetchContext(partition_date=DAY)
    batches = collect(get_connector_class("sql")(src), ctx)
    assert [r["id"] for b in batches for r in b] == [1, 3]
    assert len(batches) == 2 and ctx.stats.requests == 1


@pytest.mark.postgres
def test_sql_reads_a_postgres_table_by_partition_column() -> None:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    import psycopg

    url = "postgresql://postgres@127.0.0.1:5432/postgres"
    with psycopg.connect(url, autocommit=True) as con:
        con.execute("DROP SCHEMA IF EXISTS connector_test CASCADE")
        con.execute("CREATE SCHEMA connector_test")
        con.execute(
            "CREATE TABLE connector_test.orders (id int, placed_at timestamptz, amount numeric(8,2))"
        )
        con.execute(
            "INSERT INTO connector_test.orders VALUES (1, '2024-06-01 10:00+00', 9.50), "
            "(2, '2024-06-02 00:00+00', 3), (3, '2024-06-01 23:59+00', 1.25)"
        )
    try:
        src = source("sql", url=url, table="connector_test.orders", partition_column="placed_at")
        records, _ = fetch(src)
        assert sorted(r["id"] for r in records) == [1, 3]
        # numeric(8,2) as its exact text, never a float
        assert {r["amount"] for r in records} == {"9.50", "1.25"}
    finally:
        with psycopg.connect(url, autocommit=True) as con:
            con.execute("DROP SCHEMA connector_test CASCADE")


def test_sql_errors_do_not_leak_the_url_password(tmp_path: Path) -> None:
    src = source("sql", url="postgresql://app:hunter2-secret@127.0.0.1:1/x", table="t")
    with pytest.raises(FetchError) as error:
        fetch(src)
    assert "hunter2-secret" not in str(error.value)
    assert "source s, day 2024-06-01: query failed (OperationalError" in str(error.value)
    assert not error.value.permanent  # the database may come back


def test_sql_query_mistakes_are_permanent(tmp_path: Path) -> None:
    src = source("sql", url=f"sqlite:///{tmp_path / 'x.db'}", query="SELECT * FROM missing")
    with pytest.raises(FetchError) as error:
        fetch(src)
    assert error.value.permanent
    assert "query failed (OperationalError: no such table: missing)" in str(error.value)


def test_ordered_fan_in_keeps_producer_order_and_applies_backpressure() -> None:
    produced: list[int] = []

    async def producer(start: int):
        for i in range(start, start + 50):
            produced.append(i)
            # The later producer runs ahead: order must come from the merge, not from timing.
            await asyncio.sleep(0 if start else 0.001)
            yield i

    async def consume() -> list[int]:
        seen = []
        async for item in ordered_fan_in(
            [lambda: producer(0), lambda: producer(100)], limit=2, buffered=2
        ):
            # Each producer may hold its buffer plus the item in hand ahead of us.
            assert len(produced) - len(seen) <= 2 * (2 + 1)
            seen.append(item)
        return seen

    assert asyncio.run(consume()) == list(range(50)) + list(range(100, 150))


def test_ordered_fan_in_raises_a_producer_error() -> None:
    async def good():
        for i in range(3):
            yield i

    async def bad():
        yield 1
        raise ValueError("boom")

    async def consume() -> list[int]:
        seen = []
        with pytest.raises(ValueError, match="boom"):
            async for item in ordered_fan_in([good, bad], limit=2):
                seen.append(item)
        return seen

    assert asyncio.run(consume()) == [0, 1, 2, 1]


def test_ordered_gather_yields_in_call_order_with_a_bounded_window() -> None:
    running, most = [0], [0]

    async def call(i: int) -> int:
        running[0] += 1
        most[0] = max(most[0], running[0])
        await asyncio.sleep(0.002 * (10 - i))  # early calls finish last
        running[0] -= 1
        return i

    async def consume() -> list[int]:
        return [r async for r in ordered_gather([lambda i=i: call(i) for i in range(10)], 3)]

    assert asyncio.run(consume()) == list(range(10))
    assert most[0] == 3


def test_circuit_breaker_opens_and_half_opens() -> None:
    now = [0.0]
    breaker = CircuitBreaker(threshold=2, reset_s=10, clock=lambda: now[0])
    breaker.record_failure()
    breaker.before_call()
    breaker.record_failure()
    assert breaker.state == "open"
    with pytest.raises(CircuitOpenError):
        breaker.before_call()
    now[0] = 11
    assert breaker.state == "half_open"
    breaker.before_call()
    breaker.record_failure()
    assert breaker.state == "open"
    now[0] = 22
    breaker.record_success()
    assert breaker.state == "closed"


def test_rate_limiter_spaces_calls_by_its_rate() -> None:
    now = [0.0]
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    async def run() -> None:
        limiter = Throttle(LocalBudget(rate=2, burst=1, clock=lambda: now[0]))
        original = asyncio.sleep
        asyncio.sleep = fake_sleep  # type: ignore[assignment]
        try:
            for _ in range(3):
                await limiter.acquire()
        finally:
            asyncio.sleep = original  # type: ignore[assignment]

    asyncio.run(run())
    assert slept == [0.5, 0.5]


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("3", 3.0),
        ("0.5", 0.5),
        ("-4", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past: retry now
        ("soon", None),
        ("", None),
        ("nan", None),
        ("inf", None),
        ("Mon, 99 Foo 2024", None),
    ],
)
def test_retry_after_parses_seconds_and_dates_and_ignores_anything_else(
    header: str, seconds: float | None
) -> None:
    assert retry_after_seconds(header) == seconds


def test_retry_after_in_the_future_counts_down() -> None:
    future = email.utils.format_datetime(
        dt.datetime.now(dt.UTC) + dt.timedelta(hours=1), usegmt=True
    )
    assert 3000 < retry_after_seconds(future) <= 3600
