"""The IO manager contract both warehouses share; each supplies its ``write``, ``read``,
``stage`` (a streamed partition) and ``read_batches`` (a partition in bounded chunks)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import dagster as dg
import pandas as pd
import pyarrow as pa

from ingest_assets.warehouse.common import (
    TableRef,
    definition_list,
    partition_dates,
    quote_ident,
    row_filter,
)
from ingest_assets.warehouse.preview import preview_metadata

# Rows per chunk when a step reads a partition piece by piece.
READ_CHUNK_ROWS = 50_000


@dataclass(frozen=True)
class StagedPartition:
    """One day of a raw table being written: the constant columns every row of it carries."""

    table: TableRef
    day: dt.date
    run_id: str
    ingested_at: pd.Timestamp


class FrameStream:
    """An output written chunk by chunk (in one transaction) instead of as one frame.

    ``chunks`` is consumed once, by the IO manager; what the producer learns while producing
    them (counts, reasons) is added to the output's metadata by ``metadata()`` afterwards.
    """

    # Rows kept from the first chunks, for the UI's preview of the output.
    HEAD_ROWS = 10

    def __init__(
        self, chunks: Iterator[pd.DataFrame], metadata: Callable[[], dict[str, Any]] | None = None
    ) -> None:
        self.chunks = chunks
        self._metadata = metadata
        self.rows = 0
        self.head: pd.DataFrame | None = None

    def __iter__(self) -> Iterator[pd.DataFrame]:
        for chunk in self.chunks:
            self.rows += len(chunk)
            if self.head is None or len(self.head) < self.HEAD_ROWS:
                part = chunk.head(self.HEAD_ROWS)
                self.head = part if self.head is None else pd.concat([self.head, part])
            yield chunk

    def metadata(self) -> dict[str, Any]:
        return self._metadata() if self._metadata else {}


class PartitionStage(Protocol):
    """Batches appended as they arrive; the partition is swapped in by ``commit`` in one
    transaction, so a failed or killed writer leaves the old partition as it was."""

    rows: int

    def append(self, batch: pa.RecordBatch) -> None: ...

    def commit(self) -> int: ...


def table_of(asset_key: Sequence[str], metadata: Mapping[str, object] | None) -> TableRef:
    """The table of an asset: its key ``[schema, table]``, or the ``table`` metadata.

    Several assets may share one table, each owning the rows its ``scope`` metadata names
    (e.g. each dataset's quarantine rows in ``quarantine.records``).
    """
    named = (metadata or {}).get("table")
    named = getattr(named, "value", named)
    if named:
        return TableRef.from_asset_key(str(named).split("."))
    return TableRef.from_asset_key(asset_key)


def scope_of(metadata: Mapping[str, object] | None) -> dict[str, str]:
    value = (metadata or {}).get("scope")
    value = getattr(value, "value", getattr(value, "data", value))
    return dict(value or {})


class PartitionedTableIOManager(dg.ConfigurableIOManager):
    """Stores each asset as the table ``<schema>.<table>`` named by its asset key.

    A partitioned output replaces exactly its partition window's rows (within its ``scope``,
    when several assets share a table) in one transaction, so a re-run never duplicates rows
    and a reader never sees a half-written partition. Definition metadata ``json_columns`` and
    ``primary_key`` shape the table; an input's ``columns`` metadata reads only those columns.
    """

    warehouse: ClassVar[str]

    def write(
        self,
        table: TableRef,
        df: pd.DataFrame | FrameStream,
        bounds: tuple[dt.date, dt.date] | None,
        json_columns: Sequence[str],
        primary_key: Sequence[str],
        scope: Mapping[str, str] | None = None,
    ) -> None:
        raise NotImplementedError

    def read(
        self,
        table: TableRef,
        bounds: tuple[dt.date, dt.date] | None,
        columns: Sequence[str] | None,
        scope: Mapping[str, str] | None = None,
    ) -> pd.DataFrame:
        raise NotImplementedError

    def count_rows(
        self,
        table: TableRef,
        bounds: tuple[dt.date, dt.date] | None,
        group_by: Sequence[str],
        scope: Mapping[str, str] | None = None,
    ) -> list[tuple]:
        """``(*group values, rows)`` per group of the partition window, counted by the
        warehouse (nothing is read out to count it); a missing table raises as ``read`` does."""
        where, params = row_filter(bounds, scope, self.placeholder)
        columns = ", ".join(quote_ident(c) for c in group_by)
        return self.fetch_all(
            f"SELECT {columns}, count(*) FROM {table.sql}{where} GROUP BY {columns}", params
        )

    placeholder: ClassVar[str]

    def fetch_all(self, query: str, params: Sequence[Any]) -> list[tuple]:
        """Every row of one query, in its own connection."""
        raise NotImplementedError

    def stage(self, partition: StagedPartition) -> AbstractContextManager[PartitionStage]:
        """A streamed write of one raw partition (see ``PartitionStage``)."""
        raise NotImplementedError

    def read_records(self, table: TableRef, day: dt.date, seqs: Sequence[int]) -> dict[int, str]:
        """``_record`` of some rows of a raw day, by ``_seq``."""
        raise NotImplementedError

    def read_batches(
        self,
        table: TableRef,
        bounds: tuple[dt.date, dt.date],
        columns: Sequence[str] | None,
        order_by: Sequence[str],
        chunk_rows: int = READ_CHUNK_ROWS,
    ) -> Iterator[pd.DataFrame]:
        """The partition window in chunks of about ``chunk_rows``, in ``order_by`` order.

        Columns asked for that the table lacks come back as nulls (a field a source never sent).
        Nothing is yielded for a table that does not exist yet.
        """
        raise NotImplementedError

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame | FrameStream) -> None:
        """Write a frame, or a ``FrameStream`` chunk by chunk, replacing the partition at once."""
        if obj is None:
            return
        metadata = context.definition_metadata
        table = table_of(context.asset_key.path, metadata)
        self.write(
            table,
            obj,
            partition_dates(context),
            definition_list(metadata, "json_columns"),
            definition_list(metadata, "primary_key"),
            scope_of(metadata),
        )
        streamed = isinstance(obj, FrameStream)
        shown = obj.head if streamed else obj
        context.add_output_metadata(
            {
                **(obj.metadata() if streamed else {}),
                "dagster/row_count": obj.rows if streamed else len(obj),
                "dagster/table_name": str(table),
                "warehouse": self.warehouse,
                **(preview_metadata(shown, metadata) if shown is not None else {}),
            }
        )

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        upstream = context.upstream_output
        upstream_metadata = upstream.definition_metadata if upstream is not None else None
        table = table_of(context.asset_key.path, upstream_metadata)
        columns = definition_list(context.definition_metadata, "columns") or None
        return self.read(table, partition_dates(context), columns, scope_of(upstream_metadata))
