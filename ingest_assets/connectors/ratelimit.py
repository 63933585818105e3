"""One rate budget per source, shared by every fetch of it: across processes and runs via Redis.

A source's ``rate_limit_per_s`` is what its API allows in total. A token bucket inside one fetch
lets two fetches of the source (the pool allows two; Celery workers run in parallel) send twice
that. ``rate_limiter`` therefore hands out one budget per source:

- with ``INGEST_RATE_REDIS_URL`` set, the budget lives in Redis and every process and run of
  every machine draws from it: a small Lua script runs GCRA (the generic cell rate algorithm,
  a token bucket kept as one timestamp) atomically on the Redis server's clock;
- without it, every fetch of the source in this process shares one in-process budget.

Both reserve a slot per request: a caller learns when its slot comes and sleeps until then, so
waiting callers are served in order and the rate holds however many of them there are.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Protocol

import redis.asyncio as aioredis

REDIS_URL_ENV = "INGEST_RATE_REDIS_URL"
KEY_PREFIX = "ingest:rate:"
log = logging.getLogger("ingest_assets")

# KEYS[1]: the source's budget; ARGV[1]: microseconds between requests; ARGV[2]: how far ahead
# of the steady rate a burst may run (microseconds). Returns the microseconds to wait before the
# reserved request may go. The theoretical arrival time (TAT) is stored as an integer string:
# Lua would print a number this large as 1.7e+15 and lose the microseconds.
_GCRA = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - tolerance - now
if wait < 0 then wait = 0 end
local new_tat = tat + interval
local ttl_ms = math.ceil((new_tat - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl_ms)
return wait
"""


class Limiter(Protocol):
    async def acquire(self) -> None: ...

    async def aclose(self) -> None: ...


class LocalBudget:
    """GCRA in this process; thread-safe, and usable from any event loop (each fetch runs its
    own), because a slot is reserved under a thread lock and awaited outside it."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.interval = 1.0 / rate
        self.tolerance = (max(1, burst) - 1) * self.interval
        self.clock = clock
        self._tat = 0.0
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Reserve the next slot; returns the seconds to wait for it."""
        with self._lock:
            now = self.clock()
            tat = max(self._tat, now)
            self._tat = tat + self.interval
            return max(0.0, tat - self.tolerance - now)

    async def acquire(self) -> None:
        wait = self.reserve()
        if wait > 0:
            await asyncio.sleep(wait)

    async def aclose(self) -> None:
        return None


class RedisBudget:
    """GCRA in Redis, shared by every process that uses the same URL and source name."""

    def __init__(self, url: str, key: str, rate: float, burst: int) -> None:
        self.key = KEY_PREFIX + key
        self.interval_us = max(1, round(1_000_000 / rate))
        self.tolerance_us = (max(1, burst) - 1) * self.interval_us
        self._url = url
        self._burst = burst
        self._fallback: LocalBudget | None = None
        self._client: aioredis.Redis | None = None
        self._script = None

    async def acquire(self) -> None:
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
            if self._fallback is None:
                log.warning(
                    "rate budget %s: Redis unavailable (%s); using this process's budget",
                    self.key,
                    type(exc).__name__,
                )
                self._fallback = LocalBudget(1_000_000 / self.interval_us, self._burst)
            await self._fallback.acquire()
            return
        if wait_us > 0:
            await asyncio.sleep(int(wait_us) / 1_000_000)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


_local_budgets: dict[tuple[str, float, int], LocalBudget] = {}
_local_lock = threading.Lock()


def rate_limiter(key: str | None, rate: float, burst: int) -> Limiter:
    """The budget of the source ``key`` (None: a budget of its own, for a client outside any
    source). Redis when ``INGEST_RATE_REDIS_URL`` is set, this process's otherwise."""
    url = os.environ.get(REDIS_URL_ENV, "").strip()
    if key is None:
        return LocalBudget(rate, burst)
    if url:
        return RedisBudget(url, key, rate, burst)
    with _local_lock:
        # Keyed by the settings too: a source whose rate was changed gets the new rate.
        return _local_budgets.setdefault((key, rate, burst), LocalBudget(rate, burst))
