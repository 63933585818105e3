"""Tests of the loopback sandbox API (over real HTTP) and of the packaged sample landing files."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import ingest_assets
from ingest_assets.sandbox import Faults, Sandbox

pytestmark = pytest.mark.timeout(120)

REPO_ROOT = Path(__file__).resolve().parents[1]
LANDING = Path(ingest_assets.__file__).resolve().parent / "sample_landing"
DEMO_DAYS = ("2024-06-01", "2024-06-02")
HOURLY = "temperature_2m,relative_humidity_2m,precipitation,wind_speed_10m"
BERLIN = {"latitude": 52.52, "longitude": 13.41}
SYDNEY = {"latitude": -33.87, "longitude": 151.21}


@pytest.fixture
def fresh_sandbox() -> Iterator[Sandbox]:
    """A fresh sandbox (no faults, no counts) on a free loopback port, for this test only."""
    with Sandbox(port=0) as sb:
        yield sb


@pytest.fixture
def client(fresh_sandbox: Sandbox) -> Iterator[httpx.Client]:
    """An HTTP client pointed at the fresh sandbox."""
    with httpx.Client(base_url=fresh_sandbox.url, timeout=10.0) as c:
        yield c


def weather_params(
    where: dict[str, float], start: str = "2024-06-01", end: str | None = None, hourly: str = HOURLY
) -> dict[str, Any]:
    """Query parameters of an Open-Meteo archive request."""
    return {
        **where,
        "start_date": start,
        "end_date": end or start,
        "hourly": hourly,
        "timezone": "UTC",
    }


# -- lifecycle ---------------------------------------------------------------------------------


def test_url_and_lifecycle() -> None:
    sb = Sandbox(port=0)
    sb.start()
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", sb.url)
        assert sb.port > 0 and sb.running
        assert httpx.get(f"{sb.url}/products", params={"limit": 1}, timeout=5).status_code == 200
    finally:
        sb.stop()
    assert not sb.running
    sb.stop()  # idempotent


# -- products ----------------------------------------------------------------------------------


def test_products_default_page(client: httpx.Client) -> None:
    body = client.get("/products").json()
    assert set(body) == {"products", "total", "skip", "limit"}
    assert body["total"] == 194
    assert body["skip"] == 0 and body["limit"] == 30
    assert [p["id"] for p in body["products"]] == list(range(1, 31))
    first = body["products"][0]
    for key in ("title", "category", "price", "discountPercentage", "rating", "stock", "sku"):
        assert key in first


def test_products_pagination_walks_the_catalogue(client: httpx.Client) -> None:
    ids: list[int] = []
    skip, pages = 0, []
    while True:
        body = client.get("/products", params={"limit": 50, "skip": skip}).json()
        pages.append(body["limit"])
        ids.extend(p["id"] for p in body["products"])
        skip += body["limit"]
        if skip >= body["total"] or not body["products"]:
            break
    assert ids == list(range(1, 195))
    assert pages == [50, 50, 50, 44]


def test_products_limit_zero_cap_and_skip_past_end(client: httpx.Client) -> None:
    everything = client.get("/products", params={"limit": 0}).json()
    assert len(everything["products"]) == everything["total"] == everything["limit"] == 194
    capped = client.get("/products", params={"limit": 1000}).json()
    assert capped["limit"] == 194 and len(capped["products"]) == 194
    tail = client.get("/products", params={"limit": 10, "skip": 190}).json()
    assert [p["id"] for p in tail["products"]] == [191, 192, 193, 194]
    assert tail["limit"] == 4 and tail["skip"] == 190
    past = client.get("/products", params={"skip": 500}).json()
    assert past == {"products": [], "total": 194, "skip": 500, "limit": 0}


def test_products_select(client: httpx.Client) -> None:
    body = client.get("/products", params={"limit": 3, "select": "title,price"}).json()
    assert [list(p) for p in body["products"]] == [["id", "title", "price"]] * 3
    one = client.get("/products/5", params={"select": "brand, nosuchfield"}).json()
    assert set(one) <= {"id", "brand"} and one["id"] == 5


def test_product_by_id_and_not_found(client: httpx.Client) -> None:
    product = client.get("/products/1").json()
    assert product["id"] == 1 and product["title"] == "Essence Mascara Lash Princess"
    missing = client.get("/products/9999")
    assert missing.status_code == 404 and "not found" in missing.json()["message"]
    unknown = client.get("/no/such/path")
    assert unknown.status_code == 404 and unknown.json()["error"] is True


@pytest.mark.parametrize(
    "params",
    [{"limit": "abc"}, {"limit": "1.5"}, {"skip": "-1"}, {"skip": "x"}, {"limit": "-5"}],
)
def test_products_bad_parameters(client: httpx.Client, params: dict[str, str]) -> None:
    response = client.get("/products", params=params)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] is True and body["reason"]


# -- weather -----------------------------------------------------------------------------------


def test_weather_shape(client: httpx.Client) -> None:
    response = client.get("/v1/archive", params=weather_params(BERLIN))
    assert response.status_code == 200
    body = response.json()
    for key in (
        "latitude",
        "longitude",
        "generationtime_ms",
        "utc_offset_seconds",
        "timezone",
        "timezone_abbreviation",
        "elevation",
        "hourly_units",
        "hourly",
    ):
        assert key in body
    assert body["utc_offset_seconds"] == 0
    assert body["timezone"] == body["timezone_abbreviation"] == "GMT"
    assert body["latitude"] == pytest.approx(52.52) and body["longitude"] == pytest.approx(13.41)
    assert body["hourly_units"] == {
        "time": "iso8601",
        "temperature_2m": "°C",
        "relative_humidity_2m": "%",
        "precipitation": "mm",
        "wind_speed_10m": "km/h",
    }
    hourly = body["hourly"]
    assert list(hourly) == ["time", *HOURLY.split(",")]
    assert hourly["time"] == [f"2024-06-01T{h:02d}:00" for h in range(24)]
    assert all(len(values) == 24 for values in hourly.values())


def test_weather_only_requested_variables(client: httpx.Client) -> None:
    body = client.get(
        "/v1/archive", params=weather_params(BERLIN, hourly="precipitation,temperature_2m")
    ).json()
    assert list(body["hourly"]) == ["time", "precipitation", "temperature_2m"]
    assert set(body["hourly_units"]) == {"time", "precipitation", "temperature_2m"}


def test_weather_deterministic_and_location_dependent(client: httpx.Client) -> None:
    first = client.get("/v1/archive", params=weather_params(BERLIN))
    second = client.get("/v1/archive", params=weather_params(BERLIN))
    assert first.content == second.content
    sydney = client.get("/v1/archive", params=weather_params(SYDNEY)).json()["hourly"]
    berlin = first.json()["hourly"]
    assert sydney["temperature_2m"] != berlin["temperature_2m"]
    # June is winter in Sydney and summer in Berlin.
    assert sum(sydney["temperature_2m"]) / 24 < sum(berlin["temperature_2m"]) / 24
    # A one-day request answers the same values as that day inside a longer range.
    two_days = client.get("/v1/archive", params=weather_params(BERLIN, end="2024-06-02")).json()
    assert two_days["hourly"]["temperature_2m"][:24] == berlin["temperature_2m"]
    assert len(two_days["hourly"]["time"]) == 48
    assert two_days["hourly"]["time"][24] == "2024-06-02T00:00"


def test_weather_values_in_realistic_ranges(client: httpx.Client) -> None:
    hourly = client.get(
        "/v1/archive", params=weather_params(BERLIN, start="2024-01-01", end="2024-12-31")
    ).json()["hourly"]
    assert len(hourly["time"]) == 366 * 24

    def one_decimal(x: float) -> bool:
        return round(x, 1) == x

    assert all(-90 <= t <= 60 and one_decimal(t) for t in hourly["temperature_2m"])
    assert all(isinstance(h, int) and 30 <= h <= 100 for h in hourly["relative_humidity_2m"])
    assert all(p >= 0 and one_decimal(p) for p in hourly["precipitation"])
    assert all(0 <= w <= 60 and one_decimal(w) for w in hourly["wind_speed_10m"])
    rainy = sum(p > 0 for p in hourly["precipitation"])
    assert 0 < rainy < len(hourly["precipitation"]) * 0.3  # mostly dry, occasional showers
    temps = hourly["temperature_2m"]
    january, july = temps[: 31 * 24], temps[182 * 24 : 213 * 24]
    assert sum(january) / len(january) + 8 < sum(july) / len(july)  # seasonal cycle


@pytest.mark.parametrize(
    "params",
    [
        {"longitude": 13.41, "start_date": "2024-06-01", "end_date": "2024-06-01"},
        {
            "latitude": "north",
            "longitude": 13.41,
            "start_date": "2024-06-01",
            "end_date": "2024-06-01",
        },
        {"latitude": 100, "longitude": 13.41, "start_date": "2024-06-01", "end_date": "2024-06-01"},
        {"latitude": 52.5, "longitude": 200, "start_date": "2024-06-01", "end_date": "2024-06-01"},
        {"latitude": 52.5, "longitude": 13.41, "end_date": "2024-06-01"},
        {
            "latitude": 52.5,
            "longitude": 13.41,
            "start_date": "2024-13-01",
            "end_date": "2024-06-01",
        },
        {
            "latitude": 52.5,
            "longitude": 13.41,
            "start_date": "01.06.2024",
            "end_date": "2024-06-01",
        },
        {
            "latitude": 52.5,
            "longitude": 13.41,
            "start_date": "2024-06-02",
            "end_date": "2024-06-01",
        },
        {**weather_params(BERLIN, hourly="temperature_2m,snow_depth_furlongs")},
    ],
)
def test_weather_bad_parameters(client: httpx.Client, params: dict[str, Any]) -> None:
    response = client.get("/v1/archive", params=params)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] is True and isinstance(body["reason"], str) and body["reason"]


# -- faults ------------------------------------------------------------------------------------


def test_fail_first_then_success_per_path(fresh_sandbox: Sandbox, client: httpx.Client) -> None:
    fresh_sandbox.set_faults(Faults(fail_first=2))
    statuses = [client.get("/products", params={"limit": 1}).status_code for _ in range(4)]
    assert statuses == [503, 503, 200, 200]
    weather = [
        client.get("/v1/archive", params=weather_params(BERLIN)).status_code for _ in range(3)
    ]
    assert weather == [503, 503, 200]


def test_rate_limit_every_nth(fresh_sandbox: Sandbox, client: httpx.Client) -> None:
    fresh_sandbox.set_faults(Faults(rate_limit_every=3))
    responses = [client.get("/products", params={"limit": 1}) for _ in range(6)]
    assert [r.status_code for r in responses] == [200, 200, 429, 200, 200, 429]
    for limited in (responses[2], responses[5]):
        assert limited.headers["Retry-After"] == "1"
        assert limited.json()["error"] is True


def test_rate_limit_token_bucket(fresh_sandbox: Sandbox, client: httpx.Client) -> None:
    fresh_sandbox.set_faults(Faults(rate_limit_per_s=2.0))
    responses = [client.get("/products", params={"limit": 1}) for _ in range(6)]
    statuses = [r.status_code for r in responses]
    assert statuses[:2] == [200, 200]
    assert 429 in statuses
    for r in responses:
        if r.status_code == 429:
            assert re.fullmatch(r"[1-9]\d*", r.headers["Retry-After"])
    time.sleep(1.1)
    assert client.get("/products", params={"limit": 1}).status_code == 200


def test_malformed_body_is_not_json(fresh_sandbox: Sandbox, client: httpx.Client) -> None:
    fresh_sandbox.set_faults(Faults(malformed_rate=1.0))
    for path, params in (("/products", {"limit": 5}), ("/v1/archive", weather_params(BERLIN))):
        response = client.get(path, params=params)
        assert response.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            json.loads(response.content)


def test_error_rate_is_reproducible_with_a_seed(
    fresh_sandbox: Sandbox, client: httpx.Client
) -> None:
    def run(seed: int) -> list[int]:
        fresh_sandbox.set_faults(Faults(error_rate=0.4, seed=seed))
        return [client.get("/products", params={"limit": 1}).status_code for _ in range(30)]

    first, second, other = run(7), run(7), run(8)
    assert first == second
    assert first != other
    assert set(first) <= {200, 500, 503}
    assert 200 in first and ({500, 503} & set(first))


def test_latency(fresh_sandbox: Sandbox, client: httpx.Client) -> None:
    fresh_sandbox.set_faults(Faults(latency_s=0.2))
    started = time.monotonic()
    assert client.get("/products", params={"limit": 1}).status_code == 200
    assert time.monotonic() - started >= 0.2


def test_faults_validation() -> None:
    with pytest.raises(ValueError):
        Faults(error_rate=1.5)
    with pytest.raises(ValueError):
        Faults(fail_first=-1)
    with pytest.raises(ValueError):
        Faults.from_mapping({"nope": 1})
    assert Faults.from_mapping({"fail_first": 2.0, "error_rate": 1}) == Faults(
        fail_first=2, error_rate=1.0
    )


# -- control endpoints ---------------------------------------------------------------------------


def test_faults_endpoint(fresh_sandbox: Sandbox, client: httpx.Client) -> None:
    assert client.get("/_faults").json() == Faults().to_dict()
    response = client.post("/_faults", json={"fail_first": 1, "seed": 3})
    assert response.status_code == 200
    assert response.json()["fail_first"] == 1
    assert fresh_sandbox.faults == Faults(fail_first=1, seed=3)
    assert client.get("/_faults").json()["fail_first"] == 1
    # Control endpoints are never faulted.
    assert client.get("/_stats").status_code == 200
    assert client.get("/products").status_code == 503
    assert client.get("/products").status_code == 200
    for bad in ({"fail_first": "two"}, {"error_rate": 2}, {"unknown": 1}):
        rejected = client.post("/_faults", json=bad)
        assert rejected.status_code == 400 and rejected.json()["error"] is True
    assert client.post("/_faults", content=b"{not json").status_code == 400
    assert fresh_sandbox.faults == Faults(fail_first=1, seed=3)
    # An empty object clears every fault.
    assert client.post("/_faults", json={}).json() == Faults().to_dict()


def test_stats_endpoint_and_reset(fresh_sandbox: Sandbox, client: httpx.Client) -> None:
    fresh_sandbox.set_faults(Faults(fail_first=1))
    for _ in range(2):  # fail_first counts per path: each path's first request gets 503
        client.get("/products")
        client.get("/v1/archive", params={"latitude": "x"})
        client.get("/missing")
    stats = client.get("/_stats").json()
    assert stats == fresh_sandbox.stats()
    assert stats["requests"] == 6
    assert stats["by_path"] == {"/missing": 2, "/products": 2, "/v1/archive": 2}
    assert stats["by_status"] == {"200": 1, "400": 1, "404": 1, "503": 3}
    assert stats["by_path_status"] == {
        "/missing": {"404": 1, "503": 1},
        "/products": {"200": 1, "503": 1},
        "/v1/archive": {"400": 1, "503": 1},
    }
    assert client.post("/_stats/reset").json()["requests"] == 0
    client.get("/products")
    assert fresh_sandbox.stats()["by_status"] == {"200": 1}
    fresh_sandbox.reset_stats()
    assert fresh_sandbox.stats() == {
        "requests": 0,
        "by_path": {},
        "by_status": {},
        "by_path_status": {},
    }


def test_concurrent_requests(fresh_sandbox: Sandbox) -> None:
    results: list[int] = []
    lock = threading.Lock()

    def fetch(lat: float) -> None:
        params = weather_params({"latitude": lat, "longitude": 10.0})
        status = httpx.get(f"{fresh_sandbox.url}/v1/archive", params=params, timeout=10).status_code
        with lock:
            results.append(status)

    threads = [threading.Thread(target=fetch, args=(40.0 + i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert results == [200] * 8
    assert fresh_sandbox.stats()["by_path"] == {"/v1/archive": 8}


# -- command line ------------------------------------------------------------------------------


def test_cli_prints_listening_line_and_serves() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ingest_assets.sandbox", "--port", "0", "--fail-first", "1"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout=30)
        assert lines, "the sandbox did not print its listening line within 30 s"
        match = re.fullmatch(r"sandbox listening on (http://127\.0\.0\.1:(\d+))\n", lines[0])
        assert match, lines[0]
        url = match.group(1)
        assert int(match.group(2)) > 0
        with httpx.Client(base_url=url, timeout=10) as c:
            assert c.get("/products", params={"limit": 2}).status_code == 503
            body = c.get("/products", params={"limit": 2}).json()
            assert body["limit"] == 2 and body["total"] == 194
            assert c.get("/_stats").json()["by_status"] == {"200": 1, "503": 1}
    finally:
        proc.terminate()
        try:
            _, stderr = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=5)
            raise
    assert proc.returncode == 0
    assert stderr == ""  # quiet: no per-request logging


# -- sample landing files ----------------------------------------------------------------------


PARTNER_HEADER = [
    "partner_sku",
    "name",
    "category",
    "brand",
    "list_price",
    "discount",
    "rating",
    "stock",
]
XML_FIELDS = {"name", "category", "brand", "price", "discount", "rating", "stock"}


@pytest.mark.parametrize("day", DEMO_DAYS)
def test_sample_partner_csv(day: str) -> None:
    path = LANDING / "partner_feed" / f"{day}.csv"
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = list(reader)
    assert header == PARTNER_HEADER
    assert 35 <= len(rows) <= 45
    assert all(len(row) == len(PARTNER_HEADER) for row in rows)
    skus = [row[0].strip() for row in rows]
    assert all(re.fullmatch(r"PRT-\d{4}", sku) for sku in skus)
    assert len(skus) - len(set(skus)) == 1  # exactly one repeated partner_sku
    by_col = {name: [row[i] for row in rows] for i, name in enumerate(PARTNER_HEADER)}
    assert any(not v.strip() for v in by_col["name"])  # a blank name
    assert any(not v.strip() for v in by_col["category"])  # a missing category
    assert "150" in by_col["discount"]
    assert "7.2" in by_col["rating"]
    assert {"5.5", "abc"} <= {v.strip() for v in by_col["stock"]}
    assert any(float(v) <= 0 for v in by_col["list_price"])
    assert any("," in v for v in by_col["name"])  # a quoted comma survived parsing
    assert any(not v.strip() for v in by_col["brand"])  # an empty brand


@pytest.mark.parametrize("day", DEMO_DAYS)
def test_sample_supplier_xml(day: str) -> None:
    root = ET.parse(LANDING / "supplier_catalog" / f"{day}.xml").getroot()
    assert root.tag == "catalog"
    products = list(root)
    assert 25 <= len(products) <= 35
    assert all(p.tag == "product" for p in products)
    ids = [p.get("id") for p in products]
    assert all(i and re.fullmatch(r"SUP-\d{3}", i) for i in ids)
    assert len(ids) - len(set(ids)) == 1  # exactly one duplicate id
    assert all({child.tag for child in p} <= XML_FIELDS for p in products)
    assert all(p.find("name") is not None for p in products)
    assert any(p.find("price") is None for p in products)  # a missing <price>
    assert "n/a" in [(p.findtext("price") or "").strip() for p in products]
    assert "-1" in [(p.findtext("rating") or "").strip() for p in products]
    assert any(not (p.findtext("category") or "").strip() for p in products)


def test_sample_landing_readme_names_the_invalid_rows() -> None:
    text = (LANDING / "README.md").read_text(encoding="utf-8")
    for key in ("PRT-0007", "PRT-0003", "PRT-0010", "SUP-003", "SUP-010", "SUP-007"):
        assert key in text
