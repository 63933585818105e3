"""The embedded warehouse: a DuckDB file, one table per asset, partitions replaced atomically."""

from __future__ import annotations

import datetime as dt
import random
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ingest_assets.warehouse.base import (
    READ_CHUNK_ROWS,
    PartitionedTableIOManager,
    StagedPartition,
)
from ingest_assets.warehouse.common import (
    PARTITION_COLUMN,
    TableRef,
    check_column_type,
    check_partition_column,
    check_scope,
    loaded_frame,
    logical_types,
    made_ahead,
    quote_ident,
    require_readable,
    row_filter,
)

DUCKDB_TYPES = {
    "date": "DATE",
    "timestamptz": "TIMESTAMPTZ",
    "timestamp": "TIMESTAMP",
    "double": "DOUBLE",
    "bigint": "BIGINT",
    "boolean": "BOOLEAN",
    "text": "VARCHAR",
    "json": "VARCHAR",
}
# Writing a narrower type into a wider column is safe; anything else is a conflict.
_WIDENS = {
    ("BIGINT", "DOUBLE"),
    ("BOOLEAN", "VARCHAR"),
    ("BIGINT", "VARCHAR"),
    ("DOUBLE", "VARCHAR"),
}
_LOCK_ATTEMPTS = 40
DUCKDB_MEMORY = "256MB"


@contextmanager
def connect(path: str, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the warehouse file, waiting politely while another process holds its write lock."""
    if not read_only:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(_LOCK_ATTEMPTS):
        try:
            con = duckdb.connect(path, read_only=read_only)
            break
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or attempt == _LOCK_ATTEMPTS - 1:
                raise
            time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))
    try:
        con.execute("SET TimeZone='UTC'")
        # DuckDB's own memory (sorts, joins, inserts) spills to disk beyond this, instead of
        # taking most of the machine while a step holds a day of records.
        con.execute(f"SET memory_limit = '{DUCKDB_MEMORY}'")
        yield con
    finally:
        con.close()


def write_frame(
    con: duckdb.DuckDBPyConnection,
    table: TableRef,
    df: pd.DataFrame | Iterable[pd.DataFrame],
    bounds: tuple | None,
    json_columns: list[str] | None = None,
    scope: Mapping[str, str] | None = None,
) -> None:
    """Replace the rows of ``bounds`` (or the whole table) within ``scope`` by ``df`` (a frame,
    or frames written one after the other), in one transaction."""
    # A stream's next frame is made in a worker thread while DuckDB stores this one.
    frames = [df] if isinstance(df, pd.DataFrame) else made_ahead(iter(df))
    con.execute("BEGIN TRANSACTION")
    try:
        deleted = False
        for frame in frames:
            existing = _prepare(con, table, frame, bounds, json_columns, scope)
            if not deleted:
                where, params = row_filter(bounds, scope)
                con.execute(f"DELETE FROM {table.sql}{where}", params)
                deleted = True
            _insert(con, table, frame, existing)
        if not deleted and _existing_columns(con, table):
            where, params = row_filter(bounds, scope)
            con.execute(f"DELETE FROM {table.sql}{where}", params)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def _prepare(
    con: duckdb.DuckDBPyConnection,
    table: TableRef,
    df: pd.DataFrame,
    bounds: tuple | None,
    json_columns: list[str] | None,
    scope: Mapping[str, str] | None,
) -> dict[str, str]:
    """Check a frame against the partition and scope; create the table or add its new columns."""
    if bounds is not None:
        check_partition_column(df, table, bounds)
    check_scope(df, table, scope)
    types = {
        c: DUCKDB_TYPES.get(t) or t.upper()
        for c, t in logical_types(df, json_columns or []).items()
    }
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(table.schema)}")
    existing = _existing_columns(con, table)
    if not existing:
        columns = ", ".join(f"{quote_ident(c)} {t}" for c, t in types.items())
        con.execute(f"CREATE TABLE {table.sql} ({columns})")
        return dict(types)
    for column, wanted in types.items():
        have = existing.get(column)
        if have is None:
            con.execute(f"ALTER TABLE {table.sql} ADD COLUMN {quote_ident(column)} {wanted}")
            existing[column] = wanted
        else:
            check_column_type(df, table, column, have, wanted, _WIDENS)
    return existing


def _insert(
    con: duckdb.DuckDBPyConnection, table: TableRef, df: pd.DataFrame, existing: Mapping[str, str]
) -> None:
    if df.empty:
        return
    con.register("_ingest_frame", df)
    names = ", ".join(quote_ident(c) for c in df.columns)
    casts = ", ".join(f"CAST({quote_ident(c)} AS {existing[c]})" for c in df.columns)
    con.execute(f"INSERT INTO {table.sql} ({names}) SELECT {casts} FROM _ingest_frame")
    con.unregister("_ingest_frame")


def read_frame(
    con: duckdb.DuckDBPyConnection,
    table: TableRef,
    bounds: tuple | None,
    columns: list[str] | None = None,
    scope: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Rows of the partition window (or the whole table), optionally only some columns."""
    require_readable(table, _existing_columns(con, table), columns)
    selected = ", ".join(quote_ident(c) for c in columns) if columns else "*"
    where, params = row_filter(bounds, scope)
    arrow = con.sql(f"SELECT {selected} FROM {table.sql}{where}", params=params).to_arrow_table()
    return loaded_frame(arrow)


def _existing_columns(con: duckdb.DuckDBPyConnection, table: TableRef) -> dict[str, str]:
    rows = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
        [table.schema, table.table],
    ).fetchall()
    return {name: _canonical(data_type) for name, data_type in rows}


def _canonical(data_type: str) -> str:
    upper = data_type.upper()
    return {"TIMESTAMP WITH TIME ZONE": "TIMESTAMPTZ", "INTEGER": "BIGINT"}.get(upper, upper)


class DuckDBPartitionedIOManager(PartitionedTableIOManager):
    """The embedded warehouse: one DuckDB file, partitions replaced atomically."""

    warehouse: ClassVar[str] = "duckdb"
    path: str

    def write(
        self,
        table: TableRef,
        df: pd.DataFrame,
        bounds: tuple[dt.date, dt.date] | None,
        json_columns: Sequence[str],
        primary_key: Sequence[str],
        scope: Mapping[str, str] | None = None,
    ) -> None:
        # DuckDB checks key constraints eagerly inside a transaction, which trips over a
        # delete-then-insert of the same keys; uniqueness is the schema checks' job here.
        with connect(self.path) as con:
            write_frame(con, table, df, bounds, list(json_columns), scope)

    def read(
        self,
        table: TableRef,
        bounds: tuple[dt.date, dt.date] | None,
        columns: Sequence[str] | None,
        scope: Mapping[str, str] | None = None,
    ) -> pd.DataFrame:
        with connect(self.path) as con:
            return read_frame(con, table, bounds, list(columns) if columns else None, scope)

    placeholder = "?"

    def fetch_all(self, query: str, params: Sequence[Any]) -> list[tuple]:
        with connect(self.path) as con:
            return con.execute(query, list(params)).fetchall()

    @contextmanager
    def stage(self, partition: StagedPartition) -> Iterator[ParquetStage]:
        staging = Path(self.path).parent / "staging" / f"{partition.table}-{uuid.uuid4().hex}"
        stage = ParquetStage(self.path, partition, staging)
        try:
            yield stage
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def read_records(self, table: TableRef, day: dt.date, seqs: Sequence[int]) -> dict[int, str]:
        if not len(seqs):
            return {}
        with connect(self.path) as con:
            rows = con.execute(
                f"SELECT _seq, _record FROM {table.sql} WHERE partition_date = ? "
                "AND _seq BETWEEN ? AND ?",
                [day, int(min(seqs)), int(max(seqs))],
            ).fetchall()
        wanted = set(int(s) for s in seqs)
        return {seq: text for seq, text in rows if seq in wanted}

    def read_batches(
        self,
        table: TableRef,
        bounds: tuple[dt.date, dt.date],
        columns: Sequence[str] | None,
        order_by: Sequence[str],
        chunk_rows: int = READ_CHUNK_ROWS,
    ) -> Iterator[pd.DataFrame]:
        with connect(self.path) as con:
            existing = _existing_columns(con, table)
            if not existing:
                return
            wanted = list(columns) if columns else list(existing)
            selected = ", ".join(
                quote_ident(c) if c in existing else f"CAST(NULL AS VARCHAR) AS {quote_ident(c)}"
                for c in wanted
            )
            order = ", ".join(quote_ident(c) for c in order_by if c in existing)
            where, params = row_filter(bounds)
            if list(order_by) == [PARTITION_COLUMN, "_seq"] and "_seq" in existing:
                yield from _in_seq_windows(con, table, selected, where, params, chunk_rows)
                return
            reader = con.sql(
                f"SELECT {selected} FROM {table.sql}{where}"
                + (f" ORDER BY {order}" if order else ""),
                params=params,
            ).to_arrow_reader(chunk_rows)
            for batch in reader:
                yield loaded_frame(batch)


def _in_seq_windows(
    con: duckdb.DuckDBPyConnection,
    table: TableRef,
    selected: str,
    where: str,
    params: list[object],
    chunk_rows: int,
) -> Iterator[pd.DataFrame]:
    """A raw table's rows in (day, ``_seq``) order, read one window of ``_seq`` at a time: one
    ORDER BY over a whole day of record texts (``_record``) needs the day in DuckDB's memory,
    past its limit on a large day; a window's sort needs one chunk's."""
    day = quote_ident(PARTITION_COLUMN)
    spans = con.execute(
        f"SELECT {day}, min(_seq), max(_seq) FROM {table.sql}{where} GROUP BY 1 ORDER BY 1",
        params,
    ).fetchall()
    for partition_date, low, high in spans:
        for start in range(int(low), int(high) + 1, chunk_rows):
            reader = con.sql(
                f"SELECT {selected} FROM {table.sql} WHERE {day} = ? AND _seq >= ? AND _seq < ? "
                "ORDER BY _seq",
                params=[partition_date, start, start + chunk_rows],
            ).to_arrow_reader(chunk_rows)
            for batch in reader:
                if batch.num_rows:
                    yield loaded_frame(batch)


# Staged rows are written to a Parquet file once this many bytes are buffered.
_STAGE_FILE_BYTES = 32 * 1024 * 1024


class ParquetStage:
    """A raw partition staged as Parquet files beside the warehouse, then swapped in at once.

    The warehouse file is opened only for the swap, so a long fetch never holds DuckDB's
    single-writer lock; the staged files are dropped whether the swap happens or not.
    """

    def __init__(self, path: str, partition: StagedPartition, staging: Path) -> None:
        self.path = path
        self.partition = partition
        self.staging = staging
        self.files: list[Path] = []
        self.buffered: list[pa.RecordBatch] = []
        self.buffered_bytes = 0
        self.rows = 0
        self.columns: dict[str, None] = {}

    def append(self, batch: pa.RecordBatch) -> None:
        if not batch.num_rows:
            return
        self.buffered.append(batch)
        self.buffered_bytes += batch.nbytes
        self.rows += batch.num_rows
        self.columns.update(dict.fromkeys(batch.schema.names))
        if self.buffered_bytes >= _STAGE_FILE_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self.buffered:
            return
        self.staging.mkdir(parents=True, exist_ok=True)
        path = self.staging / f"part-{len(self.files):05d}.parquet"
        tables = [pa.Table.from_batches([b]) for b in self.buffered]
        pq.write_table(pa.concat_tables(tables, promote_options="default"), path)
        self.files.append(path)
        self.buffered, self.buffered_bytes = [], 0

    def commit(self) -> int:
        """Replace the day's rows by the staged ones in one transaction; returns the row count."""
        self._flush()
        part = self.partition
        table = part.table
        fields = [c for c in self.columns if c not in _STAGE_TYPES]
        wanted = {**_STAGE_TYPES, **dict.fromkeys(fields, "VARCHAR")}
        with connect(self.path) as con:
            # Rows are read back in _seq order, never insertion order: DuckDB may then load
            # the files in parallel without buffering them whole.
            con.execute("SET preserve_insertion_order = false")
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(table.schema)}")
                existing = _existing_columns(con, table)
                if not existing:
                    columns = ", ".join(f"{quote_ident(c)} {t}" for c, t in wanted.items())
                    con.execute(f"CREATE TABLE {table.sql} ({columns})")
                else:
                    for column, kind in wanted.items():
                        if column not in existing:
                            con.execute(
                                f"ALTER TABLE {table.sql} ADD COLUMN {quote_ident(column)} {kind}"
                            )
                day = (part.day, part.day + dt.timedelta(days=1))
                where, params = row_filter(day)
                con.execute(f"DELETE FROM {table.sql}{where}", params)
                if self.files:
                    files = ", ".join(f"'{f.as_posix()}'" for f in self.files)
                    con.execute(
                        f"INSERT INTO {table.sql} BY NAME SELECT CAST(? AS DATE) AS partition_date, "
                        "CAST(? AS VARCHAR) AS _run_id, CAST(? AS TIMESTAMPTZ) AS _ingested_at, * "
                        f"FROM read_parquet([{files}], union_by_name = true)",
                        [part.day, part.run_id, part.ingested_at.to_pydatetime()],
                    )
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise
        return self.rows


# The raw table's own columns (field columns are text).
_STAGE_TYPES = {
    "partition_date": "DATE",
    "_run_id": "VARCHAR",
    "_ingested_at": "TIMESTAMPTZ",
    "_seq": "BIGINT",
    "_record": "VARCHAR",
    "_parse_error": "VARCHAR",
}
