"""Helpers for the hostile-source tests: a scriptable loopback API and connector runs."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from ingest_assets.config import SourceConfig
from ingest_assets.connectors import FetchContext, collect, get_connector_class

DAY = dt.date(2024, 6, 1)
FAST_HTTP = {
    "backoff_base_s": 0.01,
    "backoff_max_s": 0.05,
    "retry_after_max_s": 0.05,
    "rate_limit_per_s": 1000,
    "burst": 100,
}


@dataclass
class Request:
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class Reply:
    body: Any = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    # Send the body a byte at a time, this many seconds apart (a server that trickles).
    trickle_s: float = 0.0


Route = Callable[[Request], Reply]


class _Server(ThreadingHTTPServer):
    # The default listen backlog of 5 can drop connections when many pages are asked at once
    # on a loaded machine; a retried connect would then change the counted requests.
    request_queue_size = 128


class Api:
    """A real HTTP server on a loopback port; ``route`` answers each request."""

    def __init__(self, route: Route) -> None:
        self.route = route
        self.requests: list[Request] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                url = urlparse(self.path)
                request = Request(
                    url.path,
                    {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()},
                    {k.lower(): v for k, v in self.headers.items()},
                )
                api.requests.append(request)
                reply = api.route(request)
                time.sleep(reply.delay_s)
                raw = (
                    reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                )
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                try:
                    if reply.trickle_s:
                        for i in range(len(raw)):
                            self.wfile.write(raw[i : i + 1])
                            self.wfile.flush()
                            time.sleep(reply.trickle_s)
                    else:
                        self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@contextmanager
def serve(route: Route) -> Iterator[Api]:
    api = Api(route)
    # A short poll interval: shutdown() waits for it.
    thread = threading.Thread(target=api.server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield api
    finally:
        api.server.shutdown()
        api.server.server_close()


def source(connector: str, http: dict | None = None, **options: Any) -> SourceConfig:
    return SourceConfig.model_validate(
        {
            "name": "shop",
            "connector": connector,
            "dataset": "products",
            "http": {**FAST_HTTP, **(http or {})},
            **options,
        }
    )


def run(src: SourceConfig, day: dt.date = DAY) -> tuple[list[list[dict]], FetchContext]:
    """The batches a connector hands over, in order, and the fetch context (its stats)."""
    ctx = FetchContext(partition_date=day)
    return collect(get_connector_class(src.connector)(src), ctx), ctx


def records(src: SourceConfig) -> list[dict]:
    return [record for batch in run(src)[0] for record in batch]


def items(count: int) -> list[dict[str, Any]]:
    return [{"id": i, "title": f"item {i}"} for i in range(count)]
