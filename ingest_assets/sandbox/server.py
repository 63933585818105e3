"""A loopback HTTP sandbox imitating the DummyJSON, Open-Meteo archive and GitHub issues APIs.

The sandbox is stdlib-only (no Dagster import) so it can run in tests, in ``make demo`` and as a
separate process (``python -m ingest_assets.sandbox``). It serves:

* ``GET /products?limit=N&skip=K&select=a,b`` and ``GET /products/{id}``: the packaged DummyJSON
  catalogue, answered in DummyJSON's shape (``{"products", "total", "skip", "limit"}``).
* ``GET /v1/archive?latitude=..&longitude=..&start_date=..&end_date=..&hourly=..&timezone=UTC``:
  deterministic, realistic hourly weather in Open-Meteo's archive shape.
* ``GET /repos/{owner}/{repo}/issues?state=all&since=..&until=..&per_page=N&page=P``:
  deterministic issues of a day in GitHub's shape (a JSON array), paged by ``Link`` header
  (see :mod:`ingest_assets.sandbox.issues`).
* Control endpoints, never subject to faults and not counted in the statistics:
  ``GET /_faults`` (current faults), ``POST /_faults`` (JSON body of :class:`Faults` fields,
  replaces the faults and resets the fault counters), ``GET /_stats`` (request counts) and
  ``POST /_stats/reset``.

Faults are applied to every other request, in this order: latency, ``fail_first`` (503 for the
first N requests to each path), ``rate_limit_every`` (every Nth request gets 429,
``Retry-After: 1``), the ``rate_limit_per_s`` token bucket (429 with ``Retry-After`` in whole
seconds), ``error_rate`` (500 or 503) and finally ``malformed_rate`` (a 200 answer whose JSON body
is truncated). A "path" is the URL path without its query string.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import http.server
import json
import math
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ingest_assets.sandbox.generated import GeneratedCatalogue
from ingest_assets.sandbox.issues import InvalidParameter, issues_page, issues_path

__all__ = ["Faults", "Sandbox", "load_products", "weather_archive"]

#: DummyJSON's default page size.
DEFAULT_LIMIT = 30

#: Hourly variables the weather endpoint knows, with their Open-Meteo units.
HOURLY_UNITS: dict[str, str] = {
    "temperature_2m": "°C",
    "relative_humidity_2m": "%",
    "precipitation": "mm",
    "wind_speed_10m": "km/h",
}

#: Open-Meteo's archive starts in 1940; the sandbox also refuses dates beyond 2100.
ARCHIVE_FIRST_DAY = dt.date(1940, 1, 1)
ARCHIVE_LAST_DAY = dt.date(2100, 12, 31)
#: Longest date range one weather request may ask for.
MAX_ARCHIVE_DAYS = 3660

_CONTROL_PATHS = frozenset({"/_faults", "/_stats", "/_stats/reset"})


class BadRequest(ValueError):
    """A request parameter is missing or invalid; answered with HTTP 400."""


@dataclasses.dataclass(frozen=True)
class Faults:
    """Faults the sandbox injects into non-control requests.

    Attributes:
        error_rate: fraction (0..1) of requests answered 500 or 503 (random, seeded).
        fail_first: the first N requests to each path are answered 503 (deterministic).
        rate_limit_per_s: token-bucket rate above which requests get 429 with a
            ``Retry-After`` header in whole seconds; 0 turns it off.
        rate_limit_every: every Nth request gets 429 with ``Retry-After: 1``; 0 turns it off.
        latency_s: seconds to sleep before answering each request.
        malformed_rate: fraction (0..1) of requests answered 200 with a truncated JSON body.
        seed: seed of the random generator behind ``error_rate`` and ``malformed_rate``.
    """

    error_rate: float = 0.0
    fail_first: int = 0
    rate_limit_per_s: float = 0.0
    rate_limit_every: int = 0
    latency_s: float = 0.0
    malformed_rate: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("error_rate", "malformed_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
        for name in ("fail_first", "rate_limit_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("rate_limit_per_s", "latency_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Faults:
        """Build faults from a JSON-like mapping, rejecting unknown fields and wrong types.

        Raises:
            ValueError: on an unknown field, a value of the wrong type or out of range.
        """
        if not isinstance(data, Mapping):
            raise ValueError("faults must be a JSON object")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(unknown)}")
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number, got {value!r}")
            if fields[name].type in (int, "int"):
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError(f"{name} must be an integer, got {value!r}")
                kwargs[name] = int(value)
            else:
                kwargs[name] = float(value)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The faults as a JSON-serialisable dict."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------
# Products (DummyJSON)
# --------------------------------------------------------------------------------------------


def load_products(path: str | Path | None = None) -> list[dict[str, Any]]:
    """Load the product catalogue (the packaged DummyJSON file unless ``path`` is given).

    Accepts either a JSON list of products or DummyJSON's ``{"products": [...]}`` object.
    """
    if path is None:
        text = resources.files(__package__).joinpath("data", "products.json").read_text("utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    data = json.loads(text)
    products = data["products"] if isinstance(data, dict) else data
    if not isinstance(products, list):
        raise ValueError("the product catalogue must be a list of objects")
    return [dict(p) for p in products]


def _int_param(query: Mapping[str, list[str]], name: str, default: int) -> int:
    """A non-negative integer query parameter, or ``default`` if absent."""
    values = query.get(name)
    if not values:
        return default
    raw = values[-1].strip()
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(
            f"Parameter '{name}' must be a non-negative integer, got '{raw}'"
        ) from None
    if value < 0:
        raise BadRequest(f"Parameter '{name}' must be a non-negative integer, got '{raw}'")
    return value


def _select(product: Mapping[str, Any], fields: list[str] | None) -> dict[str, Any]:
    """Keep ``id`` plus the selected fields (DummyJSON's ``select``), or everything."""
    if fields is None:
        return dict(product)
    out: dict[str, Any] = {"id": product.get("id")}
    for name in fields:
        if name in product and name not in out:
            out[name] = product[name]
    return out


def _select_fields(query: Mapping[str, list[str]]) -> list[str] | None:
    values = query.get("select")
    if not values:
        return None
    names = [n.strip() for v in values for n in v.split(",")]
    return [n for n in names if n]


def products_page(
    products: Sequence[dict[str, Any]], query: Mapping[str, list[str]]
) -> dict[str, Any]:
    """Answer ``GET /products`` like dummyjson.com.

    ``limit`` defaults to 30, ``0`` means "all", and it is capped at the catalogue size; as on
    dummyjson.com the ``limit`` in the answer is the number of products actually returned.
    """
    total = len(products)
    limit = _int_param(query, "limit", DEFAULT_LIMIT)
    skip = _int_param(query, "skip", 0)
    fields = _select_fields(query)
    if limit == 0 or limit > total:
        limit = total
    page = [_select(p, fields) for p in products[skip : skip + limit]]
    return {"products": page, "total": total, "skip": skip, "limit": len(page)}


# --------------------------------------------------------------------------------------------
# Weather (Open-Meteo archive)
# --------------------------------------------------------------------------------------------


def _rng(*parts: object) -> random.Random:
    """A generator seeded by a stable hash of ``parts`` (independent of PYTHONHASHSEED)."""
    key = "|".join(repr(p) for p in parts).encode("utf-8")
    return random.Random(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big"))


def _float_param(query: Mapping[str, list[str]], name: str) -> float:
    values = query.get(name)
    if not values or not values[-1].strip():
        raise BadRequest(f"Value of type 'Float' required for key '{name}'.")
    raw = values[-1].strip()
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(
            f"Value of type 'Float' required for key '{name}'. Given: '{raw}'."
        ) from None
    if not math.isfinite(value):
        raise BadRequest(f"Value of type 'Float' required for key '{name}'. Given: '{raw}'.")
    return value


def _date_param(query: Mapping[str, list[str]], name: str) -> dt.date:
    values = query.get(name)
    if not values or not values[-1].strip():
        raise BadRequest(f"Parameter '{name}' is required (format YYYY-MM-DD).")
    raw = values[-1].strip()
    try:
        if len(raw) != 10:
            raise ValueError(raw)
        day = dt.date.fromisoformat(raw)
    except ValueError:
        raise BadRequest(
            f"Invalid date format for '{name}': '{raw}' (expected YYYY-MM-DD)."
        ) from None
    if not ARCHIVE_FIRST_DAY <= day <= ARCHIVE_LAST_DAY:
        raise BadRequest(
            f"Parameter '{name}' is out of allowed range from {ARCHIVE_FIRST_DAY.isoformat()} "
            f"to {ARCHIVE_LAST_DAY.isoformat()}"
        )
    return day


def _daily_weather(latitude: float, longitude: float, day: dt.date) -> dict[str, list[float]]:
    """Deterministic, realistic hourly values for one location and UTC day."""
    lat_key, lon_key = round(latitude, 4), round(longitude, 4)
    day_rng = _rng("day", lat_key, lon_key, day.isoformat())
    abs_lat = min(abs(latitude), 90.0)

    # Annual mean falls with latitude; the seasonal swing grows with it and is mirrored south.
    annual_mean = 28.0 - 0.35 * abs_lat
    amplitude = min(0.17 * abs_lat, 15.0)
    peak_doy = 200 if latitude >= 0 else 17
    doy = day.timetuple().tm_yday
    seasonal = amplitude * math.cos(2 * math.pi * (doy - peak_doy) / 365.25)
    daily_mean = annual_mean + seasonal + day_rng.gauss(0.0, 0.8 + 0.03 * abs_lat)
    diurnal_amp = 3.0 + 2.5 * day_rng.random()
    rainy_day = day_rng.random() < 0.3
    shower_chance = 0.1 + 0.35 * day_rng.random() if rainy_day else 0.0
    base_humidity = 55.0 + 20.0 * day_rng.random() + (10.0 if rainy_day else 0.0)
    base_wind = 4.0 + 18.0 * day_rng.random()

    out: dict[str, list[float]] = {name: [] for name in HOURLY_UNITS}
    for hour in range(24):
        rng = _rng("hour", lat_key, lon_key, day.isoformat(), hour)
        solar_hour = (hour + longitude / 15.0) % 24.0
        # Warmest around 15:00 local solar time, coolest before dawn.
        cycle = math.cos(2 * math.pi * (solar_hour - 15.0) / 24.0)
        temperature = daily_mean + diurnal_amp * cycle + rng.gauss(0.0, 0.3)
        temperature = max(-89.0, min(59.0, temperature))

        raining = rng.random() < shower_chance
        precipitation = round(rng.expovariate(1 / 1.2), 1) if raining else 0.0
        humidity = base_humidity - 12.0 * cycle + rng.gauss(0.0, 3.0) + (15.0 if raining else 0.0)
        wind = base_wind * (1.0 + 0.35 * cycle) + rng.gauss(0.0, 2.0) + (6.0 if raining else 0.0)

        out["temperature_2m"].append(round(temperature, 1))
        out["relative_humidity_2m"].append(int(round(max(30.0, min(100.0, humidity)))))
        out["precipitation"].append(max(0.0, precipitation))
        out["wind_speed_10m"].append(round(max(0.0, min(60.0, wind)), 1))
    return out


def _hourly_variables(query: Mapping[str, list[str]]) -> list[str]:
    names: list[str] = []
    for value in query.get("hourly", []):
        for name in (n.strip() for n in value.split(",")):
            if not name:
                continue
            if name not in HOURLY_UNITS:
                raise BadRequest(
                    f"Cannot initialize WeatherVariable from invalid String value {name} "
                    f"for key hourly"
                )
            if name not in names:
                names.append(name)
    return names


def weather_archive(query: Mapping[str, list[str]]) -> dict[str, Any]:
    """Answer ``GET /v1/archive`` in Open-Meteo's shape, from parsed query parameters.

    Raises:
        BadRequest: on a missing or invalid latitude, longitude, date, variable or timezone.
    """
    latitude = _float_param(query, "latitude")
    longitude = _float_param(query, "longitude")
    if not -90.0 <= latitude <= 90.0:
        raise BadRequest(f"Latitude must be in range of -90 to 90°. Given: {latitude}.")
    if not -180.0 <= longitude <= 180.0:
        raise BadRequest(f"Longitude must be in range of -180 to 180°. Given: {longitude}.")
    start = _date_param(query, "start_date")
    end = _date_param(query, "end_date")
    if end < start:
        raise BadRequest("End-date must be larger or equals than start date")
    if (end - start).days + 1 > MAX_ARCHIVE_DAYS:
        raise BadRequest(f"The sandbox serves at most {MAX_ARCHIVE_DAYS} days per request")
    timezone = (query.get("timezone") or ["GMT"])[-1].strip()
    if timezone.upper() not in ("UTC", "GMT", ""):
        raise BadRequest(f"Invalid timezone '{timezone}': the sandbox serves only UTC/GMT")
    variables = _hourly_variables(query)

    meta = _rng("meta", round(latitude, 4), round(longitude, 4))
    body: dict[str, Any] = {
        "latitude": latitude,
        "longitude": longitude,
        "generationtime_ms": round(0.02 + 0.2 * meta.random(), 6),
        "utc_offset_seconds": 0,
        "timezone": "GMT",
        "timezone_abbreviation": "GMT",
        "elevation": round(5.0 + 600.0 * meta.random() ** 2, 1),
    }
    if not variables:
        return body
    times: list[str] = []
    values: dict[str, list[float]] = {name: [] for name in variables}
    day = start
    while day <= end:
        daily = _daily_weather(latitude, longitude, day)
        times.extend(f"{day.isoformat()}T{hour:02d}:00" for hour in range(24))
        for name in variables:
            values[name].extend(daily[name])
        day += dt.timedelta(days=1)
    body["hourly_units"] = {"time": "iso8601", **{name: HOURLY_UNITS[name] for name in variables}}
    body["hourly"] = {"time": times, **values}
    return body


# --------------------------------------------------------------------------------------------
# Faults and statistics
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Decision:
    """What the fault layer decided for one request."""

    status: int | None = None  # an error status to answer instead of the real response
    retry_after: int | None = None
    malformed: bool = False


class _FaultState:
    """Mutable, thread-safe fault counters, generator and token bucket."""

    def __init__(self, faults: Faults) -> None:
        self._lock = threading.Lock()
        self.faults = faults
        self._reset_locked()

    def _reset_locked(self) -> None:
        self._per_path: Counter[str] = Counter()
        self._count = 0
        self._rng = random.Random(self.faults.seed)
        self._tokens = max(1.0, self.faults.rate_limit_per_s)
        self._refilled_at = time.monotonic()

    def set(self, faults: Faults) -> None:
        """Replace the faults and reset every counter, the generator and the bucket."""
        with self._lock:
            self.faults = faults
            self._reset_locked()

    def decide(self, path: str) -> _Decision:
        """Decide the fault (if any) for one request to ``path``."""
        with self._lock:
            f = self.faults
            self._per_path[path] += 1
            self._count += 1
            # Always draw the same numbers so the random sequence is independent of the
            # deterministic faults.
            r_error, r_kind, r_malformed = (self._rng.random() for _ in range(3))
            if self._per_path[path] <= f.fail_first:
                return _Decision(status=503)
            if f.rate_limit_every and self._count % f.rate_limit_every == 0:
                return _Decision(status=429, retry_after=1)
            if f.rate_limit_per_s > 0:
                now = time.monotonic()
                capacity = max(1.0, f.rate_limit_per_s)
                self._tokens = min(
                    capacity, self._tokens + (now - self._refilled_at) * f.rate_limit_per_s
                )
                self._refilled_at = now
                if self._tokens < 1.0:
                    wait = (1.0 - self._tokens) / f.rate_limit_per_s
                    return _Decision(status=429, retry_after=max(1, math.ceil(wait)))
                self._tokens -= 1.0
            if r_error < f.error_rate:
                return _Decision(status=500 if r_kind < 0.5 else 503)
            return _Decision(malformed=r_malformed < f.malformed_rate)


class _Stats:
    """Thread-safe request counts per path and per status code."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget every count."""
        with self._lock:
            self._by_path: Counter[str] = Counter()
            self._by_status: Counter[str] = Counter()
            self._by_path_status: defaultdict[str, Counter[str]] = defaultdict(Counter)

    def record(self, path: str, status: int) -> None:
        """Count one answered request."""
        with self._lock:
            self._by_path[path] += 1
            self._by_status[str(status)] += 1
            self._by_path_status[path][str(status)] += 1

    def snapshot(self) -> dict[str, Any]:
        """The counts as a JSON-serialisable dict."""
        with self._lock:
            return {
                "requests": sum(self._by_path.values()),
                "by_path": dict(sorted(self._by_path.items())),
                "by_status": dict(sorted(self._by_status.items())),
                "by_path_status": {
                    path: dict(sorted(c.items()))
                    for path, c in sorted(self._by_path_status.items())
                },
            }


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------


class _Server(http.server.ThreadingHTTPServer):
    """The threading server carrying the sandbox's shared state."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the default backlog of 5 stalls bursts of concurrent clients

    def __init__(self, address: tuple[str, int], sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        super().__init__(address, _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    """Routes one request, applying faults to everything but the control endpoints."""

    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "ingest-sandbox/1.0"
    timeout = 30  # idle keep-alive connections are closed after this many seconds
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid 40 ms stalls

    # -- plumbing ---------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        """Log only when the sandbox is verbose."""
        if self.server.sandbox.verbose:
            super().log_message(format, *args)

    def _send(
        self,
        status: int,
        body: Any,
        *,
        path: str | None = None,
        headers: Mapping[str, str] | None = None,
        truncate: bool = False,
    ) -> None:
        if isinstance(body, bytes):  # already encoded (a generated catalogue's page)
            payload = body
        else:
            payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        if truncate:
            payload = payload[: max(1, len(payload) // 2)]
        if path is not None:  # counted before answering, so a client never sees stale stats
            self.server.sandbox._stats.record(path, status)
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        if not raw.strip():
            return {}
        return json.loads(raw)

    # -- verbs ------------------------------------------------------------------------------

    def do_GET(self) -> None:
        """Serve control endpoints directly and everything else through the fault layer."""
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"
        sandbox = self.server.sandbox
        if path == "/_faults":
            self._send(200, sandbox.faults.to_dict())
            return
        if path == "/_stats":
            self._send(200, sandbox.stats())
            return
        if path in _CONTROL_PATHS:
            self._send(405, {"error": True, "reason": f"Method GET not allowed on {path}"})
            return

        faults = sandbox.faults
        if faults.latency_s > 0:
            time.sleep(faults.latency_s)
        decision = sandbox._fault_state.decide(path)
        if decision.status is not None:
            headers = {}
            if decision.retry_after is not None:
                headers["Retry-After"] = str(decision.retry_after)
            reason = "Too Many Requests" if decision.status == 429 else "injected fault"
            self._send(
                decision.status, {"error": True, "reason": reason}, path=path, headers=headers
            )
            return

        query = parse_qs(parts.query, keep_blank_values=True)
        headers: Mapping[str, str] | None = None
        try:
            routed = self._route(path, query)
        except BadRequest as exc:
            routed = 400, {"error": True, "reason": str(exc)}
        status, body = routed[0], routed[1]
        if len(routed) > 2:
            headers = routed[2]
        self._send(
            status, body, path=path, headers=headers, truncate=decision.malformed and status == 200
        )

    def do_POST(self) -> None:
        """Steer the sandbox: ``POST /_faults`` and ``POST /_stats/reset``."""
        path = urlsplit(self.path).path.rstrip("/") or "/"
        sandbox = self.server.sandbox
        try:
            body = self._read_json()
        except (ValueError, UnicodeDecodeError):
            self._send(400, {"error": True, "reason": "request body is not valid JSON"})
            return
        if path == "/_faults":
            try:
                faults = Faults.from_mapping(body)
            except (TypeError, ValueError) as exc:
                self._send(400, {"error": True, "reason": str(exc)})
                return
            sandbox.set_faults(faults)
            self._send(200, faults.to_dict())
        elif path == "/_stats/reset":
            sandbox.reset_stats()
            self._send(200, sandbox.stats())
        else:
            self._send(405, {"error": True, "reason": f"Method POST not allowed on {path}"})

    # -- routes -----------------------------------------------------------------------------

    def _route(
        self, path: str, query: Mapping[str, list[str]]
    ) -> tuple[int, Any] | tuple[int, Any, Mapping[str, str]]:
        """``(status, body)``, or ``(status, body, headers)`` for a route with its own headers."""
        products = self.server.sandbox.products
        if path == "/products":
            if isinstance(products, GeneratedCatalogue) and not query.get("select"):
                limit = _int_param(query, "limit", DEFAULT_LIMIT)
                return 200, products.page_json(_int_param(query, "skip", 0), limit)
            return 200, products_page(products, query)
        if path.startswith("/products/") and path.count("/") == 2:
            raw_id = path.rsplit("/", 1)[1]
            try:
                product_id = int(raw_id)
            except ValueError:
                raise BadRequest(f"Invalid product id '{raw_id}'") from None
            if isinstance(products, GeneratedCatalogue):
                found = products.by_id(product_id)
                if found is not None:
                    return 200, _select(found, _select_fields(query))
                return 404, {"message": f"Product with id '{raw_id}' not found"}
            for product in products:
                if product.get("id") == product_id:
                    return 200, _select(product, _select_fields(query))
            return 404, {"message": f"Product with id '{raw_id}' not found"}
        if path == "/v1/archive":
            return 200, weather_archive(query)
        if (repo := issues_path(path)) is not None:
            # Link URLs name the host the client asked (as GitHub's name api.github.com).
            host = self.headers.get("Host") or urlsplit(self.server.sandbox.url).netloc
            try:
                issues, headers = issues_page(*repo, query, f"http://{host}{path}")
            except InvalidParameter as exc:
                raise BadRequest(str(exc)) from None
            return 200, issues, headers
        return 404, {"error": True, "reason": f"Not found: {path}"}


class Sandbox:
    """The sandbox server, running on a loopback port in a daemon thread.

    Example::

        with Sandbox(port=0, faults=Faults(fail_first=2)) as sb:
            httpx.get(f"{sb.url}/products", params={"limit": 10})
            sb.stats()["by_status"]  # {"200": 1, ...}
    """

    def __init__(
        self,
        port: int = 0,
        faults: Faults | None = None,
        *,
        host: str = "127.0.0.1",
        products_file: str | Path | None = None,
        generated: int | None = None,
        generated_seed: int = 0,
        verbose: bool = False,
    ) -> None:
        """Prepare (but do not start) a sandbox.

        Args:
            port: TCP port; 0 picks a free one (read it back from :attr:`port` or :attr:`url`).
            faults: faults to inject; none by default.
            host: interface to bind; loopback by default.
            products_file: an alternative product catalogue (JSON list or ``{"products": []}``).
            generated: serve a generated catalogue of this many products instead (the packaged
                ones repeated with new ids, see :mod:`ingest_assets.sandbox.generated`).
            generated_seed: seed of the generated catalogue's values.
            verbose: log one line per request to stderr.
        """
        self.host = host
        self._requested_port = port
        self.verbose = verbose
        self.products: Sequence[dict[str, Any]] = (
            load_products(products_file)
            if generated is None
            else GeneratedCatalogue(generated, generated_seed)
        )
        self._fault_state = _FaultState(faults or Faults())
        self._stats = _Stats()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> Sandbox:
        """Bind the port and serve in a daemon thread; returns ``self``."""
        if self._server is not None:
            raise RuntimeError("the sandbox is already running")
        self._server = _Server((self.host, self._requested_port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"sandbox-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port (idempotent)."""
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the server is serving."""
        return self._server is not None

    @property
    def port(self) -> int:
        """The bound port (the requested one before :meth:`start`)."""
        if self._server is None:
            return self._requested_port
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (no trailing slash)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # -- steering ---------------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        """The faults currently injected."""
        return self._fault_state.faults

    def set_faults(self, faults: Faults) -> None:
        """Replace the faults; resets fail-first/every-N counters, the generator and bucket."""
        self._fault_state.set(faults)

    def stats(self) -> dict[str, Any]:
        """Counts of answered non-control requests.

        Returns ``{"requests": N, "by_path": {path: n}, "by_status": {"200": n, ...},
        "by_path_status": {path: {"200": n, ...}}}``; status codes are strings, as over HTTP.
        """
        return self._stats.snapshot()

    def reset_stats(self) -> None:
        """Forget every request count (faults and their counters are left alone)."""
        self._stats.reset()
