"""Hostile sources: every record in is a record out, or the fetch fails loudly, saying where.

Real loopback servers and real files; each test asserts the exact records handed over or the
exact failure (class, permanence, message).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ingest_assets.connectors.base import (
    FetchError,
    FileParseError,
    PagingError,
    PermanentFetchError,
)
from ingest_assets_tests.hostile import Reply, Request, items, records, run, serve, source

# ---------------------------------------------------------------------------------------------
# Paging: limit/offset


def offset_api(
    data: list[dict], *, total: int | None = None, cap: int | None = None, ignore_offset=False
):
    """/items?limit&offset over ``data``; announces ``total`` when given."""

    def route(request: Request) -> Reply:
        limit = int(request.query["limit"])
        if cap:
            limit = min(limit, cap)
        offset = 0 if ignore_offset else int(request.query["offset"])
        body: dict[str, Any] = {"items": data[offset : offset + limit]}
        if total is not None:
            body["total"] = total
        return Reply(body)

    return route


def offset_source(url: str, page_size: int = 50, max_pages: int = 10_000, **http: Any):
    return source(
        "rest",
        http=http,
        base_url=url,
        path="/items",
        record_path="items",
        pagination={"kind": "limit_offset", "page_size": page_size, "max_pages": max_pages},
    )


def failure(src, error: type[FetchError] = PagingError) -> FetchError:
    with pytest.raises(error) as raised:
        run(src)
    assert "\n" not in str(raised.value)
    assert str(raised.value).startswith("source shop, day 2024-06-01: ")
    return raised.value


@pytest.mark.parametrize("total", [None, 120])
def test_limit_offset_hands_over_every_record_in_order(total: int | None) -> None:
    data = items(120)
    with serve(offset_api(data, total=total)) as api:
        batches, ctx = run(offset_source(api.url))
    assert [r for b in batches for r in b] == data
    assert [len(b) for b in batches] == [50, 50, 20]
    # Without a total the short third page is the end; with one, the total is.
    assert ctx.stats.requests == 3


def test_limit_offset_without_total_fails_at_max_pages() -> None:
    with serve(offset_api(items(5000))) as api:
        error = failure(offset_source(api.url, max_pages=20))
    assert error.permanent
    assert str(error) == (
        "source shop, day 2024-06-01: max_pages=20 reached before the page at offset 1000 of "
        f"{api.url}/items and the source has not signalled its end; raise max_pages"
    )


def test_limit_offset_with_total_beyond_max_pages_fails_before_fetching() -> None:
    with serve(offset_api(items(5000), total=5000)) as api:
        error = failure(offset_source(api.url, max_pages=20))
    assert "the announced total 5000 needs 100 pages of 50, more than max_pages=20" in str(error)
    assert len(api.requests) == 1


def test_a_total_that_under_reports_is_caught_by_the_page_past_it() -> None:
    # 500 items, total 60: the second page holds 50 where the total leaves room for 10.
    with serve(offset_api(items(500), total=60)) as api:
        error = failure(offset_source(api.url))
    assert str(error) == (
        "source shop, day 2024-06-01: the page at offset 50 holds 50 records where the "
        "announced total 60 means 10: the total or the data changed while paging "
        f"({api.url}/items)"
    )


def test_a_total_on_a_page_boundary_is_confirmed_by_one_more_page() -> None:
    with serve(offset_api(items(500), total=100)) as api:
        error = failure(offset_source(api.url))
    assert "the announced total 100 is contradicted: the page at offset 100 holds 50 more" in str(
        error
    )
    with serve(offset_api(items(100), total=100)) as api:
        assert records(offset_source(api.url)) == items(100)
    assert [r.query["offset"] for r in api.requests] == ["0", "50", "100"]


def test_one_short_page_matching_the_total_is_the_end() -> None:
    with serve(offset_api(items(30), total=30)) as api:
        assert records(offset_source(api.url)) == items(30)
    assert len(api.requests) == 1


def test_a_total_that_over_reports_fails() -> None:
    with serve(offset_api(items(25), total=30, cap=10)) as api:
        error = failure(offset_source(api.url))
    assert "the page at offset 20 holds 5 records where the announced total 30 means 10" in str(
        error
    )


@pytest.mark.parametrize("total", [None, 5000])
def test_a_server_ignoring_the_offset_is_a_repeated_page(total: int | None) -> None:
    with serve(offset_api(items(5000), total=total, ignore_offset=True)) as api:
        error = failure(offset_source(api.url, max_pages=1000))
    assert (
        f"the page at offset 50 of {api.url}/items repeats the records of the page at offset 0"
        in str(error)
    )


def test_a_capped_page_size_without_total_still_reads_everything() -> None:
    with serve(offset_api(items(25), cap=10)) as api:
        assert records(offset_source(api.url)) == items(25)
    # 10, 10, then 5: shorter than the pages before it, so the end.
    assert [r.query["offset"] for r in api.requests] == ["0", "10", "20"]


def test_concurrent_pages_come_out_in_page_order_whatever_finishes_first() -> None:
    data = items(400)
    route = offset_api(data, total=400)

    def slow_early_pages(request: Request) -> Reply:
        reply = route(request)
        # Page 1 (offset 50) answers last, page 7 first.
        reply.delay_s = 0.04 * (8 - int(request.query["offset"]) // 50)
        return reply

    with serve(slow_early_pages) as api:
        batches, _ = run(offset_source(api.url, max_concurrency=8))
    assert [b[0]["id"] for b in batches] == [0, 50, 100, 150, 200, 250, 300, 350]
    assert [r for b in batches for r in b] == data


# ---------------------------------------------------------------------------------------------
# Paging: page numbers, cursors, next links


def pages_api(data: list[dict], size: int = 10, *, pages: int | None = None, ignore=False):
    def route(request: Request) -> Reply:
        number = 1 if ignore else int(request.query["page"])
        body: dict[str, Any] = {"data": data[(number - 1) * size : number * size]}
        if pages is not None:
            body["pages"] = pages
        return Reply(body)

    return route


def page_source(url: str, max_pages: int = 10_000, total: bool = False):
    pagination = {"kind": "page_number", "max_pages": max_pages}
    if total:
        pagination["total_pages_path"] = "pages"
    return source("rest", base_url=url, path="/p", record_path="data", pagination=pagination)


@pytest.mark.parametrize("total", [False, True])
def test_page_numbers_hand_over_every_record_in_order(total: bool) -> None:
    with serve(pages_api(items(25), pages=3)) as api:
        assert records(page_source(api.url, total=total)) == items(25)
    # With a page count, pages 2 and 3 are asked at once: any arrival order, same records.
    assert sorted(r.query["page"] for r in api.requests) == ["1", "2", "3"]


def test_page_numbers_without_a_count_fail_at_max_pages() -> None:
    with serve(pages_api(items(1000))) as api:
        error = failure(page_source(api.url, max_pages=5))
    assert f"max_pages=5 reached before page 6 of {api.url}/p" in str(error)


def test_a_page_count_beyond_max_pages_fails() -> None:
    with serve(pages_api(items(1000), pages=100)) as api:
        error = failure(page_source(api.url, max_pages=5, total=True))
    assert "the announced page count 100 is more than max_pages=5" in str(error)


def test_a_page_count_that_under_reports_fails() -> None:
    with serve(pages_api(items(1000), pages=3)) as api:
        error = failure(page_source(api.url, total=True))
    assert "the announced page count 3 is contradicted: page 4 holds 10 more records" in str(error)


@pytest.mark.parametrize("total", [False, True])
def test_a_server_ignoring_the_page_number_is_a_repeated_page(total: bool) -> None:
    with serve(pages_api(items(1000), pages=100, ignore=True)) as api:
        error = failure(page_source(api.url, total=total))
    assert f"page 2 of {api.url}/p repeats the records of page 1" in str(error)


def cursor_api(data: list[dict], *, stuck: bool = False, size: int = 10):
    def route(request: Request) -> Reply:
        start = int(request.query.get("cursor", 0))
        more = start + size < len(data)
        following = "0" if stuck else (str(start + size) if more else None)
        if stuck:
            # Same cursor forever, fresh records each time: only the cursor gives it away.
            start = len(api_calls)
        api_calls.append(start)
        return Reply({"data": data[start : start + size], "next": following})

    api_calls: list[int] = []
    return route


def cursor_source(url: str, max_pages: int = 10_000):
    pagination = {"kind": "cursor", "cursor_path": "next", "max_pages": max_pages}
    return source("rest", base_url=url, path="/c", record_path="data", pagination=pagination)


def test_cursor_hands_over_every_record_in_order() -> None:
    with serve(cursor_api(items(25))) as api:
        assert records(cursor_source(api.url)) == items(25)
    assert len(api.requests) == 3


def test_the_same_cursor_again_fails() -> None:
    with serve(cursor_api(items(1000), stuck=True)) as api:
        error = failure(cursor_source(api.url))
    assert f"page 2 gives the same next cursor as page 1 ({api.url}/c)" in str(error)


def test_cursor_fails_at_max_pages() -> None:
    with serve(cursor_api(items(1000))) as api:
        error = failure(cursor_source(api.url, max_pages=3))
    assert f"max_pages=3 reached before page 4 of {api.url}/c" in str(error)


def link_api(data: list[dict], *, link: str | None = None):
    def route(request: Request) -> Reply:
        start = int(request.query.get("from", 0))
        more = start + 10 < len(data)
        following = link or (f"/l?from={start + 10}" if more else None)
        return Reply({"data": data[start : start + 10], "next": following})

    return route


def link_source(url: str, **options: Any):
    pagination = {"kind": "next_link", "next_path": "next"}
    return source(
        "rest", base_url=url, path="/l", record_path="data", pagination=pagination, **options
    )


def test_next_links_hand_over_every_record_in_order() -> None:
    with serve(link_api(items(25))) as api:
        assert records(link_source(api.url)) == items(25)
    assert [r.query.get("from") for r in api.requests] == [None, "10", "20"]


def test_a_next_link_back_to_a_page_read_before_fails() -> None:
    with serve(link_api(items(25), link="/l?from=10")) as api:
        error = failure(link_source(api.url))
    assert "page 2 links to the same next page as page 1" in str(error)


def test_a_next_link_to_another_host_fails_and_is_never_requested(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHOP_TOKEN", "tok-secret-1")
    with (
        serve(lambda r: Reply({"data": [{"id": 99}], "next": None})) as other,
        serve(link_api(items(25), link=f"{other.url}/steal?from=10")) as api,
    ):
        error = failure(
            link_source(
                api.url,
                headers={"Authorization": "Bearer ${SHOP_TOKEN}"},
                params={"key": "${SHOP_TOKEN}"},
            )
        )
    assert error.permanent
    assert f"page 1 links to {other.url}/steal, another origin than the configured" in str(error)
    assert other.requests == []
    assert "tok-secret-1" not in str(error)


def test_same_origin_next_links_carry_the_secret_parameters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHOP_TOKEN", "tok-secret-1")
    with serve(link_api(items(25))) as api:
        got = records(link_source(api.url, params={"key": "${SHOP_TOKEN}", "lang": "en"}))
    assert got == items(25)
    assert [r.query for r in api.requests] == [
        {"key": "tok-secret-1", "lang": "en"},
        {"from": "10", "key": "tok-secret-1"},
        {"from": "20", "key": "tok-secret-1"},
    ]


def test_fan_out_items_come_out_in_config_order() -> None:
    cities = ["Oslo", "Rome", "Lima", "Pune"]

    def route(request: Request) -> Reply:
        city = request.query["city"]
        # The first city answers last.
        delay = 0.05 * (len(cities) - cities.index(city))
        return Reply({"data": [{"n": n} for n in range(3)]}, delay_s=delay)

    with serve(route) as api:
        src = source(
            "rest",
            base_url=api.url,
            path="/w",
            params={"city": "{city}"},
            record_path="data",
            fan_out=[{"city": c} for c in cities],
            attach=["city"],
            http={"max_concurrency": 4},
        )
        got = records(src)
    assert got == [{"city": c, "n": n} for c in cities for n in range(3)]


# ---------------------------------------------------------------------------------------------
# HTTP: Retry-After, deadlines, credentials, permanent errors


def test_an_unparseable_retry_after_falls_back_to_backoff() -> None:
    answers = iter([Reply({}, status=429, headers={"Retry-After": "soon"})])

    def route(request: Request) -> Reply:
        return next(answers, Reply({"data": [{"id": 1}]}))

    with serve(route) as api:
        batches, ctx = run(source("rest", base_url=api.url, record_path="data"))
    assert batches == [[{"id": 1}]]
    assert (ctx.stats.requests, ctx.stats.retries, ctx.stats.failed_requests) == (2, 1, 1)


def test_timeout_is_a_deadline_for_the_whole_answer() -> None:
    # Each byte arrives well within the timeout; the whole body would take 100 s.
    body = json.dumps({"data": [{"id": 1}] * 200}).encode()[:1000]

    def route(request: Request) -> Reply:
        return Reply(body, trickle_s=0.1)

    with serve(route) as api:
        error = failure(
            source(
                "rest",
                base_url=api.url,
                record_path="data",
                http={"timeout_s": 0.5, "max_attempts": 1},
            ),
            FetchError,
        )
    assert not error.permanent
    assert str(error).endswith(f"no complete answer within timeout_s=0.5s from {api.url}")


def test_credentials_do_not_follow_a_redirect_to_another_origin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHOP_TOKEN", "tok-secret-1")
    monkeypatch.setenv("SHOP_TENANT", "tenant-7")
    with (
        serve(lambda r: Reply({"data": [{"id": 7}]})) as cdn,
        serve(lambda r: Reply(b"", status=302, headers={"Location": f"{cdn.url}/f"})) as api,
    ):
        got = records(
            source(
                "rest",
                base_url=api.url,
                path="/items",
                record_path="data",
                headers={
                    "Authorization": "Bearer ${SHOP_TOKEN}",
                    "X-Api-Key": "k-123",
                    "X-Tenant": "${SHOP_TENANT}",
                    "Accept": "application/json",
                },
                params={"api_key": "k-456", "day": "{date}"},
            )
        )
    assert got == [{"id": 7}]
    sent = api.requests[0]
    assert sent.headers["authorization"] == "Bearer tok-secret-1"
    assert sent.headers["x-api-key"] == "k-123" and sent.headers["x-tenant"] == "tenant-7"
    assert sent.query == {"api_key": "k-456", "day": "2024-06-01"}
    followed = cdn.requests[0]
    assert followed.path == "/f" and followed.query == {}
    assert not {"authorization", "x-api-key", "x-tenant"} & set(followed.headers)
    assert followed.headers["accept"] == "application/json"


def test_credentials_follow_a_redirect_on_the_same_origin() -> None:
    def route(request: Request) -> Reply:
        if request.path == "/old":
            return Reply(b"", status=301, headers={"Location": "/new"})
        return Reply({"data": [{"id": 1}]})

    with serve(route) as api:
        got = records(
            source(
                "rest",
                base_url=api.url,
                path="/old",
                record_path="data",
                headers={"X-Api-Key": "k"},
            )
        )
    assert got == [{"id": 1}]
    assert [(r.path, r.headers.get("x-api-key")) for r in api.requests] == [
        ("/old", "k"),
        ("/new", "k"),
    ]


@pytest.mark.parametrize(
    ("status", "permanent", "attempts"),
    [(404, True, 1), (400, True, 1), (503, False, 3), (429, False, 3)],
)
def test_client_errors_are_permanent_and_server_errors_are_not(
    status: int, permanent: bool, attempts: int
) -> None:
    with serve(lambda r: Reply({"error": "x"}, status=status)) as api:
        error = failure(
            source("rest", base_url=api.url, path="/p", record_path="d", http={"max_attempts": 3}),
            FetchError,
        )
    assert error.permanent is permanent
    assert isinstance(error, PermanentFetchError) is permanent
    assert f"HTTP {status} from {api.url}/p" in str(error)
    assert len(api.requests) == attempts


@pytest.mark.parametrize(
    ("base_url", "why"),
    [
        ("127.0.0.1:8000", "invalid URL 127.0.0.1:8000/items"),
        ("ftp://127.0.0.1", "invalid URL ftp://127.0.0.1/items"),
        ("http://[::1", "invalid URL http://[::1/items"),
    ],
)
def test_a_url_without_a_usable_scheme_is_permanent(base_url: str, why: str) -> None:
    error = failure(source("rest", base_url=base_url, path="/items", record_path="d"), FetchError)
    assert error.permanent
    assert why in str(error)


def test_a_body_nested_past_the_parser_is_permanent() -> None:
    deep = b'{"data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with serve(lambda r: Reply(deep)) as api:
        error = failure(source("rest", base_url=api.url, record_path="data"), PermanentFetchError)
    assert f"JSON body from {api.url} is nested too deeply to parse" in str(error)
    assert len(api.requests) == 1


def test_errors_name_no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOP_TOKEN", "tok-secret-1")
    with serve(lambda r: Reply({"echo": r.query}, status=401)) as api:
        error = failure(
            source("rest", base_url=api.url, record_path="d", params={"token": "${SHOP_TOKEN}"}),
            PermanentFetchError,
        )
    assert "tok-secret-1" not in str(error)


# ---------------------------------------------------------------------------------------------
# Files: CSV


def landed(tmp_path: Path, name: str, content: str | bytes) -> str:
    path = tmp_path / name.replace("{date}", "2024-06-01")
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return str(tmp_path / name)


HEADER = "partner_sku,name,category,brand,list_price,discount,rating,stock\n"


def product_rows(count: int) -> list[str]:
    return [f"P{i},Lamp {i},home,Acme,{10 + i},5,4.5,{i}\n" for i in range(count)]


def product(i: int) -> dict[str, str]:
    values = [f"P{i}", f"Lamp {i}", "home", "Acme", str(10 + i), "5", "4.5", str(i)]
    return dict(zip(HEADER.strip().split(","), values, strict=True))


def test_csv_unterminated_quote_costs_one_row_not_the_file(tmp_path: Path) -> None:
    rows = product_rows(501)
    rows[4] = 'P4,"Lamp 4,home,Acme,14,5,4.5,4\n'
    path = landed(tmp_path, "{date}.csv", HEADER + "".join(rows))
    got = records(source("csv", path=path))
    assert len(got) == 501
    assert got[4] == {
        "_parse_error": "line 6: a quoted field is not closed before the end of the file",
        "_line": 6,
        "_raw": 'P4,"Lamp 4,home,Acme,14,5,4.5,4',
    }
    assert got[:4] + got[5:] == [product(i) for i in range(501) if i != 4]


def test_csv_text_after_a_closing_quote_is_a_parse_error(tmp_path: Path) -> None:
    path = landed(tmp_path, "{date}.csv", 'a,b\n"x"y,1\n2,3\n')
    assert records(source("csv", path=path)) == [
        {"_parse_error": "line 2: ',' expected after '\"'", "_line": 2, "_raw": '"x"y,1'},
        {"a": "2", "b": "3"},
    ]


def test_csv_quoted_line_breaks_are_one_record(tmp_path: Path) -> None:
    path = landed(tmp_path, "{date}.csv", 'a,b\n1,"two\nlines"\n2,x\n')
    assert records(source("csv", path=path)) == [
        {"a": "1", "b": "two\nlines"},
        {"a": "2", "b": "x"},
    ]


def test_csv_ragged_rows_become_parse_errors(tmp_path: Path) -> None:
    path = landed(tmp_path, "{date}.csv", "a,b,c\n1,2,3\n4,5\n6,7,8,9\n10,11,12\n")
    assert records(source("csv", path=path)) == [
        {"a": "1", "b": "2", "c": "3"},
        {
            "_parse_error": "line 3: fewer fields (2) than the header names (3)",
            "_line": 3,
            "_raw": "4,5",
        },
        {
            "_parse_error": "line 4: more fields (4) than the header names (3)",
            "_line": 4,
            "_raw": "6,7,8,9",
        },
        {"a": "10", "b": "11", "c": "12"},
    ]


def test_csv_duplicate_header_fails_the_file(tmp_path: Path) -> None:
    path = landed(tmp_path, "{date}.csv", "sku,price,name,price\nA,1,x,2\n")
    error = failure(source("csv", path=path), FileParseError)
    assert error.permanent
    assert str(error) == (
        f"source shop, day 2024-06-01: cannot read {tmp_path}/2024-06-01.csv: line 1: the "
        "header names 'price' twice (columns 2 and 4)"
    )


def test_csv_large_fields_load_up_to_the_configured_size(tmp_path: Path) -> None:
    big = "x" * (200 * 1024)
    path = landed(tmp_path, "{date}.csv", f'a,b\n1,"{big}"\n2,{big}y\n3,z\n')
    assert records(source("csv", path=path))[0] == {"a": "1", "b": big}
    got = records(source("csv", path=path, max_field_size=200 * 1024))
    assert got[0] == {"a": "1", "b": big}
    assert got[1]["_parse_error"] == (
        "line 3: field 'b' is longer than max_field_size=204800 characters"
    )
    assert got[2] == {"a": "3", "b": "z"}


def test_csv_undecodable_rows_are_parse_errors_and_an_undecodable_header_fails(
    tmp_path: Path,
) -> None:
    path = landed(tmp_path, "{date}.csv", b"a,b\n1,caf\xe9\n2,ok\n")
    assert records(source("csv", path=path)) == [
        {
            "_parse_error": "line 2: not valid utf-8-sig (byte 6: invalid continuation byte)",
            "_line": 2,
            "_raw": "1,caf\ufffd",
        },
        {"a": "2", "b": "ok"},
    ]
    path = landed(tmp_path, "{date}.csv", b"n\xe9,b\n1,2\n")
    error = failure(source("csv", path=path), FileParseError)
    assert "cannot read the header of" in str(error) and "line 1: not valid utf-8-sig" in str(error)


def test_a_file_undecodable_as_a_whole_fails(tmp_path: Path) -> None:
    path = landed(tmp_path, "{date}.csv", "a,b\n1,2\n".encode("utf-16-le") + b"\x00\xd8")
    error = failure(source("csv", path=path, encoding="utf-16-le"), FileParseError)
    assert "cannot decode" in str(error) and "as utf-16-le: byte 16" in str(error)


# ---------------------------------------------------------------------------------------------
# Files: JSON lines


def test_jsonl_every_bad_line_is_a_record_and_the_rest_loads(tmp_path: Path) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    content = (
        b'{"id": 1}\n'
        + b'{"id": '
        + deep.encode()
        + b"}\n"
        + b'{"id": "caf\xe9"}\n'
        + b'{"id": 4,}\n'
        + b"\n"
        + b'{"id": 6}\n'
    )
    path = landed(tmp_path, "{date}.jsonl", content)
    got = records(source("jsonl", path=path))
    assert got[0] == {"id": 1} and got[-1] == {"id": 6}
    assert got[1] == {
        "_parse_error": "line 2: nested deeper than max_depth=100",
        "_line": 2,
        "_raw": '{"id": ' + deep + "}",
    }
    assert got[2] == {
        "_parse_error": "line 3: not valid utf-8-sig (byte 12: invalid continuation byte)",
        "_line": 3,
        "_raw": '{"id": "caf\ufffd"}',
    }
    assert got[3] == {
        "_parse_error": "line 4, column 10: Expecting property name enclosed in double quotes",
        "_line": 4,
        "_raw": '{"id": 4,}',
    }
    assert len(got) == 5
    json.dumps(got).encode("utf-8")  # every _raw is storable text


def test_jsonl_depth_limit_is_configurable_and_exact(tmp_path: Path) -> None:
    path = landed(tmp_path, "{date}.jsonl", '{"a": [[1]], "s": "[[[[[[["}\n{"a": [[[1]]]}\n')
    got = records(source("jsonl", path=path, max_depth=3))
    assert got[0] == {"a": [[1]], "s": "[[[[[[["}
    assert got[1]["_parse_error"] == "line 2: nested deeper than max_depth=3"


# ---------------------------------------------------------------------------------------------
# Files: XML


def xml_records(tmp_path: Path, document: str, **options: Any) -> list[dict]:
    path = landed(tmp_path, "{date}.xml", document)
    return records(source("xml", path=path, record_tag="product", **options))


def test_xml_repeated_elements_are_kept_as_a_list(tmp_path: Path) -> None:
    got = xml_records(
        tmp_path,
        '<catalog><product id="P1"><category>a</category><category>b</category>'
        "<name>Lamp</name></product></catalog>",
    )
    assert got == [{"id": "P1", "category": ["a", "b"], "name": "Lamp"}]


def test_xml_nested_elements_are_kept_as_json_text(tmp_path: Path) -> None:
    got = xml_records(
        tmp_path,
        '<catalog><product id="P1"><price currency="EUR"><amount>10</amount></price>'
        '<tag x="1">t</tag><id>dup</id></product></catalog>',
    )
    assert got == [
        {
            "id": ["P1", "dup"],
            "price": '{"@currency": "EUR", "amount": "10"}',
            "tag": '{"@x": "1", "#text": "t"}',
        }
    ]


def test_xml_too_deep_is_a_parse_error_record(tmp_path: Path) -> None:
    deep = "<a>" * 5 + "x" + "</a>" * 5
    got = xml_records(
        tmp_path,
        f'<catalog>\n<product id="1"><name>ok</name></product>\n'
        f'<product id="2">{deep}</product>\n</catalog>',
        max_depth=3,
    )
    assert got == [
        {"id": "1", "name": "ok"},
        {
            "_parse_error": "line 3: <product> nested deeper than max_depth=3",
            "_line": 3,
            "_raw": f'<product id="2">{deep}</product>',
        },
    ]


def test_malformed_xml_fails_the_file_naming_line_and_column(tmp_path: Path) -> None:
    path = landed(tmp_path, "{date}.xml", '<catalog>\n<product id="1"><name>x</nam></product>')
    error = failure(source("xml", path=path, record_tag="product"), FileParseError)
    assert error.permanent
    assert str(error) == (
        f"source shop, day 2024-06-01: cannot parse {tmp_path}/2024-06-01.xml: line 2, "
        "column 26: mismatched tag"
    )


def test_forbidden_xml_fails_the_file(tmp_path: Path) -> None:
    path = landed(
        tmp_path,
        "{date}.xml",
        '<?xml version="1.0"?>\n<!DOCTYPE c [<!ENTITY a "aaaa">]><c><product id="1"/></c>',
    )
    error = failure(source("xml", path=path, record_tag="product"), FileParseError)
    assert error.permanent
    assert f"forbidden XML in {tmp_path}/2024-06-01.xml at line 2: DTDForbidden" in str(error)


def test_an_unset_environment_variable_is_a_permanent_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SHOP_TOKEN_UNSET", raising=False)
    src = source(
        "rest",
        base_url="http://127.0.0.1:9",
        record_path="d",
        headers={"Authorization": "Bearer ${SHOP_TOKEN_UNSET}"},
    )
    error = failure(src, PermanentFetchError)
    assert str(error) == (
        "source shop, day 2024-06-01: environment variable SHOP_TOKEN_UNSET is not set"
    )
