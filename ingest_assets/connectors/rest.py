"""The ``rest`` connector: JSON over HTTP, paginated, fanned out over parameter sets, concurrent.

Pagination strategies are small classes (as in dlt's REST client): each knows how to ask for
the first page and what to ask next. When the first page reveals the total, the remaining
pages are fetched concurrently, and still handed over in page order.

Paging ends only on a positive signal of the end: an empty page, a page shorter than the
earlier ones, no next cursor or link (in the body, or in the ``Link`` header for
``link_header``), or the announced total reached and consistent with what was read. Anything
else (``max_pages`` reached, a page or cursor seen before, a total the data contradicts, a next
link to another origin, a ``Link`` header that cannot be parsed) is a ``PagingError``: records
are never cut silently.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Annotated, Any, Literal
from urllib.parse import urljoin

import httpx
from pydantic import Field, field_validator, model_validator

from ingest_assets.config import render_template
from ingest_assets.connectors.base import (
    SECRET_NAME,
    Batch,
    Connector,
    ConnectorOptions,
    FetchContext,
    Page,
    PagingError,
    PermanentFetchError,
)
from ingest_assets.connectors.http import DEFAULT_MAX_BODY_BYTES, ResilientClient
from ingest_assets.connectors.registry import register
from ingest_assets.connectors.streams import ordered_fan_in, ordered_gather


class LimitOffset(ConnectorOptions):
    kind: Literal["limit_offset"]
    limit_param: str = "limit"
    offset_param: str = "offset"
    page_size: int = Field(100, ge=1)
    total_path: str | None = "total"
    max_pages: int = Field(10_000, ge=1)


class PageNumber(ConnectorOptions):
    kind: Literal["page_number"]
    page_param: str = "page"
    size_param: str | None = None
    page_size: int = Field(100, ge=1)
    first_page: int = 1
    total_pages_path: str | None = None
    max_pages: int = Field(10_000, ge=1)


class Cursor(ConnectorOptions):
    kind: Literal["cursor"]
    cursor_param: str = "cursor"
    cursor_path: str = "next_cursor"
    max_pages: int = Field(10_000, ge=1)


class NextLink(ConnectorOptions):
    kind: Literal["next_link"]
    next_path: str = "next"
    max_pages: int = Field(10_000, ge=1)


class LinkHeader(ConnectorOptions):
    """Follow the response's ``Link`` header (RFC 8288), as GitHub pages: ``rel="next"``."""

    kind: Literal["link_header"]
    rel: str = "next"
    max_pages: int = Field(10_000, ge=1)

    @field_validator("rel")
    @classmethod
    def _one_relation(cls, value: str) -> str:
        if not value.strip() or any(c.isspace() for c in value.strip()):
            raise ValueError("rel must be one relation type, such as next")
        return value.strip().lower()  # relation types compare case-insensitively


Pagination = Annotated[
    LimitOffset | PageNumber | Cursor | NextLink | LinkHeader, Field(discriminator="kind")
]


class RestOptions(ConnectorOptions):
    base_url: str
    path: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    record_path: str | None = None
    record_layout: Literal["rows", "columnar"] = "rows"
    pagination: Pagination | None = None
    fan_out: list[dict[str, Any]] = Field(default_factory=list)
    attach: list[str] = Field(default_factory=list)
    max_body_bytes: int = Field(
        DEFAULT_MAX_BODY_BYTES,
        ge=1,
        description="largest response body, decompressed; larger fails the fetch (permanent)",
    )
    max_depth: int | None = Field(
        None,
        ge=1,
        description="deepest nesting of one record; deeper fails the fetch (permanent). "
        "None: as deep as the JSON parser goes (about 1,000 levels)",
    )

    @model_validator(mode="after")
    def _attach_from_fan_out(self) -> RestOptions:
        for name in self.attach:
            missing = [i for i, item in enumerate(self.fan_out) if name not in item]
            if missing:
                raise ValueError(f"attach field {name!r} is missing from fan_out item {missing[0]}")
        return self


# Headers and query parameters that carry credentials go to the configured origin only. Any
# whose configured value is an environment reference counts too (that is where secrets live).
def carries_secret(name: str, configured: Any) -> bool:
    return bool(SECRET_NAME.search(name)) or (isinstance(configured, str) and "${" in configured)


def dig(document: Any, path: str | None) -> Any:
    """Follow a dotted path into a JSON document; None for a missing step."""
    if not path:
        return document
    for part in path.split("."):
        if not isinstance(document, dict):
            return None
        document = document.get(part)
    return document


def render(value: Any, values: dict[str, Any]) -> Any:
    """Fill ``{name}`` references in strings; other values pass through."""
    return render_template(value, values) if isinstance(value, str) else value


def deeper_than(value: Any, limit: int) -> bool:
    """Whether a parsed JSON value nests arrays and objects more than ``limit`` deep."""
    level: list[tuple[Any, int]] = [(value, 1)]
    while level:
        node, depth = level.pop()
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                level.append((child, depth + 1))
    return False


def position_of(extra: dict[str, Any]) -> str:
    """A request among its source's, by its paging parameters: ``limit=50, offset=100``."""

    def shown(value: Any) -> str:
        text = str(value)
        return text if len(text) <= 40 else text[:39] + "…"

    return ", ".join(f"{k}={shown(v)}" for k, v in extra.items())


def rows_from(body: Any, record_path: str | None, layout: str, where: str) -> list[dict[str, Any]]:
    """The records of one response body, in row or columnar (dict of equal-length arrays) layout."""
    found = dig(body, record_path)
    if found is None:
        raise PermanentFetchError(f"response from {where} has no {record_path!r} in it")
    if layout == "columnar":
        if not isinstance(found, dict):
            raise PermanentFetchError(f"{record_path!r} from {where} is not an object of arrays")
        lengths = {len(v) for v in found.values() if isinstance(v, list)}
        if len(lengths) > 1:
            raise PermanentFetchError(
                f"{record_path!r} arrays from {where} differ in length: {sorted(lengths)}"
            )
        count = lengths.pop() if lengths else 0
        return [
            {k: (v[i] if isinstance(v, list) else v) for k, v in found.items()}
            for i in range(count)
        ]
    if not isinstance(found, list):
        raise PermanentFetchError(f"{record_path or 'the body'} from {where} is not a list")
    return [r if isinstance(r, dict) else {"value": r} for r in found]


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_BARE = re.compile(r'[^\s;,"]*')


def parse_link_header(value: str) -> list[tuple[str, dict[str, str]]]:
    """The links of one ``Link`` header value (RFC 8288): ``[(target, {param: value})]``.

    Several comma-separated links, parameters quoted or not (a quoted one may hold ``,`` and
    ``;``), names lower-cased, and only the first occurrence of a parameter kept (RFC 8288
    3.3: later ``rel`` parameters are ignored). ``rel="next last"`` is kept as one value: split
    it on whitespace.

    Raises:
        ValueError: on text that is not a Link header.
    """
    links: list[tuple[str, dict[str, str]]] = []
    i, n = 0, len(value)

    def skip(chars: str) -> None:
        nonlocal i
        while i < n and value[i] in chars:
            i += 1

    while True:
        skip(" \t,")
        if i >= n:
            return links
        if value[i] != "<":
            raise ValueError(f"expected '<' at character {i}")
        end = value.find(">", i)
        if end < 0:
            raise ValueError(f"unclosed '<' at character {i}")
        target, i = value[i + 1 : end].strip(), end + 1
        params: dict[str, str] = {}
        while True:
            skip(" \t")
            if i >= n or value[i] == ",":
                break
            if value[i] != ";":
                raise ValueError(f"expected ';' or ',' at character {i}")
            i += 1
            skip(" \t")
            name = _TOKEN.match(value, i)
            if name is None:
                raise ValueError(f"expected a parameter name at character {i}")
            i = name.end()
            skip(" \t")
            text = ""
            if i < n and value[i] == "=":
                i += 1
                skip(" \t")
                quoted = _QUOTED.match(value, i)
                if quoted is not None:
                    text = re.sub(r"\\(.)", r"\1", quoted.group(1))
                    i = quoted.end()
                elif i < n and value[i] == '"':
                    raise ValueError(f"unclosed quoted string at character {i}")
                else:
                    bare = _BARE.match(value, i)
                    assert bare is not None  # matches the empty string at worst
                    text, i = bare.group(), bare.end()
            params.setdefault(name.group().lower(), text)
        links.append((target, params))


def whole_number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def fingerprint(rows: list[dict[str, Any]]) -> bytes:
    """A page's identity: its length and its first, middle and last records.

    Cheap at any page size (no full serialisation), and enough to see a server that ignores
    the offset or cursor and answers the same page again.
    """
    sample = [len(rows), rows[0], rows[len(rows) // 2], rows[-1]]
    text = json.dumps(sample, sort_keys=True, default=repr)
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


class PageGuard:
    """What one paged fetch has seen, so that a repeat or a cap fails loudly."""

    def __init__(self, where: str, max_pages: int) -> None:
        self.where = where
        self.max_pages = max_pages
        self.pages = 0
        self.widest = 0
        self.seen: dict[bytes, str] = {}

    def check(self, label: str, rows: list[dict[str, Any]]) -> None:
        """Count a page; fail if it repeats the records of an earlier one."""
        self.pages += 1
        if rows:
            key = fingerprint(rows)
            if key in self.seen:
                raise PagingError(
                    f"{label} of {self.where} repeats the records of {self.seen[key]}: "
                    "the server ignores the paging parameter or pages shifted"
                )
            self.seen[key] = label
        self.widest = max(self.widest, len(rows))

    def is_short(self, rows: list[dict[str, Any]]) -> bool:
        """An empty page, or one shorter than an earlier page of this fetch: the end."""
        return not rows or len(rows) < self.widest

    def allow(self, label: str) -> None:
        """Before asking for another page: fail once ``max_pages`` pages have been read."""
        if self.pages >= self.max_pages:
            raise PagingError(
                f"max_pages={self.max_pages} reached before {label} of {self.where} and the "
                "source has not signalled its end; raise max_pages"
            )

    def fail(self, message: str) -> PagingError:
        return PagingError(f"{message} ({self.where})")


Get = Callable[..., Awaitable[tuple[Any, list[dict[str, Any]]]]]
# Also the response headers: (body, records, headers).
GetPage = Callable[..., Awaitable[tuple[Any, list[dict[str, Any]], httpx.Headers]]]
# The next link a page names (relative or absolute), or None at the end.
NextOf = Callable[[Any, httpx.Headers], str | None]


@register
class RestConnector(Connector):
    """GET JSON records from an HTTP API (see ``RestOptions``)."""

    kind = "rest"
    Options = RestOptions
    options: RestOptions

    async def fetch(self, ctx: FetchContext) -> AsyncIterator[Batch]:
        opts = self.options
        configured = {**self.source.http.headers, **opts.headers}
        secret = [name for name, value in configured.items() if carries_secret(name, value)]
        async with ResilientClient(
            self.source.http,
            ctx.stats,
            ctx.log,
            self.resolved(configured, ctx),
            origin=self.resolved(opts.base_url, ctx),
            secret_headers=secret,
            checkpoint=ctx.checkpoint,
            rate_key=self.source.name,
            secrets=self.secrets(ctx),
            max_body_bytes=opts.max_body_bytes,
        ) as client:
            producers = [
                lambda item=item: self._one_request_set(client, ctx, item)
                for item in opts.fan_out or [{}]
            ]
            # Fan-out items (cities) come out in config order, each one's pages in page order.
            limit = self.source.http.max_concurrency
            async with aclosing(ordered_fan_in(producers, limit)) as batches:
                async for batch in batches:
                    yield batch

    async def _one_request_set(
        self, client: ResilientClient, ctx: FetchContext, item: dict[str, Any]
    ) -> AsyncIterator[Batch]:
        opts = self.options
        values = ctx.template_values(**item)
        # Templates first, then ${ENV}: an environment value is sent as it is, never rendered.
        url = self.resolved(opts.base_url, ctx).rstrip("/") + self.resolved(
            render(opts.path, values), ctx
        )
        params = {k: self.resolved(render(v, values), ctx) for k, v in opts.params.items()}
        secret_params = {k: params[k] for k, v in opts.params.items() if carries_secret(k, v)}
        extra = {name: item[name] for name in opts.attach}
        label = ", ".join(f"{k}={v}" for k, v in extra.items()) or self.source.name
        async for rows in self._pages(client, url, params, secret_params):
            ctx.progress(f"{label}: {len(rows)} records")
            yield rows.keep_refs({**extra, **row} for row in rows) if extra else rows

    async def _pages(
        self,
        client: ResilientClient,
        url: str,
        params: dict[str, Any],
        secret_params: dict[str, Any],
    ) -> AsyncIterator[list[dict[str, Any]]]:
        opts = self.options
        page = opts.pagination
        where = client.shown(url)

        async def get_page(
            extra: dict[str, Any], at: str | None = None, position: str = ""
        ) -> tuple[Any, list[dict[str, Any]], httpx.Headers]:
            target = at or url
            query = {**params, **extra} if at is None else secret_params
            position = position or position_of(extra)
            body, headers, digest = await client.get_json(target, query, position)
            shown = client.shown(target) + (f" ({position})" if position else "")
            found = rows_from(body, opts.record_path, opts.record_layout, shown)
            rows = Page(found, [f"{digest}#{i}" for i in range(len(found))])
            if opts.max_depth is not None:
                deep = next((i for i, r in enumerate(rows) if deeper_than(r, opts.max_depth)), None)
                if deep is not None:
                    raise PermanentFetchError(
                        f"record {deep + 1} from {shown} is nested deeper than "
                        f"max_depth={opts.max_depth}"
                    )
            return body, rows, headers

        async def get(
            extra: dict[str, Any], at: str | None = None
        ) -> tuple[Any, list[dict[str, Any]]]:
            body, rows, _ = await get_page(extra, at)
            return body, rows

        if page is None:
            yield (await get({}))[1]
            return
        guard = PageGuard(where, page.max_pages)
        concurrency = self.source.http.max_concurrency
        if isinstance(page, LimitOffset):
            pages = self._limit_offset(page, guard, get, concurrency)
        elif isinstance(page, PageNumber):
            pages = self._page_number(page, guard, get, concurrency)
        elif isinstance(page, Cursor):
            pages = self._cursor(page, guard, get)
        elif isinstance(page, NextLink):
            pages = self._follow_links(guard, get_page, client, url, self._body_link(page, guard))
        else:
            pages = self._follow_links(guard, get_page, client, url, self._header_link(page, guard))
        async for rows in pages:
            yield rows

    async def _limit_offset(
        self, page: LimitOffset, guard: PageGuard, get: Get, concurrency: int
    ) -> AsyncIterator[list[dict[str, Any]]]:
        def at(offset: int) -> dict[str, Any]:
            return {page.limit_param: page.page_size, page.offset_param: offset}

        body, rows = await get(at(0))
        guard.check("the page at offset 0", rows)
        total = whole_number(dig(body, page.total_path)) if page.total_path else None
        if total is None:
            # No total: ask until a page is empty or shorter than the earlier ones.
            yield rows
            offset = len(rows)
            while rows:
                label = f"the page at offset {offset}"
                guard.allow(label)
                widest = guard.widest
                _, rows = await get(at(offset))
                guard.check(label, rows)
                if rows:
                    yield rows
                if not rows or len(rows) < widest:
                    return
                offset += len(rows)
            return
        if total < 0 or len(rows) > total or (total > 0 and not rows):
            raise guard.fail(
                f"the announced total {page.total_path}={total} is contradicted by the page at "
                f"offset 0, which holds {len(rows)} records"
            )
        # A server may cap pages below the size asked for: step by what it gives.
        step = len(rows) if 0 < len(rows) < page.page_size else page.page_size
        offsets = range(step, total, step)
        if 1 + len(offsets) > page.max_pages:
            raise guard.fail(
                f"the announced total {total} needs {1 + len(offsets)} pages of {step}, "
                f"more than max_pages={page.max_pages}; raise max_pages"
            )
        yield rows
        last = rows

        async def one(offset: int) -> tuple[int, list[dict[str, Any]]]:
            return offset, (await get(at(offset)))[1]

        calls = [lambda o=o: one(o) for o in offsets]
        # aclosing: a failed check cancels the pages still in flight at once.
        async with aclosing(ordered_gather(calls, concurrency)) as pages:
            async for offset, rows in pages:
                label = f"the page at offset {offset}"
                guard.check(label, rows)
                expected = min(step, total - offset)
                if len(rows) != expected:
                    raise guard.fail(
                        f"{label} holds {len(rows)} records where the announced total {total} "
                        f"means {expected}: the total or the data changed while paging"
                    )
                yield rows
                last = rows
        # A full last page leaves the total as the only end signal: confirm it with one more
        # page. (One short page that matches the total is two signals already.)
        if total and len(last) == step and (step == page.page_size or total > step):
            _, beyond = await get(at(total))
            if beyond:
                raise guard.fail(
                    f"the announced total {total} is contradicted: the page at offset {total} "
                    f"holds {len(beyond)} more records"
                )

    async def _page_number(
        self, page: PageNumber, guard: PageGuard, get: Get, concurrency: int
    ) -> AsyncIterator[list[dict[str, Any]]]:
        size = {page.size_param: page.page_size} if page.size_param else {}

        def at(number: int) -> dict[str, Any]:
            return {page.page_param: number, **size}

        first = page.first_page
        body, rows = await get(at(first))
        guard.check(f"page {first}", rows)
        yield rows
        total_pages = (
            whole_number(dig(body, page.total_pages_path)) if page.total_pages_path else None
        )
        if total_pages is None:
            number = first
            while rows:
                number += 1
                label = f"page {number}"
                guard.allow(label)
                widest = guard.widest
                _, rows = await get(at(number))
                guard.check(label, rows)
                if rows:
                    yield rows
                if not rows or len(rows) < widest:
                    return
            return
        if total_pages < 0 or (total_pages == 0 and rows) or (total_pages > 0 and not rows):
            raise guard.fail(
                f"the announced page count {page.total_pages_path}={total_pages} is "
                f"contradicted by page {first}, which holds {len(rows)} records"
            )
        if total_pages > page.max_pages:
            raise guard.fail(
                f"the announced page count {total_pages} is more than "
                f"max_pages={page.max_pages}; raise max_pages"
            )
        full = len(rows)
        last = rows

        async def one(number: int) -> tuple[int, list[dict[str, Any]]]:
            return number, (await get(at(number)))[1]

        calls = [lambda n=n: one(n) for n in range(first + 1, first + total_pages)]
        async with aclosing(ordered_gather(calls, concurrency)) as pages:
            async for number, rows in pages:
                label = f"page {number}"
                guard.check(label, rows)
                is_last = number == first + total_pages - 1
                if (not is_last and len(rows) != full) or not rows or len(rows) > full:
                    raise guard.fail(
                        f"{label} of the announced {total_pages} holds {len(rows)} records where "
                        f"page {first} held {full}: the page count or the data changed while paging"
                    )
                yield rows
                last = rows
        full_page = total_pages > 1 or (page.size_param is not None and full == page.page_size)
        if last and len(last) == full and full_page:
            number = first + total_pages
            _, beyond = await get(at(number))
            if beyond:
                raise guard.fail(
                    f"the announced page count {total_pages} is contradicted: page {number} "
                    f"holds {len(beyond)} more records"
                )

    async def _cursor(
        self, page: Cursor, guard: PageGuard, get: Get
    ) -> AsyncIterator[list[dict[str, Any]]]:
        body, rows = await get({})
        guard.check("page 1", rows)
        yield rows
        given: dict[str, int] = {}
        while (token := dig(body, page.cursor_path)) not in (None, "", False):
            if not isinstance(token, str | int) or isinstance(token, bool):
                raise guard.fail(f"page {guard.pages} has a cursor that is not text or a number")
            if str(token) in given:
                raise guard.fail(
                    f"page {guard.pages} gives the same next cursor as page {given[str(token)]}"
                )
            given[str(token)] = guard.pages
            label = f"page {guard.pages + 1}"
            guard.allow(label)
            body, rows = await get({page.cursor_param: token})
            guard.check(label, rows)
            if rows:
                yield rows

    @staticmethod
    def _body_link(page: NextLink, guard: PageGuard) -> NextOf:
        """The next link of ``next_link``: text at ``next_path`` in the body."""

        def next_of(body: Any, headers: httpx.Headers) -> str | None:
            link = dig(body, page.next_path)
            if link in (None, "", False):
                return None
            if not isinstance(link, str):
                raise guard.fail(f"page {guard.pages} has a next link that is not text")
            return link

        return next_of

    @staticmethod
    def _header_link(page: LinkHeader, guard: PageGuard) -> NextOf:
        """The next link of ``link_header``: the ``Link`` header's link of relation ``rel``."""

        def next_of(body: Any, headers: httpx.Headers) -> str | None:
            targets: list[str] = []
            for value in headers.get_list("link"):
                try:
                    links = parse_link_header(value)
                except ValueError as exc:
                    # Not an end signal: reading past it could cut the records silently.
                    raise guard.fail(
                        f"page {guard.pages} has a Link header that cannot be parsed ({exc})"
                    ) from None
                for target, params in links:
                    if page.rel in params.get("rel", "").lower().split() and target not in targets:
                        targets.append(target)
            if len(targets) > 1:
                raise guard.fail(
                    f"page {guard.pages} has {len(targets)} different rel={page.rel!r} links in "
                    "its Link header"
                )
            return targets[0] if targets else None

        return next_of

    async def _follow_links(
        self,
        guard: PageGuard,
        get_page: GetPage,
        client: ResilientClient,
        url: str,
        next_of: NextOf,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """``next_link`` and ``link_header``: follow each page's next link until there is none."""
        body, rows, headers = await get_page({})
        guard.check("page 1", rows)
        yield rows
        followed: dict[str, int] = {}
        current = url
        while (link := next_of(body, headers)) is not None:
            current = urljoin(current, link)
            if not client.trusted(current):
                # A link from a response is data: following it would send our credentials
                # to (or take records from) a host nobody configured.
                raise guard.fail(
                    f"page {guard.pages} links to {client.shown(current)}, another origin than "
                    "the configured base_url; refusing to follow it"
                )
            if current in followed:
                raise guard.fail(
                    f"page {guard.pages} links to the same next page as page {followed[current]}"
                )
            followed[current] = guard.pages
            label = f"page {guard.pages + 1}"
            guard.allow(label)
            body, rows, headers = await get_page({}, at=current, position=label)
            guard.check(label, rows)
            if rows:
                yield rows
