"""One rate budget per source, shared by every fetch of it: across processes and runs via Redis.

A source's ``rate_limit_per_s`` is what its API allows in total. A token bucket inside one fetch
lets two fetches of the source (the pool allows two; Celery workers run in parallel) send twice
that. ``rate_limiter`` therefore hands out one budget per source:

- with ``INGEST_RATE_REDIS_URL`` set, the budget lives in Redis and every process and run of
  every machine draws from it: a small Lua script runs GCRA (the generic cell rate algorithm,
  a token bucket kept as one timestamp) atomically on the Redis server's clock;
- without it, every fetch of the source in this process shares one in-process budget.

A take either gets a request through or says how long until the next one may go, and reserves
nothing: a fetch that fails or is killed while it waits leaves no claimed slots behind for the
others to wait out. Within one fetch the requests queue on a lock, so only one of them at a
time asks the budget (a fetch of 2,000 pages does not poll Redis 2,000 times a slot).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable

import redis.asyncio as aioredis

REDIS_URL_ENV = "INGEST_RATE_REDIS_URL"
KEY_PREFIX = "ingest:rate:"
log = logging.getLogger("ingest_assets")

# KEYS[1]: the source's budget; ARGV[1]: microseconds between requests; ARGV[2]: how far ahead
# of the steady rate a burst may run (microseconds). Returns 0 when the request may go (and
# counts it), otherwise the microseconds until one may. The theoretical arrival time (TAT) is
# stored as an integer string: Lua would print a number this large as 1.7e+15, losing digits.
_GCRA = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - tolerance - now
if wait > 0 then return wait end
local new_tat = tat + interval
local ttl_ms = math.ceil((new_tat - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl_ms)
return 0
"""


class LocalBudget:
    """GCRA in this process: thread-safe, so fetches in any thread or event loop share it."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.interval = 1.0 / rate
        self.tolerance = (max(1, burst) - 1) * self.interval
        self.clock = clock
        self._tat = 0.0
        self._lock = threading.Lock()

    def take_now(self) -> float:
        """0.0 if a request may go now (and counts it), else the seconds until one may."""
        with self._lock:
            now = self.clock()
            tat = max(self._tat, now)
            wait = tat - self.tolerance - now
            if wait > 0:
                return wait
            self._tat = tat + self.interval
            return 0.0

    async def take(self) -> float:
        return self.take_now()

    async def aclose(self) -> None:
        return None


class RedisBudget:
    """GCRA in Redis, shared by every process that uses the same Redis and source name."""

    def __init__(self, url: str, key: str, rate: float, burst: int) -> None:
        self.key = KEY_PREFIX + key
        self.interval_us = max(1, round(1_000_000 / rate))
        self.tolerance_us = (max(1, burst) - 1) * self.interval_us
        self._url = url
        self._rate, self._burst = rate, burst
        self._fallback: LocalBudget | None = None
        self._client: aioredis.Redis | None = None
        self._script = None

    async def take(self) -> float:
        if self._fallback is not None:
            return self._fallback.take_now()
        if self._client is None:
            # Created on first use, inside the fetch's event loop (a client is bound to one loop).
            self._client = aioredis.Redis.from_url(self._url)
            self._script = self._client.register_script(_GCRA)
        try:
            wait_us = await self._script(
                keys=[self.key], args=[self.interval_us, self.tolerance_us]
            )
        except aioredis.RedisError as exc:
            # Redis down must not stop ingestion: the API still answers 429 with Retry-After,
            # which the client honours. The URL (it may hold a password) is not logged.
            log.warning(
                "rate budget %s: Redis unavailable (%s); this fetch uses its process's budget",
                self.key,
                type(exc).__name__,
            )
            self._fallback = _local_budget(self.key, self._rate, self._burst)
            return self._fallback.take_now()
        return int(wait_us) / 1_000_000

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class Throttle:
    """What a client holds: its source's budget, asked by one of its requests at a time."""

    def __init__(self, budget: LocalBudget | RedisBudget) -> None:
        self.budget = budget
        self._turn = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._turn:
            while (wait := await self.budget.take()) > 0:
                await asyncio.sleep(wait)

    async def aclose(self) -> None:
        await self.budget.aclose()


_local_budgets: dict[tuple[str, float, int], LocalBudget] = {}
_local_lock = threading.Lock()


def _local_budget(key: str, rate: float, burst: int) -> LocalBudget:
    with _local_lock:
        # Keyed by the settings too: a source whose rate was changed gets the new rate.
        return _local_budgets.setdefault((key, rate, burst), LocalBudget(rate, burst))


def rate_limiter(key: str | None, rate: float, burst: int) -> Throttle:
    """The budget of the source ``key`` (None: a budget of its own, for a client outside any
    source): in Redis when ``INGEST_RATE_REDIS_URL`` is set, in this process otherwise."""
    if key is None:
        return Throttle(LocalBudget(rate, burst))
    url = os.environ.get(REDIS_URL_ENV, "").strip()
    if url:
        return Throttle(RedisBudget(url, key, rate, burst))
    return Throttle(_local_budget(KEY_PREFIX + key, rate, burst))
