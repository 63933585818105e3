"""One rate budget per source: two fetches at once, in two processes or in one, stay within it.

The sandbox notes when each request arrives; the assertion counts requests in every window of
one second on the server's side. A budget of 20 requests a second, one at a time (burst 1),
allows at most 21 in any second; a little more is allowed for requests that leave on time and
arrive late. Two fetches with a budget each send about 40.
"""

import asyncio
import datetime as dt
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from ingest_assets.config import SourceConfig
from ingest_assets.connectors import FetchContext, collect, get_connector_class
from ingest_assets.connectors.ratelimit import REDIS_URL_ENV, LocalBudget, RedisBudget
from ingest_assets.sandbox import Sandbox
from ingest_assets_tests.conftest import require_service

DAY = dt.date(2024, 6, 1)
RATE = 20
LIMIT_PER_SECOND = RATE + 4  # 20 per second, the first one free, 3 for arrival jitter
REQUESTS_PER_FETCH = 39  # 194 products, 5 a page
REDIS_URL = "redis://127.0.0.1:6379/12"


def throttled(url: str, name: str) -> SourceConfig:
    return SourceConfig.model_validate(
        {
            "name": name,
            "connector": "rest",
            "dataset": "products",
            "base_url": url,
            "path": "/products",
            "record_path": "products",
            "pagination": {"kind": "limit_offset", "offset_param": "skip", "page_size": 5},
            "http": {"rate_limit_per_s": RATE, "burst": 1, "max_concurrency": 4},
        }
    )


@pytest.fixture
def arrivals(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """The arrival time of every /products request the sandbox answers."""
    seen: list[float] = []
    record = sandbox._stats.record

    def timed(path: str, status: int) -> None:
        if path == "/products":
            seen.append(time.monotonic())
        record(path, status)

    monkeypatch.setattr(sandbox._stats, "record", timed)
    yield seen


def busiest_second(times: list[float]) -> int:
    """The most requests that arrived within any one second."""
    times = sorted(times)
    most, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


def run_workers(src: SourceConfig, count: int, env: dict[str, str]) -> None:
    """``count`` fetch processes of one source, released together; each must succeed."""
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ingest_assets_tests.fetch_worker",
                src.model_dump_json(),
                "2024-06-01",
                "--wait",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(count)
    ]
    try:
        for worker in workers:
            assert worker.stdout.readline().strip() == "ready"
        for worker in workers:
            worker.stdin.write("go\n")
            worker.stdin.flush()
        for worker in workers:
            out, _ = worker.communicate(timeout=120)
            assert worker.returncode == 0 and out.rstrip().endswith("done"), out
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


def worker_env(**extra: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != REDIS_URL_ENV}
    return {**env, **extra}


@pytest.mark.redis
@pytest.mark.slow
def test_two_processes_share_one_budget_through_redis(
    sandbox: Sandbox, arrivals: list[float]
) -> None:
    require_service("Redis", "127.0.0.1", 6379)
    src = throttled(sandbox.url, f"rate_{uuid.uuid4().hex[:8]}")
    run_workers(src, 2, worker_env(**{REDIS_URL_ENV: REDIS_URL}))
    assert len(arrivals) == 2 * REQUESTS_PER_FETCH
    assert busiest_second(arrivals) <= LIMIT_PER_SECOND


@pytest.mark.slow
def test_without_redis_each_process_has_its_own_budget(
    sandbox: Sandbox, arrivals: list[float]
) -> None:
    """What the shared budget prevents (and the proof the count above can fail)."""
    src = throttled(sandbox.url, f"rate_{uuid.uuid4().hex[:8]}")
    run_workers(src, 2, worker_env())
    assert len(arrivals) == 2 * REQUESTS_PER_FETCH
    assert busiest_second(arrivals) > LIMIT_PER_SECOND


def test_two_fetches_in_one_process_share_its_budget(
    sandbox: Sandbox, arrivals: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(REDIS_URL_ENV, raising=False)
    src = throttled(sandbox.url, f"rate_{uuid.uuid4().hex[:8]}")
    results: list[int] = []

    def one_fetch() -> None:
        batches = collect(get_connector_class("rest")(src), FetchContext(partition_date=DAY))
        results.append(sum(len(b) for b in batches))

    threads = [threading.Thread(target=one_fetch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [194, 194]
    assert len(arrivals) == 2 * REQUESTS_PER_FETCH
    assert busiest_second(arrivals) <= LIMIT_PER_SECOND


def test_a_budget_lets_requests_through_at_its_rate_and_reserves_nothing() -> None:
    clock = [100.0]
    budget = LocalBudget(rate=10, burst=3, clock=lambda: clock[0])
    # a burst of three goes at once; the fourth is told to wait 0.1 s, however often it asks
    assert [round(budget.take_now(), 3) for _ in range(5)] == [0.0, 0.0, 0.0, 0.1, 0.1]
    clock[0] += 0.1
    assert [round(budget.take_now(), 3) for _ in range(2)] == [0.0, 0.1]
    clock[0] += 10  # idle: the burst is back, no more
    assert [round(budget.take_now(), 3) for _ in range(4)] == [0.0, 0.0, 0.0, 0.1]


def test_an_unreachable_redis_falls_back_to_the_process_budget(
    caplog: pytest.LogCaptureFixture,
) -> None:
    budget = RedisBudget("redis://:sekrit-pw@127.0.0.1:1/0", "src", rate=1000, burst=5)

    async def three() -> list[float]:
        waits = [await budget.take() for _ in range(3)]
        await budget.aclose()
        return waits

    with caplog.at_level(logging.WARNING, logger="ingest_assets"):
        assert asyncio.run(three()) == [0.0, 0.0, 0.0]
    warnings = [r.getMessage() for r in caplog.records if "Redis unavailable" in r.getMessage()]
    assert len(warnings) == 1 and "ingest:rate:src" in warnings[0]
    assert "sekrit-pw" not in caplog.text
