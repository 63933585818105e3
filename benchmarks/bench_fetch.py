"""Fetch throughput: the REST connector (concurrent pages, fan-out) against a sequential loop.

    python benchmarks/bench_fetch.py [--latency 0.03] [--page-size 10] [--repeat 3]

Both talk to the project's sandbox on loopback with the same per-request latency, so the ratio
is what concurrency buys on a high-latency API. The baseline is what a cron script does: one
``httpx.Client`` request after another until a short page.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from ingest_assets.config import SourceConfig  # noqa: E402
from ingest_assets.connectors import FetchContext, collect, get_connector_class  # noqa: E402
from ingest_assets.sandbox import Faults, Sandbox  # noqa: E402

CITIES = [
    {"city": "Berlin", "latitude": 52.52, "longitude": 13.41},
    {"city": "London", "latitude": 51.51, "longitude": -0.13},
    {"city": "Paris", "latitude": 48.85, "longitude": 2.35},
    {"city": "Madrid", "latitude": 40.42, "longitude": -3.70},
    {"city": "New York", "latitude": 40.71, "longitude": -74.01},
    {"city": "Tokyo", "latitude": 35.68, "longitude": 139.69},
    {"city": "Sydney", "latitude": -33.87, "longitude": 151.21},
    {"city": "Lima", "latitude": -12.05, "longitude": -77.04},
]
HTTP = {"rate_limit_per_s": 1000, "burst": 100, "max_concurrency": 8}


def sequential_products(url: str, page_size: int) -> int:
    records, skip = 0, 0
    with httpx.Client(timeout=30) as client:
        while True:
            body = client.get(f"{url}/products", params={"limit": page_size, "skip": skip}).json()
            records += len(body["products"])
            skip += page_size
            if skip >= body["total"]:
                return records


def sequential_weather(url: str) -> int:
    records = 0
    with httpx.Client(timeout=30) as client:
        for city in CITIES:
            params = {
                "latitude": city["latitude"],
                "longitude": city["longitude"],
                "start_date": "2024-06-01",
                "end_date": "2024-06-01",
                "hourly": "temperature_2m",
                "timezone": "UTC",
            }
            records += len(client.get(f"{url}/v1/archive", params=params).json()["hourly"]["time"])
    return records


def connector_records(source: dict) -> int:
    config = SourceConfig.model_validate({"name": "bench", "http": HTTP, **source})
    batches = collect(
        get_connector_class(config.connector)(config),
        FetchContext(partition_date=dt.date(2024, 6, 1)),
    )
    return sum(len(b) for b in batches)


def best_of(repeat: int, run) -> tuple[float, int]:
    times, count = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        count = run()
        times.append(time.perf_counter() - started)
    return min(times), count


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--latency", type=float, default=0.03, help="seconds the sandbox waits per request"
    )
    parser.add_argument("--page-size", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    with Sandbox(port=0, faults=Faults(latency_s=args.latency)) as sandbox:
        products = {
            "connector": "rest", "dataset": "products", "base_url": sandbox.url, "path": "/products",
            "record_path": "products",
            "pagination": {"kind": "limit_offset", "limit_param": "limit", "offset_param": "skip", "page_size": args.page_size},
        }  # fmt: skip
        weather = {
            "connector": "rest", "dataset": "weather", "base_url": sandbox.url, "path": "/v1/archive",
            "params": {"latitude": "{latitude}", "longitude": "{longitude}", "start_date": "{date}", "end_date": "{date}", "hourly": "temperature_2m", "timezone": "UTC"},
            "record_path": "hourly", "record_layout": "columnar", "fan_out": CITIES, "attach": ["city"],
        }  # fmt: skip
        base_p, n_base_p = best_of(
            args.repeat, lambda: sequential_products(sandbox.url, args.page_size)
        )
        ours_p, n_ours_p = best_of(args.repeat, lambda: connector_records(products))
        base_w, n_base_w = best_of(args.repeat, lambda: sequential_weather(sandbox.url))
        ours_w, n_ours_w = best_of(args.repeat, lambda: connector_records(weather))
    assert n_base_p == n_ours_p and n_base_w == n_ours_w, "both sides must fetch the same records"

    pages = -(-n_ours_p // args.page_size)
    print(f"fetch, {args.latency * 1000:.0f} ms per request, best of {args.repeat}:")
    print(
        f"  products, {pages} pages:   sequential {base_p:6.2f}s   connector {ours_p:6.2f}s   speed-up {base_p / ours_p:5.2f}x"
    )
    print(
        f"  weather, {len(CITIES)} cities:   sequential {base_w:6.2f}s   connector {ours_w:6.2f}s   speed-up {base_w / ours_w:5.2f}x"
    )
    return {
        "products_speedup": base_p / ours_p,
        "weather_speedup": base_w / ours_w,
        "median": statistics.median([base_p / ours_p, base_w / ours_w]),
    }


if __name__ == "__main__":
    main()
