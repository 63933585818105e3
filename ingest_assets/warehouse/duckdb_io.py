"""The embedded warehouse: a DuckDB file, one table per asset, partitions replaced atomically."""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import duckdb
import pandas as pd

from ingest_assets.warehouse.base import PartitionedTableIOManager
from ingest_assets.warehouse.common import (
    PARTITION_COLUMN,
    TableRef,
    WarehouseError,
    check_partition_column,
    logical_types,
    normalize_loaded,
    quote_ident,
    require_readable,
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
        yield con
    finally:
        con.close()


def write_frame(
    con: duckdb.DuckDBPyConnection,
    table: TableRef,
    df: pd.DataFrame,
    bounds: tuple | None,
    json_columns: list[str] | None = None,
) -> None:
    """Replace the rows of ``bounds`` (or the whole table) by ``df`` in one transaction."""
    if bounds is not None:
        check_partition_column(df, table, bounds)
    types = {c: DUCKDB_TYPES[t] for c, t in logical_types(df, json_columns or []).items()}
    target = table.sql
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(table.schema)}")
        existing = _existing_columns(con, table)
        if not existing:
            columns = ", ".join(f"{quote_ident(c)} {t}" for c, t in types.items())
            con.execute(f"CREATE TABLE {target} ({columns})")
        else:
            for column, wanted in types.items():
                have = existing.get(column)
                if have is None:
                    con.execute(f"ALTER TABLE {target} ADD COLUMN {quote_ident(column)} {wanted}")
                    existing[column] = wanted
                elif have != wanted and (wanted, have) not in _WIDENS and df[column].notna().any():
                    raise WarehouseError(
                        f"{table}: column {column!r} is {have} in the warehouse but the new data is "
                        f"{wanted}; migrate the column or rename it"
                    )
        if bounds is None:
            con.execute(f"DELETE FROM {target}")
        else:
            con.execute(
                f"DELETE FROM {target} WHERE {quote_ident(PARTITION_COLUMN)} >= ? "
                f"AND {quote_ident(PARTITION_COLUMN)} < ?",
                list(bounds),
            )
        if not df.empty:
            con.register("_ingest_frame", df)
            names = ", ".join(quote_ident(c) for c in df.columns)
            casts = ", ".join(
                f"CAST({quote_ident(c)} AS {existing.get(c, types[c])})" for c in df.columns
            )
            con.execute(f"INSERT INTO {target} ({names}) SELECT {casts} FROM _ingest_frame")
            con.unregister("_ingest_frame")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def read_frame(
    con: duckdb.DuckDBPyConnection,
    table: TableRef,
    bounds: tuple | None,
    columns: list[str] | None = None,
) -> pd.DataFrame:
    """Rows of the partition window (or the whole table), optionally only some columns."""
    require_readable(table, _existing_columns(con, table), columns)
    target = table.sql
    selected = ", ".join(quote_ident(c) for c in columns) if columns else "*"
    if bounds is None:
        df = con.execute(f"SELECT {selected} FROM {target}").df()
    else:
        df = con.execute(
            f"SELECT {selected} FROM {target} WHERE {quote_ident(PARTITION_COLUMN)} >= ? "
            f"AND {quote_ident(PARTITION_COLUMN)} < ?",
            list(bounds),
        ).df()
    return normalize_loaded(df)


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
    ) -> None:
        # DuckDB checks key constraints eagerly inside a transaction, which trips over a
        # delete-then-insert of the same keys; uniqueness is the schema checks' job here.
        with connect(self.path) as con:
            write_frame(con, table, df, bounds, list(json_columns))

    def read(
        self, table: TableRef, bounds: tuple[dt.date, dt.date] | None, columns: Sequence[str] | None
    ) -> pd.DataFrame:
        with connect(self.path) as con:
            return read_frame(con, table, bounds, list(columns) if columns else None)
