"""The connector protocol: an async generator of record batches for one partition date."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict

from ingest_assets.config import ConfigError, SourceConfig, resolve_env

if TYPE_CHECKING:
    from ingest_assets.connectors.checkpoint import PageCheckpoint

T = TypeVar("T")
Record = dict[str, Any]
Batch = list[Record]


class FetchError(Exception):
    """A fetch failed; the message is one line naming the source, the day and the URL or file.

    ``permanent`` says whether trying again can help: a raw asset fails a permanent error at
    once, without step retries. An instance may override its class's value.
    """

    permanent: ClassVar[bool] = False

    def __init__(self, message: str, *, permanent: bool | None = None) -> None:
        super().__init__(" ".join(str(message).splitlines()))
        if permanent is not None:
            self.permanent = permanent  # type: ignore[misc]
        self.located = False

    def locate(self, source: str, day: dt.date) -> FetchError:
        """Prefix the message with the source and day once (connectors call this on the way out)."""
        if not self.located:
            self.args = (f"source {source}, day {day.isoformat()}: {self.args[0]}",)
            self.located = True
        return self


class PermanentFetchError(FetchError):
    """Cannot succeed on retry: a 4xx answer, an invalid URL, a config or shape mistake."""

    permanent = True


class PagingError(PermanentFetchError):
    """Paging broke an invariant: max_pages reached, a page repeated, a total contradicted."""


class FileParseError(PermanentFetchError):
    """A whole file cannot be read (encoding, syntax, forbidden XML); names the line/column."""


@dataclass
class FetchStats:
    """What a fetch cost, as reported in ``metrics.ingestion``.

    ``requests`` counts attempts (a file read is one), ``failed_requests`` the attempts that
    failed, ``retries`` the attempts beyond the first of each logical request.
    """

    requests: int = 0
    retries: int = 0
    failed_requests: int = 0
    records: int = 0
    batches: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class FetchContext:
    partition_date: dt.date
    stats: FetchStats = field(default_factory=FetchStats)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("ingest_assets"))
    env: Mapping[str, str] | None = None
    on_progress: Callable[[str], None] | None = None
    # Responses already fetched for this (source, day) by an earlier try; None: no resume.
    checkpoint: PageCheckpoint | None = None

    def progress(self, message: str) -> None:
        if self.on_progress is not None:
            self.on_progress(message)

    def template_values(self, **extra: Any) -> dict[str, Any]:
        """The names a configured string may use: ``{date}``, ``{landing_dir}`` and extras."""
        from ingest_assets.config import landing_dir

        return {"date": self.partition_date.isoformat(), "landing_dir": str(landing_dir()), **extra}


class ConnectorOptions(BaseModel):
    """Base for each connector's own options, validated when the sources file loads."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Connector(ABC):
    """Fetches one source's records for one partition date, in batches.

    Subclasses set ``kind`` (the ``connector:`` value in sources.yaml) and ``Options`` (a
    pydantic model of their own fields), and implement ``fetch`` as an async generator.
    """

    kind: ClassVar[str]
    Options: ClassVar[type[ConnectorOptions]] = ConnectorOptions

    def __init__(self, source: SourceConfig) -> None:
        self.source = source
        self.options = self.Options.model_validate(source.options)

    def resolved(self, value: Any, ctx: FetchContext) -> Any:
        """Resolve environment references at run time (never stored in Dagster)."""
        return resolve_env(value, ctx.env)

    @abstractmethod
    def fetch(self, ctx: FetchContext) -> AsyncIterator[Batch]:
        """Yield batches of records (plain dicts) for ``ctx.partition_date``."""


async def stream(connector: Connector, ctx: FetchContext) -> AsyncIterator[Batch]:
    """The connector's batches, in the source's order, counted in ``ctx.stats``.

    Every error on the way out is a ``FetchError`` whose one-line message starts with the
    source and the day; use this (not ``connector.fetch``) to consume a connector.
    """
    try:
        async for batch in connector.fetch(ctx):
            ctx.stats.batches += 1
            ctx.stats.records += len(batch)
            yield batch
    except FetchError as exc:
        exc.locate(connector.source.name, ctx.partition_date)
        raise
    except ConfigError as exc:
        # Resolved at run time (an unset environment variable, an unknown template name):
        # no retry can fix it.
        raise PermanentFetchError(str(exc)).locate(
            connector.source.name, ctx.partition_date
        ) from None


async def _drain(connector: Connector, ctx: FetchContext, each: Callable[[Batch], T]) -> list[T]:
    return [each(batch) async for batch in stream(connector, ctx)]


def collect(
    connector: Connector, ctx: FetchContext, each: Callable[[Batch], T] = lambda batch: batch
) -> list[T]:
    """Run a connector to completion from synchronous code (an asset body).

    ``each`` turns every batch into what the caller keeps (e.g. a DataFrame) as it arrives, so
    the plain-dict records of a batch are released before the next batch is fetched.
    """
    return asyncio.run(_drain(connector, ctx, each))
