"""Deterministic GitHub-style issues for the sandbox: ``GET /repos/{owner}/{repo}/issues``.

Every (owner, repo, UTC day) has :data:`ISSUES_PER_DAY` issues, generated from a seed of the
three, so the same request always gives the same issues. An issue is created, updated and (if
closed) closed inside its day; its ``id`` is ``day.toordinal() * 10000 + n`` (unique across
days) and its ``number`` grows with its creation time, as on GitHub.

Query parameters, as on GitHub's "list repository issues" unless noted:

* ``state``: ``open`` (GitHub's default), ``closed`` or ``all``.
* ``since``: ISO 8601 (``2024-06-01T00:00:00Z``) or a date (``2024-06-01``, its midnight UTC);
  only issues updated at or after it. Required here: the sandbox serves windows, not history.
* ``until`` (a sandbox extension, exclusive): the end of the window, same formats. Without it
  the window ends at the next UTC midnight after ``since``: ``since=2024-06-01`` is that day.
  A window spans at most :data:`MAX_WINDOW_DAYS` days.
* ``sort``: ``created`` (default), ``updated`` or ``comments``; ``direction``: ``desc``
  (default) or ``asc``. Ties are broken by ``number`` in the same direction.
* ``per_page``: default 30, at most 100 (larger values are capped, 0 means the default);
  ``page``: from 1 (0 counts as 1).

Pagination is by ``Link`` header as on GitHub: ``rel="prev"``, ``rel="next"``, ``rel="last"``
and ``rel="first"`` absolute URLs (built from the request's ``Host``), no header when one page
holds everything, no ``rel="next"`` on the last page or beyond it (a page past the end is
``[]``). Pull requests are not generated, so no issue has a ``pull_request`` key.

Stdlib only (no Dagster import), like the rest of the sandbox.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import math
import random
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

__all__ = [
    "ISSUES_PER_DAY",
    "InvalidParameter",
    "daily_issues",
    "issues_page",
    "issues_path",
]

ISSUES_PER_DAY = 120
DEFAULT_PER_PAGE = 30
MAX_PER_PAGE = 100
MAX_WINDOW_DAYS = 31
#: Days that have issues (GitHub opened in 2008); windows outside hold none.
FIRST_DAY = dt.date(2008, 1, 1)
LAST_DAY = dt.date(2100, 12, 31)
#: An issue is created this many seconds before the day's end at the latest, so that it can be
#: updated and closed after it, inside the day.
_LATEST_CREATION = 86_400 - 600

LABELS: tuple[dict[str, str], ...] = (
    {"name": "bug", "color": "d73a4a"},
    {"name": "enhancement", "color": "a2eeef"},
    {"name": "docs", "color": "0075ca"},
    {"name": "question", "color": "d876e3"},
)
_USERS: tuple[dict[str, Any], ...] = (
    {"login": "octocat", "id": 583231, "type": "User"},
    {"login": "mona-lisa", "id": 1024025, "type": "User"},
    {"login": "hubot", "id": 480938, "type": "User"},
    {"login": "ada-lovelace", "id": 3141592, "type": "User"},
    {"login": "grace-hopper", "id": 2718281, "type": "User"},
    {"login": "linus-t", "id": 1618033, "type": "User"},
    {"login": "margaret-h", "id": 1414213, "type": "User"},
    {"login": "dmitri-k", "id": 1732050, "type": "User"},
    {"login": "zoe-ng", "id": 2236067, "type": "User"},
    {"login": "dependabot[bot]", "id": 49699333, "type": "Bot"},
)
_SUBJECTS = (
    "the CSV export",
    "pagination",
    "the login page",
    "the retry policy",
    "timezone handling",
    "the CLI",
    "schema drift warnings",
    "the docs build",
    "rate limiting",
    "the dashboard",
    "unicode in titles",
    "the config loader",
)
_PROBLEMS = (
    "{s} crashes on empty input",
    "{s} is slow for large days",
    "Support for {s} in the API",
    "Document {s}",
    "How do I configure {s}?",
    "{s} ignores the environment",
    "Flaky test around {s}",
    "Improve error message of {s}",
    "Bump dependency used by {s}",
    "Regression in {s} since 2.3",
)
_SENTENCES = (
    "Steps to reproduce are below.",
    "This started after the last upgrade.",
    "Expected the records to arrive once; they arrived twice.",
    "Happy to open a PR if this is welcome.",
    "Logs attached.\n\n```\nTraceback (most recent call last):\n  ...\n```",
    "See also the discussion in the forum.",
    "Works on Linux, fails on macOS.",
    "Is there a workaround?",
    "Naïve question, but: is this intended? 🤔",
)


class InvalidParameter(ValueError):
    """A query parameter is missing or invalid (the server answers 400)."""


def issues_path(path: str) -> tuple[str, str] | None:
    """``(owner, repo)`` when ``path`` is ``/repos/{owner}/{repo}/issues``, else None."""
    parts = path.split("/")
    if len(parts) == 5 and parts[0] == "" and parts[1] == "repos" and parts[4] == "issues":
        owner, repo = parts[2], parts[3]
        if owner and repo:
            return owner, repo
    return None


def _rng(*parts: object) -> random.Random:
    key = "|".join(repr(p) for p in parts).encode("utf-8")
    return random.Random(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big"))


def _iso(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@functools.lru_cache(maxsize=128)
def _generated(owner: str, repo: str, day: dt.date) -> tuple[tuple[dict[str, Any], int], ...]:
    """The day's issues with their ``updated_at`` as a POSIX second (for window filters)."""
    rng = _rng("issues", owner.lower(), repo.lower(), day.isoformat())
    midnight = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    # Distinct creation seconds, in order: numbers grow with creation time, as on GitHub.
    created = sorted(rng.sample(range(_LATEST_CREATION), ISSUES_PER_DAY))
    first_number = (day - FIRST_DAY).days * ISSUES_PER_DAY + 1
    out: list[tuple[dict[str, Any], int]] = []
    for n, created_s in enumerate(created):
        closed = rng.random() < 0.4
        # Updated (and closed) later the same day; at least a second after the creation.
        updated_s = rng.randint(created_s + 1, 86_399)
        closed_s = rng.randint(created_s + 1, updated_s) if closed else None
        subject = rng.choice(_SUBJECTS)
        title = rng.choice(_PROBLEMS).format(s=subject)
        title = title[0].upper() + title[1:]
        labels = [dict(label) for label in rng.sample(LABELS, rng.choice((0, 1, 1, 2, 3)))]
        body = None if rng.random() < 0.2 else " ".join(rng.sample(_SENTENCES, rng.randint(1, 3)))
        issue = {
            "id": day.toordinal() * 10_000 + n,
            "number": first_number + n,
            "title": title,
            "state": "closed" if closed else "open",
            "locked": rng.random() < 0.05,
            "comments": min(60, int(rng.expovariate(1 / 3.0))),
            "user": dict(rng.choice(_USERS)),
            "labels": labels,
            "created_at": _iso(midnight + dt.timedelta(seconds=created_s)),
            "updated_at": _iso(midnight + dt.timedelta(seconds=updated_s)),
            "closed_at": (
                None if closed_s is None else _iso(midnight + dt.timedelta(seconds=closed_s))
            ),
            "body": body,
        }
        out.append((issue, int(midnight.timestamp()) + updated_s))
    return tuple(out)


def daily_issues(owner: str, repo: str, day: dt.date) -> list[dict[str, Any]]:
    """The :data:`ISSUES_PER_DAY` issues of one repository and UTC day, oldest first (copies)."""
    if not FIRST_DAY <= day <= LAST_DAY:
        return []
    return [_copy(issue) for issue, _ in _generated(owner, repo, day)]


def _copy(issue: dict[str, Any]) -> dict[str, Any]:
    return {
        **issue,
        "user": dict(issue["user"]),
        "labels": [dict(label) for label in issue["labels"]],
    }


def _last(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1].strip() if values else None


def _moment(raw: str, name: str) -> tuple[dt.datetime, bool]:
    """A timestamp parameter as an aware UTC datetime, and whether it was a date only."""
    try:
        if len(raw) == 10:
            day = dt.date.fromisoformat(raw)
            return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC), True
        moment = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidParameter(
            f"Parameter '{name}' must be ISO 8601 (YYYY-MM-DDTHH:MM:SSZ or YYYY-MM-DD), got '{raw}'"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC), False


def _window(query: Mapping[str, list[str]]) -> tuple[dt.datetime, dt.datetime]:
    raw_since = _last(query, "since")
    if not raw_since:
        raise InvalidParameter(
            "Parameter 'since' is required by the sandbox (e.g. since=2024-06-01T00:00:00Z)"
        )
    since, _ = _moment(raw_since, "since")
    raw_until = _last(query, "until")
    if raw_until:
        until, _ = _moment(raw_until, "until")
    else:
        until = dt.datetime.combine(since.date() + dt.timedelta(days=1), dt.time(), dt.UTC)
    if until < since:
        raise InvalidParameter("Parameter 'until' must not be before 'since'")
    if until - since > dt.timedelta(days=MAX_WINDOW_DAYS):
        raise InvalidParameter(f"The sandbox serves at most {MAX_WINDOW_DAYS} days per request")
    return since, until


def _int(query: Mapping[str, list[str]], name: str, default: int) -> int:
    raw = _last(query, name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidParameter(f"Parameter '{name}' must be an integer, got '{raw}'") from None
    if value < 0:
        raise InvalidParameter(f"Parameter '{name}' must be >= 0, got '{raw}'")
    return value


def _choice(query: Mapping[str, list[str]], name: str, allowed: tuple[str, ...]) -> str:
    raw = (_last(query, name) or allowed[0]).lower()
    if raw not in allowed:
        raise InvalidParameter(
            f"Parameter '{name}' must be one of {', '.join(allowed)}, got '{raw}'"
        )
    return raw


def _selected(
    owner: str, repo: str, since: dt.datetime, until: dt.datetime, state: str
) -> list[dict[str, Any]]:
    lo, hi = since.timestamp(), until.timestamp()
    day = max(since.date(), FIRST_DAY)
    found: list[dict[str, Any]] = []
    # ``until`` is exclusive: a window ending at midnight does not touch the next day.
    end = min((until - dt.timedelta(microseconds=1)).date(), LAST_DAY)
    while day <= end:
        for issue, updated in _generated(owner, repo, day):
            if lo <= updated < hi and state in ("all", issue["state"]):
                found.append(issue)
        day += dt.timedelta(days=1)
    return found


def issues_page(
    owner: str, repo: str, query: Mapping[str, list[str]], page_url: str
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Answer ``GET /repos/{owner}/{repo}/issues``: one page of issues and its headers.

    Args:
        owner, repo: from the path.
        query: the parsed query string (``parse_qs`` with blank values kept).
        page_url: the absolute URL of the request without its query string
            (``http://{Host}/repos/{owner}/{repo}/issues``); the ``Link`` URLs are built on it.

    Raises:
        InvalidParameter: on a missing or invalid parameter.
    """
    state = _choice(query, "state", ("open", "closed", "all"))
    sort = _choice(query, "sort", ("created", "updated", "comments"))
    direction = _choice(query, "direction", ("desc", "asc"))
    since, until = _window(query)
    per_page = min(_int(query, "per_page", DEFAULT_PER_PAGE) or DEFAULT_PER_PAGE, MAX_PER_PAGE)
    page = max(1, _int(query, "page", 1))

    issues = _selected(owner, repo, since, until, state)
    field = {"created": "created_at", "updated": "updated_at", "comments": "comments"}[sort]
    issues.sort(key=lambda i: (i[field], i["number"]), reverse=direction == "desc")
    last_page = max(1, math.ceil(len(issues) / per_page))
    body = [_copy(i) for i in issues[(page - 1) * per_page : page * per_page]]

    def url(number: int) -> str:
        # The request's own parameters, in its order, with this page number.
        pairs = [(k, v) for k, values in query.items() if k != "page" for v in values]
        pairs.append(("page", str(number)))
        return f"{page_url}?{urlencode(pairs, safe=':', quote_via=quote)}"

    links: list[str] = []
    if page > 1:
        links.append(f'<{url(min(page - 1, last_page))}>; rel="prev"')
    if page < last_page:
        links.append(f'<{url(page + 1)}>; rel="next"')
        links.append(f'<{url(last_page)}>; rel="last"')
    if page > 1:
        links.append(f'<{url(1)}>; rel="first"')
    return body, ({"Link": ", ".join(links)} if links else {})
