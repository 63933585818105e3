"""The ``rest`` connector: JSON over HTTP, paginated, fanned out over parameter sets, concurrent.

Pagination strategies are small classes (as in dlt's REST client): each knows how to ask for
the first page and what to ask next. When the first page reveals the total, the remaining
pages are fetched concurrently.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal
from urllib.parse import urljoin

from pydantic import Field, model_validator

from ingest_assets.config import render_template
from ingest_assets.connectors.base import Batch, Connector, ConnectorOptions, FetchContext
from ingest_assets.connectors.http import FetchError, ResilientClient
from ingest_assets.connectors.registry import register
from ingest_assets.connectors.streams import bounded_gather, fan_in


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


Pagination = Annotated[LimitOffset | PageNumber | Cursor | NextLink, Field(discriminator="kind")]


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

    @model_validator(mode="after")
    def _attach_from_fan_out(self) -> RestOptions:
        for name in self.attach:
            missing = [i for i, item in enumerate(self.fan_out) if name not in item]
            if missing:
                raise ValueError(f"attach field {name!r} is missing from fan_out item {missing[0]}")
        return self


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


def rows_from(body: Any, record_path: str | None, layout: str) -> list[dict[str, Any]]:
    """The records of one response body, in row or columnar (dict of equal-length arrays) layout."""
    found = dig(body, record_path)
    if found is None:
        raise FetchError(f"response has no {record_path!r} in it")
    if layout == "columnar":
        if not isinstance(found, dict):
            raise FetchError(f"{record_path!r} is not an object of arrays")
        lengths = {len(v) for v in found.values() if isinstance(v, list)}
        if len(lengths) > 1:
            raise FetchError(f"{record_path!r} arrays differ in length: {sorted(lengths)}")
        count = lengths.pop() if lengths else 0
        return [
            {k: (v[i] if isinstance(v, list) else v) for k, v in found.items()}
            for i in range(count)
        ]
    if not isinstance(found, list):
        raise FetchError(f"{record_path or 'the body'} is not a list of records")
    return [r if isinstance(r, dict) else {"value": r} for r in found]


@register
class RestConnector(Connector):
    """GET JSON records from an HTTP API (see ``RestOptions``)."""

    kind = "rest"
    Options = RestOptions
    options: RestOptions

    async def fetch(self, ctx: FetchContext) -> AsyncIterator[Batch]:
        opts = self.options
        headers = self.resolved({**self.source.http.headers, **opts.headers}, ctx)
        async with ResilientClient(
            self.source.http,
            ctx.stats,
            ctx.log,
            headers,
            checkpoint=ctx.checkpoint,
            rate_key=self.source.name,
        ) as client:
            items = opts.fan_out or [{}]
            producers = [
                lambda item=item: self._one_request_set(client, ctx, item) for item in items
            ]
            async for batch in fan_in(producers, max_buffered=self.source.http.max_concurrency * 2):
                yield batch

    async def _one_request_set(
        self, client: ResilientClient, ctx: FetchContext, item: dict[str, Any]
    ) -> AsyncIterator[Batch]:
        opts = self.options
        values = ctx.template_values(**item)
        url = self.resolved(opts.base_url, ctx).rstrip("/") + render(opts.path, values)
        params = {k: self.resolved(render(v, values), ctx) for k, v in opts.params.items()}
        extra = {name: item[name] for name in opts.attach}
        label = ", ".join(f"{k}={v}" for k, v in extra.items()) or self.source.name
        async for rows in self._pages(client, ctx, url, params):
            ctx.progress(f"{label}: {len(rows)} records")
            yield [{**extra, **row} for row in rows] if extra else rows

    async def _pages(
        self, client: ResilientClient, ctx: FetchContext, url: str, params: dict[str, Any]
    ) -> AsyncIterator[list[dict[str, Any]]]:
        opts = self.options
        page = opts.pagination

        async def get(extra: dict[str, Any]) -> tuple[Any, list[dict[str, Any]]]:
            body, _ = await client.get_json(url, {**params, **extra})
            return body, rows_from(body, opts.record_path, opts.record_layout)

        if page is None:
            yield (await get({}))[1]
        elif isinstance(page, LimitOffset):
            body, rows = await get({page.limit_param: page.page_size, page.offset_param: 0})
            yield rows
            total = dig(body, page.total_path) if page.total_path else None
            if isinstance(total, int):
                # A server may cap pages below the size asked for: step by what it gives.
                step = len(rows) if 0 < len(rows) < page.page_size else page.page_size
                offsets = range(step, total, step)[: page.max_pages - 1]
                calls = [
                    lambda o=o: get({page.limit_param: page.page_size, page.offset_param: o})
                    for o in offsets
                ]
                fetched = len(rows)
                async for _, more in bounded_gather(calls, self.source.http.max_concurrency):
                    fetched += len(more)
                    yield more
                if fetched < total:
                    raise FetchError(
                        f"fetched {fetched} of the {total} records the API announced "
                        f"({page.total_path!r}); pages may have shifted, or max_pages is too low"
                    )
            else:
                # No total: keep asking until an empty page (a short page may only be a cap).
                offset, pages = len(rows), 1
                while rows and pages < page.max_pages:
                    _, rows = await get(
                        {page.limit_param: page.page_size, page.offset_param: offset}
                    )
                    offset, pages = offset + len(rows), pages + 1
                    if rows:
                        yield rows
        elif isinstance(page, PageNumber):
            size = {page.size_param: page.page_size} if page.size_param else {}
            body, rows = await get({page.page_param: page.first_page, **size})
            yield rows
            total_pages = dig(body, page.total_pages_path) if page.total_pages_path else None
            if isinstance(total_pages, int):
                numbers = range(
                    page.first_page + 1, page.first_page + min(total_pages, page.max_pages)
                )
                calls = [lambda n=n: get({page.page_param: n, **size}) for n in numbers]
                async for _, more in bounded_gather(calls, self.source.http.max_concurrency):
                    yield more
            else:
                number = page.first_page
                while rows and number - page.first_page + 1 < page.max_pages:
                    number += 1
                    _, rows = await get({page.page_param: number, **size})
                    if rows:
                        yield rows
        else:
            cursor_key = page.cursor_param if isinstance(page, Cursor) else None
            path = page.cursor_path if isinstance(page, Cursor) else page.next_path
            body, rows = await get({})
            yield rows
            for _ in range(page.max_pages - 1):
                token = dig(body, path)
                if not token:
                    break
                if cursor_key:
                    body, rows = await get({cursor_key: token})
                else:
                    body, _ = await client.get_json(urljoin(url, str(token)))
                    rows = rows_from(body, opts.record_path, opts.record_layout)
                if rows:
                    yield rows
