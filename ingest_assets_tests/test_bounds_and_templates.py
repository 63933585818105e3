"""Bounds and templates (issue 18): every read is bounded, every template is resolved, and no
resolved secret is ever shown.

Real loopback servers (the sandbox API and scripted ones), real files; a memory bound is measured
as the peak RSS of a child process fetching a gzip bomb.
"""

from __future__ import annotations

import gzip
import json
import logging
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ingest_assets.connectors.base import FetchError, FileParseError, PermanentFetchError
from ingest_assets.connectors.files import FileOptions, nested_deeper_than
from ingest_assets.connectors.http import BodyTooLarge
from ingest_assets.connectors.rest import RestOptions
from ingest_assets.sandbox import Sandbox
from ingest_assets_tests.hostile import Reply, Request, items, records, run, serve, source

MiB = 1024**2
TOKEN = "123456:AAH-s3cr3t_bot-token"


def gzip_of_zeros(size: int) -> bytes:
    """A gzip body inflating to ``size`` zero bytes (about 1,000 times smaller)."""
    packer = zlib.compressobj(1, zlib.DEFLATED, 31)
    block = bytes(MiB)
    return b"".join([packer.compress(block) for _ in range(size // MiB)] + [packer.flush()])


def failure(src: Any, error: type[FetchError]) -> FetchError:
    with pytest.raises(error) as raised:
        run(src)
    assert "\n" not in str(raised.value)
    assert str(raised.value).startswith("source shop, day 2024-06-01: ")
    return raised.value


# ---------------------------------------------------------------------------------------------
# Bounds: response bodies


def test_the_default_bounds_are_one_gibibyte() -> None:
    assert RestOptions(base_url="http://x").max_body_bytes == 1024**3
    assert FileOptions(path="x").max_file_bytes == 1024**3


# The child fetches, and reports how far its peak RSS rose over its own baseline (imports done):
# RUSAGE_SELF of a fresh process, untouched by whatever else the test session ran.
_FETCH_IN_CHILD = """
import json, resource, sys
from ingest_assets.connectors.base import FetchError
from ingest_assets_tests.hostile import run, source
src = source(**json.loads(sys.argv[1]))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    run(src)
    outcome = {"error": None}
except FetchError as exc:
    outcome = {"error": str(exc), "kind": type(exc).__name__, "permanent": exc.permanent}
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({**outcome, "grew_kib": after - before}))
"""


def fetch_in_child(**src: Any) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _FETCH_IN_CHILD, json.dumps(src)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_gzip_bomb_is_stopped_at_the_cap_in_bounded_memory() -> None:
    inflated = 512 * MiB
    bomb = gzip_of_zeros(inflated)
    assert len(bomb) < inflated // 100
    headers = {"Content-Encoding": "gzip"}
    with serve(lambda r: Reply(bomb, headers=headers)) as api:
        got = fetch_in_child(
            connector="rest", base_url=api.url, path="/items", max_body_bytes=8 * MiB
        )
    assert got["kind"] == "BodyTooLarge" and got["permanent"]
    assert got["error"] == (
        f"source shop, day 2024-06-01: the body from {api.url}/items holds more than "
        f"{8 * MiB} bytes decompressed, past max_body_bytes={8 * MiB}; raise max_body_bytes "
        "if the source really sends that much"
    )
    # Not retried: the same bomb would come again.
    assert len(api.requests) == 1
    # Holding the inflated body would raise the peak by 512 MiB at least.
    assert got["grew_kib"] * 1024 < 128 * MiB


def test_a_body_announced_past_the_cap_is_refused_before_it_is_read() -> None:
    with serve(lambda r: Reply({"d": ["x" * 5000]})) as api:
        error = failure(
            source("rest", base_url=api.url, record_path="d", max_body_bytes=1000), BodyTooLarge
        )
    assert "announces 5011 bytes, past max_body_bytes=1000" in str(error)


def test_a_gzip_body_under_the_cap_is_read_whole() -> None:
    body = gzip.compress(json.dumps({"d": items(3)}).encode())
    with serve(lambda r: Reply(body, headers={"Content-Encoding": "gzip"})) as api:
        got = records(source("rest", base_url=api.url, record_path="d", max_body_bytes=1000))
    assert got == items(3)


def test_a_record_nested_past_max_depth_fails_the_fetch_naming_the_bound() -> None:
    body = {"d": [{"id": 1, "a": [[1]]}, {"id": 2, "a": [[[1]]]}]}
    with serve(lambda r: Reply(body)) as api:
        assert len(records(source("rest", base_url=api.url, record_path="d", max_depth=4))) == 2
        error = failure(
            source("rest", base_url=api.url, record_path="d", max_depth=3), PermanentFetchError
        )
    assert str(error).endswith(f"record 2 from {api.url} is nested deeper than max_depth=3")


# ---------------------------------------------------------------------------------------------
# Short bodies and HTML where JSON is expected: loud, naming the source, day and position


class _Raw(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64


@contextmanager
def raw_server(answer: Callable[[str], tuple[bytes, bytes]]) -> Iterator[str]:
    """A loopback server writing ``answer(path)``: (head without Content-Length, body)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            head, body = answer(self.path)
            self.wfile.write(head + body)
            self.wfile.flush()
            self.close_connection = True

    server = _Raw(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def paged(url: str) -> Any:
    return source(
        "rest",
        http={"max_attempts": 2},
        base_url=url,
        path="/items",
        record_path="items",
        pagination={"kind": "limit_offset", "page_size": 2, "total_path": None},
    )


def json_head(length: int, kind: str = "application/json") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {length}\r\n\r\n".encode()


def test_a_body_shorter_than_its_content_length_fails_naming_the_page() -> None:
    def answer(path: str) -> tuple[bytes, bytes]:
        body = json.dumps({"items": items(2)}).encode()
        if "offset=2" in path:
            return json_head(len(body) + 100), body  # the connection closes 100 bytes short
        return json_head(len(body)), body

    with raw_server(answer) as url:
        error = failure(paged(url), FetchError)
    assert not error.permanent
    assert str(error).startswith(
        f"source shop, day 2024-06-01: gave up after 2 attempts: incomplete answer from "
        f"{url}/items (limit=2, offset=2): "
    )


def test_an_html_page_served_as_200_fails_naming_the_page_never_an_empty_page() -> None:
    html = b"<!DOCTYPE html><html><body>Maintenance, back soon</body></html>"

    def answer(path: str) -> tuple[bytes, bytes]:
        if "offset=2" in path:
            return json_head(len(html), "text/html; charset=utf-8"), html
        body = json.dumps({"items": items(2)}).encode()
        return json_head(len(body)), body

    with raw_server(answer) as url:
        error = failure(paged(url), FetchError)
    assert str(error) == (
        f"source shop, day 2024-06-01: gave up after 2 attempts: unparseable JSON body from "
        f"{url}/items (limit=2, offset=2): HTTP 200 with an HTML page (text/html; "
        f"charset=utf-8, {len(html)} bytes, not shown) at character 0"
    )
    assert "Maintenance" not in str(error)


# ---------------------------------------------------------------------------------------------
# Bounds: landing files


def landed(tmp_path: Path, name: str, content: bytes) -> str:
    (tmp_path / name.replace("{date}", "2024-06-01")).write_bytes(content)
    return str(tmp_path / name)


def test_a_gzip_landing_file_is_read_as_its_lines(tmp_path: Path) -> None:
    content = gzip.compress(b'{"id": 1}\n{"id": 2}\n')
    path = landed(tmp_path, "{date}.jsonl.gz", content)
    assert records(source("jsonl", path=path)) == [{"id": 1}, {"id": 2}]


def test_a_gzip_landing_file_past_max_file_bytes_fails_in_bounded_memory(tmp_path: Path) -> None:
    path = landed(tmp_path, "{date}.jsonl.gz", gzip_of_zeros(256 * MiB))
    got = fetch_in_child(connector="jsonl", path=path, max_file_bytes=4 * MiB)
    assert got["kind"] == "FileTooLarge" and got["permanent"]
    assert got["error"] == (
        f"source shop, day 2024-06-01: {tmp_path}/2024-06-01.jsonl.gz holds more than "
        f"max_file_bytes={4 * MiB} bytes once decompressed; raise max_file_bytes if the file "
        "really is that large"
    )
    assert got["grew_kib"] * 1024 < 64 * MiB


def test_a_plain_file_past_max_file_bytes_fails(tmp_path: Path) -> None:
    path = landed(tmp_path, "{date}.csv", b"a,b\n" + b"1,2\n" * 100)
    error = failure(source("csv", path=path, max_file_bytes=200), FileParseError)
    assert "2024-06-01.csv holds more than max_file_bytes=200 bytes;" in str(error)


def test_a_jsonl_line_past_max_record_bytes_is_a_parse_error_and_the_rest_loads(
    tmp_path: Path,
) -> None:
    long_line = b'{"id": 2, "text": "' + b"x" * 5000 + b'"}\n'
    path = landed(tmp_path, "{date}.jsonl", b'{"id": 1}\n' + long_line + b'{"id": 3}\n')
    got = records(source("jsonl", path=path, max_record_bytes=1000))
    assert got[0] == {"id": 1} and got[2] == {"id": 3}
    assert got[1] == {
        "_parse_error": "line 2: longer than max_record_bytes=1000 bytes (first 1000 bytes kept)",
        "_line": 2,
        "_raw": long_line[:1000].decode(),
    }


def test_a_csv_row_past_max_record_bytes_is_a_parse_error(tmp_path: Path) -> None:
    path = landed(tmp_path, "{date}.csv", b"a,b\n1,x\n2," + b"y" * 3000 + b"\n3,z\n")
    got = records(source("csv", path=path, max_record_bytes=1000))
    assert got[0] == {"a": "1", "b": "x"} and got[2] == {"a": "3", "b": "z"}
    assert got[1]["_parse_error"] == (
        "line 3: longer than max_record_bytes=1000 bytes (first 1000 bytes kept)"
    )


def test_an_xml_record_past_max_record_bytes_is_a_parse_error(tmp_path: Path) -> None:
    big = "<name>" + "x" * 3000 + "</name>"
    document = (
        f'<catalog>\n<product id="1"><name>ok</name></product>\n<product id="2">{big}</product>\n'
        '<product id="3"><name>fine</name></product>\n</catalog>'
    )
    path = landed(tmp_path, "{date}.xml", document.encode())
    got = records(source("xml", path=path, record_tag="product", max_record_bytes=1000))
    assert got[0] == {"id": "1", "name": "ok"} and got[2] == {"id": "3", "name": "fine"}
    assert got[1]["_parse_error"] == (
        "line 3: <product> is larger than max_record_bytes=1000 bytes (its start kept)"
    )
    assert len(got[1]["_raw"]) == 1000


def truncated_escaped_json(size: int) -> str:
    """A line holding JSON as an escaped string, cut off mid-string (as a partial write)."""
    inner = json.dumps(
        {"items": [{"id": i, "tags": ["a", "b"], "n": {"k": i}} for i in range(size)]}
    )
    return json.dumps({"id": 1, "payload": inner})[: size * 40]


def test_a_truncated_line_of_escaped_json_is_one_parse_error_in_linear_time(
    tmp_path: Path,
) -> None:
    line = truncated_escaped_json(10_000)
    assert len(line) == 400_000
    path = landed(tmp_path, "{date}.jsonl", (line + '\n{"id": 2}\n').encode())
    started = time.perf_counter()
    got = records(source("jsonl", path=path))
    # Quadratic, this line took over ten minutes; linear, well under a second.
    assert time.perf_counter() - started < 10
    assert got[1] == {"id": 2}
    assert got[0]["_parse_error"].startswith("line 1, column 22: Unterminated string")
    assert got[0]["_raw"] == line


def test_depth_is_measured_outside_strings_even_in_an_unterminated_one() -> None:
    assert not nested_deeper_than('{"a": [[1]], "s": "[[[[[[["}', 3)
    assert nested_deeper_than('{"a": [[[1]]]}', 3)
    # An escaped quote does not end a string; a string cut off hides the rest.
    assert not nested_deeper_than('{"s": "\\"[[[[[[[", "t": "[[[[[[[[', 3)
    assert nested_deeper_than('[[[[[[[[ "unclosed', 3)


# ---------------------------------------------------------------------------------------------
# Templates: resolved at run time in the path too, and never shown


def test_a_secret_in_the_path_reaches_the_sandbox_and_no_error_shows_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHOP_BOT_TOKEN", TOKEN)
    with Sandbox(port=0) as sandbox:
        error = failure(
            source("rest", base_url=sandbox.url, path="/bot${SHOP_BOT_TOKEN}/products"),
            PermanentFetchError,
        )
        asked, url = list(sandbox.stats()["by_path"]), sandbox.url
    assert asked == [f"/bot{TOKEN}/products"]
    assert str(error).startswith(
        f"source shop, day 2024-06-01: HTTP 404 from {url}/botREDACTED/products ("
    )
    assert "s3cr3t" not in str(error)


def test_a_path_secret_is_sent_and_never_logged_or_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SHOP_BOT_TOKEN", TOKEN)
    answered: list[str] = []

    def route(request: Request) -> Reply:
        answered.append(request.path)
        if request.path != f"/bot{TOKEN}/items":
            return Reply({"error": "unknown bot"}, status=404)
        if len(answered) == 1:
            return Reply({"error": "busy"}, status=503)
        if request.query["offset"] == "2":
            return Reply({"error": "gone"}, status=410)
        return Reply({"items": items(2)})

    src = source(
        "rest",
        base_url="${SHOP_API_URL}",
        path="/bot${SHOP_BOT_TOKEN}/items",
        record_path="items",
        pagination={"kind": "limit_offset", "page_size": 2, "total_path": None},
    )
    with caplog.at_level(logging.INFO), serve(route) as api:
        monkeypatch.setenv("SHOP_API_URL", api.url)
        error = failure(src, PermanentFetchError)
    assert answered == [f"/bot{TOKEN}/items"] * 3
    assert str(error) == (
        f"source shop, day 2024-06-01: HTTP 410 from {api.url}/botREDACTED/items "
        "(limit=2, offset=2) (17 bytes of body not shown)"
    )
    retried = [r.getMessage() for r in caplog.records if "retry 1/" in r.getMessage()]
    assert retried and f"{api.url}/botREDACTED/items" in retried[0]
    assert TOKEN not in caplog.text
    # Its percent-encoded form (":" as "%3A") is caught too.
    assert "AAH-s3cr3t" not in caplog.text + str(error)


def test_a_path_default_is_used_when_the_variable_is_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SHOP_API_VERSION", raising=False)
    with serve(lambda r: Reply({"d": [{"path": r.path}]})) as api:
        got = records(
            source("rest", base_url=api.url, path="/${SHOP_API_VERSION:-v2}/items", record_path="d")
        )
    assert got == [{"path": "/v2/items"}]


def test_the_file_path_resolves_environment_references(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOP_DROP", str(tmp_path))
    landed(tmp_path, "{date}.jsonl", b'{"id": 1}\n')
    assert records(source("jsonl", path="${SHOP_DROP}/{date}.jsonl")) == [{"id": 1}]
