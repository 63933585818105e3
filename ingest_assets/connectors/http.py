"""HTTP resilience kept out of connector code: rate limiting, retries with backoff, circuit breaker.

``ResilientClient.get_json`` is the one call REST connectors make. Every attempt is counted in
``FetchStats`` so ``metrics.ingestion`` can show what a source really cost. A body is read as a
stream and counted as it is decompressed: one past ``max_body_bytes`` is dropped at that point,
so a small gzip body that inflates to gigabytes costs the cap in memory, not gigabytes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import hashlib
import json
import logging
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import httpx

from ingest_assets import jsontext
from ingest_assets.config import HttpSettings
from ingest_assets.connectors.base import (
    FetchError,
    FetchStats,
    PermanentFetchError,
    RedactingLog,
    Secrets,
)
from ingest_assets.connectors.checkpoint import PageCheckpoint
from ingest_assets.connectors.ratelimit import rate_limiter

# httpx logs every request URL at INFO, query string included: API keys in a query would reach
# the logs. Our own messages name URLs through ``safe_url`` instead.
logging.getLogger("httpx").setLevel(logging.WARNING)

P = ParamSpec("P")
T = TypeVar("T")
RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}
# Far below a worker's memory, far above any page an API sends.
DEFAULT_MAX_BODY_BYTES = 1024**3


class RetryableError(FetchError):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CircuitOpenError(FetchError):
    """Too many consecutive failures: calls are refused until the breaker cools down."""


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures; lets one trial call through after ``reset_s``."""

    def __init__(self, threshold: int, reset_s: float, clock: Callable[[], float] = time.monotonic):
        self.threshold = threshold
        self.reset_s = reset_s
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half_open" if self.clock() - self.opened_at >= self.reset_s else "open"

    def before_call(self, where: str = "") -> None:
        if self.state == "open":
            raise CircuitOpenError(
                f"circuit open after {self.failures} consecutive failures"
                f"{' on ' + where if where else ''}; "
                f"retrying in {self.reset_s - (self.clock() - (self.opened_at or 0)):.1f}s"
            )

    def record_success(self) -> None:
        self.failures = 0
        self.opened_at = None

    def record_failure(self) -> None:
        self.failures += 1
        if self.failures >= self.threshold or self.state == "half_open":
            self.opened_at = self.clock()


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter (attempt 1 is the first retry)."""
    return rng.uniform(0, min(cap, base * 2 ** (attempt - 1)))


def retry_after_seconds(value: str | None) -> float | None:
    """Parse a Retry-After header: seconds or an HTTP date; None (plain backoff) for anything else."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if parsed.tzinfo is None:
            # RFC 9110 dates are GMT; "-0000" parses as naive.
            parsed = parsed.replace(tzinfo=dt.UTC)
        seconds = parsed.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def with_retries(
    settings: HttpSettings, stats: FetchStats, log: logging.Logger, rng: random.Random | None = None
) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    """Decorator: retry an async call on ``RetryableError`` with backoff, honouring Retry-After."""
    rng = rng or random.Random()

    def decorate(call: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        @wraps(call)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            attempt = 0
            while True:
                try:
                    return await call(*args, **kwargs)
                except RetryableError as exc:
                    attempt += 1
                    if attempt >= settings.max_attempts:
                        raise FetchError(f"gave up after {attempt} attempts: {exc}") from exc
                    delay = backoff_delay(
                        attempt, settings.backoff_base_s, settings.backoff_max_s, rng
                    )
                    if exc.retry_after is not None:
                        delay = max(delay, min(exc.retry_after, settings.retry_after_max_s))
                    stats.retries += 1
                    log.warning(
                        "retry %d/%d in %.2fs: %s", attempt, settings.max_attempts - 1, delay, exc
                    )
                    await asyncio.sleep(delay)

        return wrapper

    return decorate


def safe_url(url: str | httpx.URL) -> str:
    """The URL without query string or credentials, for messages (never raises)."""
    try:
        parsed = httpx.URL(str(url))
        return str(parsed.copy_with(query=None, fragment=None, userinfo=b""))
    except (httpx.InvalidURL, TypeError, ValueError):
        return re.sub(r"//[^/@]*@", "//", str(url).split("?", 1)[0].split("#", 1)[0])


def origin_of(url: str | httpx.URL) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port filled in."""
    parsed = httpx.URL(str(url))
    default = {"http": 80, "https": 443}.get(parsed.scheme)
    return parsed.scheme, parsed.host, parsed.port or default


MAX_REDIRECTS = 10


class BodyTooLarge(PermanentFetchError):
    """A response body past ``max_body_bytes`` once decompressed: the same body comes again."""


def _first_bytes(content: bytes) -> str:
    """What a body that is not JSON starts with, named by kind, never quoted (it may echo a key)."""
    head = content.lstrip()[:64].lower()
    if not head:
        return "an empty body"
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head:
        return "an HTML page"
    if head.startswith(b"<"):
        return "markup (XML or HTML)"
    return "text that is not JSON"


class ResilientClient:
    """An ``httpx.AsyncClient`` behind a rate limiter, a concurrency cap, retries and a breaker.

    ``timeout_s`` is a deadline for a whole attempt (connect, redirects and the full body), not
    httpx's per-read timeout, which a server trickling bytes never trips. Headers named in
    ``secret_headers`` go only to ``origin`` (the configured base URL): redirects are followed
    here, not by httpx, so a redirect to another origin is fetched without them. ``secrets`` are
    redacted from every URL this client names (``shown``) in a message or a log line: a token in
    a URL's path is sent, never shown. A body is read up to ``max_body_bytes`` (decompressed).
    """

    def __init__(
        self,
        settings: HttpSettings,
        stats: FetchStats,
        log: logging.Logger,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        origin: str | None = None,
        secret_headers: Collection[str] = (),
        checkpoint: PageCheckpoint | None = None,
        rate_key: str | None = None,
        secrets: Secrets | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self.settings = settings
        self.stats = stats
        self.secrets = secrets or Secrets()
        self.log: Any = RedactingLog(log, self.secrets) if self.secrets else log
        self.max_body_bytes = max_body_bytes
        self.headers = dict(headers or {})
        self.secret_headers = {name.lower() for name in secret_headers}
        try:
            self.origin = origin_of(origin) if origin else None
        except httpx.InvalidURL:
            # Matches no URL: credentials go nowhere (the request then fails as an invalid URL).
            self.origin = ("", "", None)
        # One budget per source (``rate_key``) across fetches, processes and runs.
        self.limiter = rate_limiter(rate_key, settings.rate_limit_per_s, settings.burst)
        self.checkpoint = checkpoint
        self.breaker = CircuitBreaker(settings.breaker_failure_threshold, settings.breaker_reset_s)
        self.semaphore = asyncio.Semaphore(settings.max_concurrency)
        self.client = httpx.AsyncClient(
            timeout=settings.timeout_s,
            transport=transport,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=settings.max_concurrency),
        )

    async def __aenter__(self) -> ResilientClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()
        await self.limiter.aclose()

    def trusted(self, url: str | httpx.URL) -> bool:
        """Whether ``url`` is on the configured origin (where credentials may go)."""
        try:
            return self.origin is None or origin_of(url) == self.origin
        except httpx.InvalidURL:
            return False

    def shown(self, url: str | httpx.URL) -> str:
        """``url`` fit for a message: no query, no credentials, no secret in its path."""
        return self.secrets(safe_url(url))

    def headers_for(self, url: str | httpx.URL) -> dict[str, str]:
        if self.trusted(url):
            return self.headers
        return {k: v for k, v in self.headers.items() if k.lower() not in self.secret_headers}

    async def get_json(
        self, url: str, params: Mapping[str, Any] | None = None, position: str = ""
    ) -> tuple[Any, httpx.Headers, str]:
        """GET a JSON document, retrying transient failures; returns (body, headers, the
        sha256 of the body's bytes: the archive object its records' ``_source_ref`` names).

        ``position`` (``offset=50``, ``page 3``) names the request among its source's in errors.
        """
        # Resume: a response an earlier try of this (source, day) got is not asked again.
        if self.checkpoint is not None and (stored := self.checkpoint.load(url, params)):
            return stored
        attempt = with_retries(self.settings, self.stats, self.log)(self._attempt)
        body, content, headers = await attempt(url, params, position)
        if self.checkpoint is not None:
            # The bytes as they came: the stored page is read exactly as the live one.
            self.checkpoint.save(url, params, content, headers)
        return body, headers, hashlib.sha256(content).hexdigest()

    async def _send(
        self, url: str, params: Mapping[str, Any] | None, where: str
    ) -> tuple[httpx.Response, bytes]:
        # Merged here, not by httpx: given params, httpx drops a query the URL already has.
        target = httpx.URL(url).copy_merge_params(params) if params else httpx.URL(url)
        for _ in range(MAX_REDIRECTS + 1):
            request = self.client.build_request("GET", target, headers=self.headers_for(target))
            response = await self.client.send(request, stream=True)
            try:
                if not response.is_redirect:
                    return response, await self._read(response, where)
            finally:
                await response.aclose()
            # The Location names the whole target: configured (possibly secret) query parameters
            # are not carried over, and credential headers only if it stays on our origin.
            target = response.url.join(response.headers["Location"])
            if not self.trusted(target):
                self.log.info(
                    "redirected to %s, another origin: credentials not sent", self.shown(target)
                )
        raise PermanentFetchError(f"more than {MAX_REDIRECTS} redirects from {where}")

    async def _read(self, response: httpx.Response, where: str) -> bytes:
        """The body, decompressed, counted as it streams in; past the cap it is dropped at once."""
        cap = self.max_body_bytes
        declared = response.headers.get("Content-Length", "")
        if (
            "Content-Encoding" not in response.headers
            and declared.isdigit()
            and int(declared) > cap
        ):
            raise self._too_large(where, f"announces {int(declared)} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > cap:
                raise self._too_large(where, f"holds more than {cap} bytes decompressed")
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, where: str, what: str) -> BodyTooLarge:
        return BodyTooLarge(
            f"the body from {where} {what}, past max_body_bytes={self.max_body_bytes}; "
            "raise max_body_bytes if the source really sends that much"
        )

    async def _attempt(
        self, url: str, params: Mapping[str, Any] | None, position: str = ""
    ) -> tuple[Any, bytes, httpx.Headers]:
        where = self.shown(url) + (f" ({position})" if position else "")
        self.breaker.before_call(where)
        await self.limiter.acquire()
        async with self.semaphore:
            self.stats.requests += 1
            try:
                async with asyncio.timeout(self.settings.timeout_s):
                    response, content = await self._send(url, params, where)
            except TimeoutError:
                self._failed()
                raise RetryableError(
                    f"no complete answer within timeout_s={self.settings.timeout_s:g}s from {where}"
                ) from None
            except BodyTooLarge:
                self._failed()
                raise
            except httpx.UnsupportedProtocol as exc:
                self._failed()
                raise PermanentFetchError(f"invalid URL {where}: {exc}") from None
            except httpx.InvalidURL:
                self._failed()
                raise PermanentFetchError(f"invalid URL {where}") from None
            except httpx.RemoteProtocolError as exc:
                # Most often a body shorter than its Content-Length: the connection closed early.
                self._failed()
                raise RetryableError(
                    f"incomplete answer from {where}: {self.secrets(str(exc))}"
                ) from None
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                self._failed()
                raise RetryableError(f"{type(exc).__name__} on {where}") from None
        if response.status_code >= 400:
            self._failed()
            failed = f"HTTP {response.status_code} from {self.shown(response.url)}"
            if position:
                failed += f" ({position})"
            if response.status_code in RETRYABLE_STATUS:
                raise RetryableError(
                    failed, retry_after_seconds(response.headers.get("Retry-After"))
                )
            # The body is left out: APIs echo the key or token they refused, and this message
            # reaches Dagster's event log, the UI and the alert webhook.
            error = PermanentFetchError if response.status_code < 500 else FetchError
            raise error(f"{failed} ({len(content)} bytes of body not shown)")
        answered = self.shown(response.url) + (f" ({position})" if position else "")
        try:
            body = jsontext.loads(content)
        except ValueError as exc:
            self._failed()
            at = f" at character {exc.pos}" if isinstance(exc, json.JSONDecodeError) else ""
            kind = response.headers.get("Content-Type", "no Content-Type")
            raise RetryableError(
                f"unparseable JSON body from {answered}: HTTP {response.status_code} with "
                f"{_first_bytes(content)} ({kind}, {len(content)} bytes, not shown){at}"
            ) from None
        except RecursionError:
            # Complete but nested past Python's parser: the same body will come again.
            self._failed()
            raise PermanentFetchError(
                f"JSON body from {answered} is nested too deeply to parse"
            ) from None
        self.breaker.record_success()
        return body, content, response.headers

    def _failed(self) -> None:
        self.stats.failed_requests += 1
        self.breaker.record_failure()
