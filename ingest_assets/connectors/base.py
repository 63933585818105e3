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

from ingest_assets.config import SourceConfig, resolve_env

if TYPE_CHECKING:
    from ingest_assets.connectors.checkpoint import PageCheckpoint

T = TypeVar("T")
Record = dict[str, Any]
Batch = list[Record]


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


async def _drain(connector: Connector, ctx: FetchContext, each: Callable[[Batch], T]) -> list[T]:
    results = []
    async for batch in connector.fetch(ctx):
        ctx.stats.batches += 1
        ctx.stats.records += len(batch)
        results.append(each(batch))
    return results


def collect(
    connector: Connector, ctx: FetchContext, each: Callable[[Batch], T] = lambda batch: batch
) -> list[T]:
    """Run a connector to completion from synchronous code (an asset body).

    ``each`` turns every batch into what the caller keeps (e.g. a DataFrame) as it arrives, so
    the plain-dict records of a batch are released before the next batch is fetched.
    """
    return asyncio.run(_drain(connector, ctx, each))
