"""The sandbox's GitHub-style issues API and the REST connector's ``link_header`` pagination."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ingest_assets.connectors.base import PagingError
from ingest_assets.connectors.rest import parse_link_header
from ingest_assets.sandbox import Faults, Sandbox
from ingest_assets.sandbox.issues import ISSUES_PER_DAY
from ingest_assets_tests.hostile import Reply, Request, items, records, run, serve, source

REPO_ROOT = Path(__file__).resolve().parents[1]
ISSUES = "/repos/octo/hello/issues"
DAY_WINDOW = {"since": "2024-06-01T00:00:00Z", "until": "2024-06-02T00:00:00Z"}
KEYS = {
    "id",
    "number",
    "title",
    "state",
    "locked",
    "comments",
    "user",
    "labels",
    "created_at",
    "updated_at",
    "closed_at",
    "body",
}


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    with Sandbox(port=0) as server:
        yield server


def get(sb: Sandbox, path: str = ISSUES, **params: Any) -> httpx.Response:
    return httpx.get(f"{sb.url}{path}", params=params, timeout=10)


def links(response: httpx.Response) -> dict[str, str]:
    """``{rel: url}`` of a response's Link header."""
    return {
        rel: target
        for target, params in parse_link_header(response.headers.get("link", ""))
        for rel in params["rel"].split()
    }


def all_issues(sb: Sandbox, path: str = ISSUES, **params: Any) -> list[dict[str, Any]]:
    """Every issue of a request, following the Link header from page to page."""
    response = get(sb, path, **params)
    out = []
    while True:
        assert response.status_code == 200
        out.extend(response.json())
        if "next" not in links(response):
            return out
        response = httpx.get(links(response)["next"], timeout=10)


def parse_time(text: str) -> dt.datetime:
    assert len(text) == 20 and text.endswith("Z"), text
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


# ---------------------------------------------------------------------------------------------
# The endpoint


def test_pages_follow_githubs_link_header_chain(sb: Sandbox) -> None:
    base = f"{sb.url}{ISSUES}"
    query = "state=all&since=2024-06-01T00:00:00Z&until=2024-06-02T00:00:00Z&per_page=50"
    first = get(sb, state="all", **DAY_WINDOW, per_page=50)
    assert first.status_code == 200
    assert first.headers["content-type"].startswith("application/json")
    assert first.headers["link"] == (
        f'<{base}?{query}&page=2>; rel="next", <{base}?{query}&page=3>; rel="last"'
    )
    second = httpx.get(links(first)["next"])
    assert links(second) == {
        "prev": f"{base}?{query}&page=1",
        "next": f"{base}?{query}&page=3",
        "last": f"{base}?{query}&page=3",
        "first": f"{base}?{query}&page=1",
    }
    third = httpx.get(links(second)["next"])
    assert set(links(third)) == {"prev", "first"}  # the last page: no next, no last
    pages = [first.json(), second.json(), third.json()]
    assert [len(p) for p in pages] == [50, 50, 20]
    issues = [i for p in pages for i in p]
    assert len({i["id"] for i in issues}) == ISSUES_PER_DAY
    # GitHub's default order: newest first.
    assert [i["number"] for i in issues] == sorted((i["number"] for i in issues), reverse=True)
    assert [i["created_at"] for i in issues] == sorted(
        (i["created_at"] for i in issues), reverse=True
    )
    beyond = get(sb, state="all", **DAY_WINDOW, per_page=50, page=4)
    assert beyond.status_code == 200 and beyond.json() == []
    assert "next" not in links(beyond)


def test_per_page_defaults_to_30_and_is_capped_at_100(sb: Sandbox) -> None:
    default = get(sb, state="all", since="2024-06-01")
    assert len(default.json()) == 30
    assert links(default)["last"].endswith("&page=4")
    capped = get(sb, state="all", since="2024-06-01", per_page=500)
    assert len(capped.json()) == 100
    assert links(capped)["last"].endswith("per_page=500&page=2")
    whole = get(sb, state="all", since="2024-06-01", per_page=100, page=2)
    assert len(whole.json()) == 20
    # Everything on one page: no Link header at all, as on GitHub.
    assert "link" not in get(sb, state="closed", since="2024-06-01", per_page=100).headers


def test_link_urls_use_the_requests_host(sb: Sandbox) -> None:
    response = httpx.get(
        f"http://localhost:{sb.port}{ISSUES}", params={"state": "all", "since": "2024-06-01"}
    )
    assert links(response)["next"].startswith(f"http://localhost:{sb.port}{ISSUES}?")


def test_issues_are_shaped_like_githubs(sb: Sandbox) -> None:
    issues = all_issues(sb, state="all", **DAY_WINDOW, per_page=100)
    assert len(issues) == ISSUES_PER_DAY
    labels_seen: set[str] = set()
    for issue in issues:
        assert set(issue) == KEYS  # and no pull_request
        assert all(type(issue[k]) is int for k in ("id", "number", "comments"))
        assert type(issue["locked"]) is bool
        assert isinstance(issue["title"], str) and issue["title"]
        assert issue["body"] is None or isinstance(issue["body"], str)
        assert set(issue["user"]) == {"login", "id", "type"}
        assert issue["user"]["type"] in ("User", "Bot") and type(issue["user"]["id"]) is int
        assert 0 <= len(issue["labels"]) <= 3
        for label in issue["labels"]:
            assert set(label) == {"name", "color"}
            labels_seen.add(label["name"])
        assert len({label["name"] for label in issue["labels"]}) == len(issue["labels"])
    assert labels_seen == {"bug", "enhancement", "docs", "question"}
    assert {i["state"] for i in issues} == {"open", "closed"}
    assert any(i["body"] is None for i in issues) and any(i["body"] for i in issues)
    assert any(not i["labels"] for i in issues)


def test_issues_are_inside_their_day(sb: Sandbox) -> None:
    start = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
    end = start + dt.timedelta(days=1)
    for issue in all_issues(sb, state="all", **DAY_WINDOW, per_page=100):
        created, updated = parse_time(issue["created_at"]), parse_time(issue["updated_at"])
        assert start <= created < updated < end
        assert issue["id"] // 10_000 == dt.date(2024, 6, 1).toordinal()
        if issue["state"] == "open":
            assert issue["closed_at"] is None
        else:
            closed = parse_time(issue["closed_at"])
            assert created < closed <= updated


def test_the_same_request_always_gives_the_same_issues(sb: Sandbox) -> None:
    once = all_issues(sb, state="all", **DAY_WINDOW, per_page=100)
    assert all_issues(sb, state="all", **DAY_WINDOW, per_page=100) == once
    with Sandbox(port=0) as other:  # another server (another process would give the same)
        assert all_issues(other, state="all", **DAY_WINDOW, per_page=100) == once
    other_repo = all_issues(sb, "/repos/octo/world/issues", state="all", **DAY_WINDOW)
    assert [i["title"] for i in other_repo] != [i["title"] for i in once]


def test_the_window_selects_the_day(sb: Sandbox) -> None:
    june1 = all_issues(sb, state="all", **DAY_WINDOW, per_page=100)
    # A date alone, or a since without until: that UTC day.
    assert all_issues(sb, state="all", since="2024-06-01", per_page=100) == june1
    assert all_issues(sb, state="all", since="2024-06-01T00:00:00Z", per_page=100) == june1
    june2 = all_issues(sb, state="all", since="2024-06-02", per_page=100)
    assert len(june2) == ISSUES_PER_DAY
    assert {i["id"] for i in june1}.isdisjoint(i["id"] for i in june2)
    assert {i["number"] for i in june1}.isdisjoint(i["number"] for i in june2)
    assert all(i["created_at"].startswith("2024-06-02T") for i in june2)
    # Two days at once, oldest first when asked.
    both = all_issues(
        sb, state="all", since="2024-06-01", until="2024-06-03", direction="asc", per_page=100
    )
    assert [i["id"] for i in both] == sorted(i["id"] for i in june1 + june2)
    # Part of a day: the issues updated inside it (GitHub's since filters on updated_at).
    afternoon = all_issues(
        sb, state="all", since="2024-06-01T12:00:00Z", until="2024-06-01T18:00:00Z"
    )
    expected = [i for i in june1 if "2024-06-01T12:00:00Z" <= i["updated_at"] < "2024-06-01T18"]
    assert afternoon == expected and 0 < len(afternoon) < ISSUES_PER_DAY


def test_state_filters_like_github(sb: Sandbox) -> None:
    every = all_issues(sb, state="all", since="2024-06-01")
    open_ = all_issues(sb, since="2024-06-01")  # GitHub's default state is open
    closed = all_issues(sb, state="closed", since="2024-06-01")
    assert {i["state"] for i in open_} == {"open"} and {i["state"] for i in closed} == {"closed"}
    assert sorted(i["id"] for i in open_ + closed) == sorted(i["id"] for i in every)


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({}, "Parameter 'since' is required"),
        ({"since": "June 1st"}, "Parameter 'since' must be ISO 8601"),
        ({"since": "2024-06-01", "state": "merged"}, "Parameter 'state' must be one of"),
        ({"since": "2024-06-01", "per_page": "x"}, "Parameter 'per_page' must be an integer"),
        ({"since": "2024-06-02", "until": "2024-06-01"}, "'until' must not be before"),
        ({"since": "2024-01-01", "until": "2024-06-01"}, "at most 31 days"),
    ],
)
def test_bad_parameters_are_400s(sb: Sandbox, params: dict, reason: str) -> None:
    response = get(sb, **params)
    assert response.status_code == 400
    assert reason in response.json()["reason"]


def test_faults_apply_to_the_issues_path() -> None:
    with Sandbox(port=0, faults=Faults(fail_first=2)) as sb:
        assert [get(sb, since="2024-06-01").status_code for _ in range(3)] == [503, 503, 200]
        sb.set_faults(Faults(rate_limit_every=1))
        limited = get(sb, since="2024-06-01")
        assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
        assert "link" not in limited.headers
        sb.set_faults(Faults(malformed_rate=1.0))
        broken = get(sb, state="all", since="2024-06-01")
        assert broken.status_code == 200 and "link" in broken.headers
        with pytest.raises(json.JSONDecodeError):
            broken.json()
        assert sb.stats()["by_path_status"][ISSUES] == {"200": 2, "429": 1, "503": 2}


# ---------------------------------------------------------------------------------------------
# The REST connector's link_header pagination


def issues_source(url: str, **options: Any) -> Any:
    return source(
        "rest",
        base_url=url,
        path=ISSUES,
        # The partition's day: since without until is that UTC day in the sandbox.
        params={"state": "all", "since": "{date}T00:00:00Z", "per_page": 25},
        pagination={"kind": "link_header"},
        **options,
    )


@pytest.mark.parametrize("record_path", [None, ""])
def test_the_connector_reads_every_issue_of_the_day_once_in_order(
    sb: Sandbox, record_path: str | None
) -> None:
    expected = all_issues(sb, state="all", **DAY_WINDOW, per_page=100)
    batches, ctx = run(issues_source(sb.url, record_path=record_path))
    assert [len(b) for b in batches] == [25, 25, 25, 25, 20]
    assert [r for b in batches for r in b] == expected
    assert ctx.stats.requests == 5 and ctx.stats.failed_requests == 0


def test_the_connector_retries_faults_on_the_issues_path() -> None:
    with Sandbox(port=0, faults=Faults(fail_first=2, rate_limit_every=3)) as sb:
        got, ctx = run(issues_source(sb.url))
        sb.set_faults(Faults())
        expected = all_issues(sb, state="all", since="2024-06-01", per_page=100)
    assert [r for b in got for r in b] == expected
    assert ctx.stats.failed_requests == ctx.stats.retries > 2


def link_api(data: list[dict], link: Any = None, size: int = 10) -> Any:
    """A top-level-array API paged by Link header; ``link(start)`` may replace the header."""

    def route(request: Request) -> Reply:
        start = int(request.query.get("from", 0))
        headers = {}
        if start + size < len(data):
            value = f'</l?from={start + size}>; rel="next"' if link is None else link(start)
            headers["Link"] = value
        return Reply(data[start : start + size], headers=headers)

    return route


def link_source(url: str, **pagination: Any) -> Any:
    return source("rest", base_url=url, path="/l", pagination={"kind": "link_header", **pagination})


def test_several_links_quoted_and_several_rels_are_understood() -> None:
    def header(start: int) -> str:
        after = start + 10
        return (
            f'</l?from=0>; rel="first"; title="a, b; c", '
            f"<http://ignored.example/x>; rel=prev, "
            f'</l?from={after}>; REL="last  Next"; rel="first"'
        )

    with serve(link_api(items(25), link=header)) as api:
        assert records(link_source(api.url)) == items(25)
    assert [r.query.get("from") for r in api.requests] == [None, "10", "20"]


def test_another_rel_can_be_followed() -> None:
    header = lambda start: f'</l?from={start + 10}>; rel="more", </l?from=0>; rel="next"'  # noqa: E731
    with serve(link_api(items(25), link=header)) as api:
        assert records(link_source(api.url, rel="More")) == items(25)


def test_a_link_header_to_another_origin_fails_and_is_never_requested(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHOP_TOKEN", "tok-secret-1")
    with (
        serve(lambda r: Reply([{"id": 99}])) as other,
        serve(link_api(items(25), link=lambda s: f'<{other.url}/x?from=10>; rel="next"')) as api,
        pytest.raises(PagingError) as raised,
    ):
        run(
            source(
                "rest",
                base_url=api.url,
                path="/l",
                headers={"Authorization": "Bearer ${SHOP_TOKEN}"},
                pagination={"kind": "link_header"},
            )
        )
    error = raised.value
    assert error.permanent
    assert str(error).startswith(
        f"source shop, day 2024-06-01: page 1 links to {other.url}/x, another origin than "
        "the configured base_url; refusing to follow it"
    )
    assert other.requests == []  # neither records taken from it nor the token sent to it
    assert api.requests[0].headers["authorization"] == "Bearer tok-secret-1"
    assert len(api.requests) == 1
    assert "tok-secret-1" not in str(error)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (lambda s: '</l?from=10>; rel="next"', "page 2 links to the same next page as page 1"),
        (lambda s: '</l?from=10; rel="next"', "page 1 has a Link header that cannot be parsed"),
        (lambda s: '</l?from=10>; rel="next", </l?from=11>; rel="next"', "2 different"),
    ],
)
def test_broken_link_headers_fail_loudly(header: Any, message: str) -> None:
    with serve(link_api(items(25), link=header)) as api, pytest.raises(PagingError) as raised:
        run(link_source(api.url))
    assert message in str(raised.value)


def test_max_pages_is_an_error_not_a_cut() -> None:
    with serve(link_api(items(25))) as api, pytest.raises(PagingError, match="max_pages=2"):
        run(link_source(api.url, max_pages=2))


def test_parse_link_header() -> None:
    assert parse_link_header("") == []
    assert parse_link_header(
        '<https://api.github.com/r/issues?page=2>; rel="next", '
        '<https://api.github.com/r/issues?a=1,2&page=5>; rel="last"'
    ) == [
        ("https://api.github.com/r/issues?page=2", {"rel": "next"}),
        ("https://api.github.com/r/issues?a=1,2&page=5", {"rel": "last"}),
    ]
    assert parse_link_header('<a>;rel=next;title="x\\"y, z";rel=prev,<b> ; rel = "prev next"') == [
        ("a", {"rel": "next", "title": 'x"y, z'}),
        ("b", {"rel": "prev next"}),
    ]
    for broken in ("a; rel=next", "<a>; rel=next <b>", '<a>; rel="next', "<a; rel=next"):
        with pytest.raises(ValueError):
            parse_link_header(broken)


# ---------------------------------------------------------------------------------------------
# The switch

PROBE = """
import json, os, httpx
from ingest_assets.sandbox.switch import use_sandbox_if_requested
use_sandbox_if_requested()
url = os.environ["GITHUB_API_URL"]
r = httpx.get(url + "/repos/o/r/issues", params={"state": "all", "since": "2024-06-01"})
print(json.dumps({"url": url, "same": url == os.environ["DUMMYJSON_BASE_URL"],
                  "status": r.status_code, "count": len(r.json())}))
"""


def test_the_switch_points_github_api_url_at_the_sandbox(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGEST_")}
    for name in ("DUMMYJSON_BASE_URL", "OPEN_METEO_BASE_URL", "GITHUB_API_URL"):
        env.pop(name, None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(INGEST_SANDBOX="1", NO_PROXY="127.0.0.1,localhost")
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["url"].startswith("http://127.0.0.1:") and seen["same"]
    assert seen["status"] == 200 and seen["count"] == 30
