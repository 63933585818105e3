"""The ``sql`` connector: a table or query of another database, read for one partition.

The database URL is an environment reference in sources.yaml (``${ORDERS_DB_URL}``), so the
password is resolved at run time only. Rows are streamed with ``fetchmany``. ``NUMERIC`` and
``DECIMAL`` values keep every digit (see ``_plain``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
from collections.abc import AsyncIterator
from typing import Any

import sqlalchemy as sa
from pydantic import Field, model_validator

from ingest_assets.connectors.base import (
    Batch,
    Connector,
    ConnectorOptions,
    FetchContext,
    FetchError,
)
from ingest_assets.connectors.registry import register
from ingest_assets.jsontext import decimal_text


class SqlOptions(ConnectorOptions):
    url: str
    table: str | None = None
    query: str | None = Field(
        None, description="may use :start and :end (the partition's [start, end) dates)"
    )
    partition_column: str | None = None
    batch_size: int = Field(5_000, ge=1)

    @model_validator(mode="after")
    def _table_or_query(self) -> SqlOptions:
        if bool(self.table) == bool(self.query):
            raise ValueError("give exactly one of 'table' or 'query'")
        return self


def _plain(value: Any) -> Any:
    """A column value as a JSON value, exactly: a whole ``NUMERIC``/``DECIMAL`` of scale 0 is an
    integer (every digit, past 64 bits too), any other its exact text (``12.50``), never a
    float (``NUMERIC(20,0)`` ids would collide)."""
    if isinstance(value, decimal.Decimal):
        if value.is_finite() and value.as_tuple().exponent >= 0:
            return int(value)
        return decimal_text(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


@register
class SqlConnector(Connector):
    kind = "sql"
    Options = SqlOptions
    options: SqlOptions

    def statement(self) -> sa.TextClause:
        opts = self.options
        if opts.query:
            return sa.text(opts.query)
        table = ".".join(f'"{part}"' for part in opts.table.split("."))  # type: ignore[union-attr]
        where = ""
        if opts.partition_column:
            where = (
                f' WHERE "{opts.partition_column}" >= :start AND "{opts.partition_column}" < :end'
            )
        return sa.text(f"SELECT * FROM {table}{where}")

    async def fetch(self, ctx: FetchContext) -> AsyncIterator[Batch]:
        url = self.resolved(self.options.url, ctx)
        start = ctx.partition_date
        end = start + dt.timedelta(days=1)
        ctx.stats.requests += 1
        engine, connected = None, False
        try:
            engine = sa.create_engine(url)
            with engine.connect() as con:
                connected = True
                result = con.execution_options(stream_results=True).execute(
                    self.statement(), {"start": start, "end": end}
                )
                while True:
                    rows = await asyncio.to_thread(result.fetchmany, self.options.batch_size)
                    if not rows:
                        break
                    yield [{k: _plain(v) for k, v in row._mapping.items()} for row in rows]
        except (sa.exc.SQLAlchemyError, ImportError) as exc:
            ctx.stats.failed_requests += 1
            # A database that is down or drops the connection may come back; a bad URL,
            # driver or query will not (SQLite reports a missing table as OperationalError too,
            # so the phase decides, not the class).
            if connected:
                transient = bool(getattr(exc, "connection_invalidated", False))
            else:
                transient = isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError)
            # The driver's message can quote the URL; name only the source and the error class.
            raise FetchError(
                f"query failed ({type(exc).__name__}: "
                f"{getattr(exc, 'orig', None) or 'see the database log'})",
                permanent=not transient,
            ) from None
        finally:
            if engine is not None:
                engine.dispose()
