"""The production warehouse: PostgreSQL, one table per asset, partitions replaced atomically.

Write path (measured in ``benchmarks/bench_postgres.py``): the frame is converted to Arrow slice
by slice and streamed into psycopg 3's ``COPY ... FROM STDIN`` in PostgreSQL's binary format
(``postgres_binary``; CSV for a table with column types it does not encode), the next slice
converted in a worker thread while the server reads this one.

- Partitioned outputs: ``DELETE`` the partition window, then ``COPY`` straight into the table, in
  one transaction. Until ``COMMIT`` nothing of it is visible (MVCC), so readers see the old
  partition or the new one, never a mix; a killed writer's transaction is rolled back by the
  server. The open transaction *is* the staging area: a temporary staging table plus
  ``INSERT ... SELECT`` gives the same guarantee, but writes every row twice and measured
  7-15% slower for 1M rows. Into a table holding no rows yet, the primary key and indexes are
  dropped first and built again after the ``COPY``, in the same transaction, which holds the
  table's other writers and readers off until it commits (``write_frame``).
- Unpartitioned outputs with a ``primary_key``: ``COPY`` into a temporary staging table, then
  ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` (an upsert cannot be done by ``COPY`` alone).
- Unpartitioned outputs without a key: the table's rows are replaced, like a partition.

Schema changes (create table, add column) run first in their own short transaction, so the
``ACCESS EXCLUSIVE`` lock they need is not held while the data is loaded.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from itertools import chain
from typing import Any, ClassVar
from urllib.parse import unquote

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ingest_assets.warehouse.base import (
    READ_CHUNK_ROWS,
    PartitionedTableIOManager,
    StagedPartition,
)
from ingest_assets.warehouse.common import (
    PARTITION_COLUMN,
    TableRef,
    WarehouseError,
    check_column_type,
    check_partition_column,
    check_scope,
    loaded_frame,
    logical_types,
    made_ahead,
    quote_ident,
    redact_url,
    require_readable,
    row_filter,
)
from ingest_assets.warehouse.postgres_binary import (
    BINARY_TYPES,
    SIGNATURE,
    TRAILER,
    copy_order,
    encode_rows,
)

PG_TYPES = {
    "date": "date",
    "timestamptz": "timestamp with time zone",
    "timestamp": "timestamp without time zone",
    "double": "double precision",
    "bigint": "bigint",
    "boolean": "boolean",
    "text": "text",
    "json": "jsonb",
}
# Types a table may already have that hold the same kind of value as one of ours.
_SAME_KIND = {
    "integer": "bigint",
    "smallint": "bigint",
    "real": "double precision",
    "character varying": "text",
    "character": "text",
    "json": "jsonb",
}
# (new data, existing column) pairs that load without loss; anything else is a conflict.
_WIDENS = {
    ("bigint", "double precision"),
    ("bigint", "text"),
    ("double precision", "text"),
    ("boolean", "text"),
    ("jsonb", "text"),
    ("text", "jsonb"),  # PostgreSQL validates each value as it is loaded
}
_ARROW_TYPES = {
    "date": pa.date32(),
    "timestamp with time zone": pa.timestamp("us", tz="UTC"),
    "timestamp without time zone": pa.timestamp("us"),
    "double precision": pa.float64(),
    "bigint": pa.int64(),
    "boolean": pa.bool_(),
}
_CSV_BATCH_ROWS = 50_000
# One lock for all schema changes: concurrent "CREATE SCHEMA/TABLE IF NOT EXISTS" race otherwise.
_DDL_LOCK = 0x696E67657374  # "ingest"


def _url_password(url: str) -> str | None:
    match = re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://[^:@/?#]*:([^@/]*)@", url)
    if match:
        return match.group(1)
    match = re.search(r"[?&]password=([^&#]*)", url)
    return match.group(1) if match else None


def redact_text(text: str, url: str) -> str:
    """Remove the URL and its password (raw or percent-decoded) from a message."""
    text = text.replace(url, redact_url(url))
    password = _url_password(url)
    if password:
        for secret in {password, unquote(password)}:
            text = text.replace(secret, "***")
    return text


def conninfo(url: str) -> str:
    """A libpq URI from any of the SQLAlchemy-style spellings users write."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+", 1)[0].lower() not in ("postgresql", "postgres"):
        raise WarehouseError(f"not a PostgreSQL URL: {redact_url(url)}")
    return f"postgresql://{rest}"


@contextmanager
def connect(url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection (transactions are explicit) in UTC with ISO dates."""
    failure = None
    try:
        conn = psycopg.connect(conninfo(url), autocommit=True)
    except psycopg.Error as exc:
        failure = f"cannot connect to PostgreSQL at {redact_url(url)}: {exc}"
    if failure is not None:
        # Raised outside the ``except`` block so no chained exception carries the raw text.
        raise WarehouseError(redact_text(failure, url))
    try:
        # CSV exchanged with the server must be unambiguous: UTC offsets, ISO dates.
        conn.execute("SET TIME ZONE 'UTC'")
        conn.execute("SET datestyle = 'ISO, YMD'")
        _prefer_lz4(conn)
        yield conn
    finally:
        conn.close()


def _prefer_lz4(conn: psycopg.Connection) -> None:
    """Compress this session's large values (a raw ``_record``, its ``reviews``) with lz4.

    PostgreSQL's default, pglz, is the slowest step of a raw load; lz4 wrote 100k
    DummyJSON-shaped records 18% faster at the same size. Each stored value names its method,
    so readers are unaffected; a server built without lz4 (or older than 14) keeps pglz.
    """
    with suppress(psycopg.errors.InvalidParameterValue, psycopg.errors.UndefinedObject):
        conn.execute("SET default_toast_compression = lz4")


def _existing_columns(conn: psycopg.Connection, table: TableRef) -> dict[str, str]:
    rows = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
        [table.schema, table.table],
    ).fetchall()
    return {name: _SAME_KIND.get(data_type, data_type) for name, data_type in rows}


def _schema_changes(
    df: pd.DataFrame, table: TableRef, types: dict[str, str], existing: dict[str, str]
) -> list[str]:
    """The columns to add; raises on a column whose type cannot take the new data."""
    missing = []
    for column, wanted in types.items():
        have = existing.get(column)
        if have is None:
            missing.append(column)
        else:
            check_column_type(df, table, column, have, wanted, _WIDENS)
    return missing


def _ensure_table(
    conn: psycopg.Connection,
    table: TableRef,
    df: pd.DataFrame,
    types: dict[str, str],
    primary_key: list[str],
    partitioned: bool,
) -> dict[str, str]:
    """Create the table or add the frame's new columns; return the table's column types."""
    return _ensure_columns(
        conn,
        table,
        types,
        primary_key,
        partitioned,
        missing=lambda existing: _schema_changes(df, table, types, existing),
    )


MAX_IDENTIFIER_BYTES = 63  # NAMEDATALEN - 1 of a stock build


def check_identifier(table: TableRef, column: str) -> None:
    """Refuse a column name PostgreSQL would cut to 63 bytes (silently, with a NOTICE): two
    names sharing a prefix would become one column, and a second load would add it again."""
    if len(column.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
        raise WarehouseError(
            f"{table}: column name {column!r} is longer than PostgreSQL's "
            f"{MAX_IDENTIFIER_BYTES}-byte limit and would be truncated"
        )


def _ensure_columns(
    conn: psycopg.Connection,
    table: TableRef,
    types: Mapping[str, str],
    primary_key: Sequence[str] = (),
    partitioned: bool = True,
    missing: Callable[[dict[str, str]], list[str]] | None = None,
) -> dict[str, str]:
    """Create the table, or add the columns it lacks (``missing`` may also refuse a conflict),
    in a short transaction of its own; return the table's column types.

    Schema changes run apart from the data's transaction, so the ``ACCESS EXCLUSIVE`` lock they
    need is not held while rows are loaded.
    """

    def lacking(existing: dict[str, str]) -> list[str]:
        return missing(existing) if missing else [c for c in types if c not in existing]

    for column in types:
        check_identifier(table, column)

    existing = _existing_columns(conn, table)
    if existing and not lacking(existing):
        return existing
    target = table.sql
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s::bigint)", [_DDL_LOCK])
        existing = _existing_columns(conn, table)  # another writer may have just changed it
        if not existing:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(table.schema)}")
            columns = [f"{quote_ident(c)} {t}" for c, t in types.items()]
            if primary_key:
                columns.append(f"PRIMARY KEY ({', '.join(map(quote_ident, primary_key))})")
            conn.execute(f"CREATE TABLE {target} ({', '.join(columns)})")
            if partitioned and list(primary_key[:1]) != [PARTITION_COLUMN]:
                # Partition deletes and reads filter on it; keep them off a full scan.
                conn.execute(f"CREATE INDEX ON {target} ({quote_ident(PARTITION_COLUMN)})")
            return dict(types)
        for column in lacking(existing):
            conn.execute(f"ALTER TABLE {target} ADD COLUMN {quote_ident(column)} {types[column]}")
            existing[column] = types[column]
    return existing


def _arrow_column(series: pd.Series, pg_type: str) -> pa.Array:
    """One column as Arrow, in the shape whose CSV text PostgreSQL reads as ``pg_type``."""
    if pg_type == "jsonb":
        # JSON columns hold JSON text; a dict or list slipped in is serialized, not repr()'d.
        series = series.map(lambda v: json.dumps(v) if isinstance(v, dict | list) else v)
    if pg_type in ("text", "jsonb") and series.dtype == object:
        try:
            text = pa.array(series, type=pa.string(), from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            # Mixed Python objects (numbers among strings, ...) are stored as their text.
            text = pa.array(series.where(series.isna(), series.astype(str)), from_pandas=True)
        return _without_nul(text, pg_type)
    array = pa.array(series, from_pandas=True)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    wanted = _ARROW_TYPES.get(pg_type)
    if wanted is None or array.type == wanted:
        return array
    if pa.types.is_timestamp(array.type) and pa.types.is_timestamp(wanted):
        # An instant is the same in any zone and Arrow writes it in UTC; PostgreSQL keeps
        # microseconds, so nanoseconds are truncated here rather than rounded by the server.
        array = array.cast(pa.timestamp(array.type.unit, tz=wanted.tz))
    try:
        array = array.cast(wanted, safe=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        if pg_type != "date":
            raise
        # e.g. a partition_date given as Python datetimes or unusual strings
        return pa.array(pd.to_datetime(series).dt.date, type=wanted, from_pandas=True)
    if pg_type == "timestamp with time zone":
        # Written as UTC wall-clock time, which the UTC session (see connect) reads as the same
        # instant: Arrow formats zone-aware timestamps about five times slower, and that alone
        # was half the CSV time of a products partition.
        array = array.view(pa.timestamp("us"))
    return array


def _without_nul(text: pa.Array, pg_type: str) -> pa.Array:
    """PostgreSQL text and jsonb cannot hold U+0000 (DuckDB and sources can): store U+FFFD.

    A record is kept with one replaced character rather than failing the whole day's load.
    """
    text = pc.replace_substring(text, pattern="\x00", replacement="\ufffd")
    if pg_type == "jsonb":
        text = pc.replace_substring(text, pattern="\\u0000", replacement="\\ufffd")
    return text


def to_arrow(df: pd.DataFrame, types: dict[str, str]) -> pa.Table:
    """The frame as Arrow, each column shaped for the PostgreSQL type in ``types``.

    Its CSV is meant for a session whose ``TimeZone`` is UTC (timestamptz values carry no offset).
    """
    return pa.table({c: _arrow_column(df[c], types[c]) for c in df.columns})


class _CopySink:
    """A file-like object Arrow's CSV writer writes into, forwarding to a running COPY."""

    closed = False

    def __init__(self, copy: psycopg.Copy) -> None:
        self._copy = copy

    def write(self, data: Any) -> int:
        # The sync writer hands the bytes to libpq before returning, so Arrow may reuse them.
        self._copy.write(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _copy_into(
    conn: psycopg.Connection, target: str, df: pd.DataFrame, types: dict[str, str]
) -> None:
    """Stream ``df`` into ``target`` by ``COPY``, converting it slice by slice as it goes, so
    the conversion to Arrow overlaps the server's work too."""
    _copy_arrow(
        conn,
        target,
        (
            to_arrow(df.iloc[start : start + _CSV_BATCH_ROWS], types)
            for start in range(0, len(df), _CSV_BATCH_ROWS)
        ),
    )


def _copy_arrow(conn: psycopg.Connection, target: str, parts: Iterator[pa.Table]) -> None:
    """``COPY`` Arrow tables (one column set, the first's) into ``target``.

    Binary when every column is of a type ``postgres_binary`` encodes (the server's side of the
    COPY is the bottleneck, and binary spares it parsing text), else CSV. Either way the next
    table is converted and encoded in a worker thread while this one is sent: Arrow's kernels
    release the GIL, and so does psycopg while it waits for the socket.
    """
    first = next(parts)
    names = [str(c) for c in first.schema.names]
    plan = _binary_plan(conn, target, names)
    if plan is not None:
        order, exact = plan
        with conn.cursor() as cur, cur.copy(_copy_in(target, order, "binary")) as copy:
            copy.write(SIGNATURE)
            for data in made_ahead(
                encode_rows(part, exact, order) for part in chain([first], parts)
            ):
                copy.write(data)
            copy.write(TRAILER)
        return
    options = pacsv.WriteOptions(include_header=False)
    with (
        conn.cursor() as cur,
        cur.copy(_copy_in(target, names, "csv")) as copy,
        pacsv.CSVWriter(_CopySink(copy), first.schema, write_options=options) as writer,
    ):
        writer.write_table(first)
        for part in made_ahead(parts):
            # A slice of only NULLs may come out with another Arrow type; the text is the same.
            writer.write_table(part if part.schema == first.schema else part.cast(first.schema))


def _binary_plan(
    conn: psycopg.Connection, target: str, names: Sequence[str]
) -> tuple[list[str], dict[str, str]] | None:
    """(column order, exact column types) of a binary ``COPY`` of ``names`` into ``target``;
    None when a column's type has no binary encoder here (then CSV)."""
    exact = _column_types(conn, target)
    if not all(exact.get(c) in BINARY_TYPES for c in names):
        return None
    return copy_order(names, exact), exact


def _copy_in(target: str, columns: Sequence[str], form: str) -> str:
    return f"COPY {target} ({', '.join(map(quote_ident, columns))}) FROM STDIN (FORMAT {form})"


def _column_types(conn: psycopg.Connection, target: str) -> dict[str, str]:
    """The exact column types of a table (or temporary table) named by its SQL text."""
    rows = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
        [target],
    ).fetchall()
    return dict(rows)


def _lock_rows(conn: psycopg.Connection, table: TableRef, bounds: tuple | None) -> None:
    """Serialize writers of the same partition days (or table) until this transaction ends.

    Without it, two runs replacing the same partition could both delete the old rows and both
    insert, since neither sees the other's uncommitted rows.
    """
    key = int.from_bytes(
        hashlib.blake2b(str(table).encode(), digest_size=4).digest(), "big", signed=True
    )
    if bounds is None:
        conn.execute("SELECT pg_advisory_xact_lock(%s::int, 0)", [key])
    else:
        conn.execute(
            "SELECT pg_advisory_xact_lock(%s::int, d) "
            "FROM generate_series(%s::int, %s::int - 1) AS d",
            [key, bounds[0].toordinal(), bounds[1].toordinal()],
        )


def write_frame(
    conn: psycopg.Connection,
    table: TableRef,
    df: pd.DataFrame | Iterable[pd.DataFrame],
    bounds: tuple[dt.date, dt.date] | None,
    json_columns: Sequence[str] = (),
    primary_key: Sequence[str] = (),
    scope: Mapping[str, str] | None = None,
) -> None:
    """Replace the rows of ``bounds`` within ``scope`` (or upsert / replace the whole table)
    by ``df``: a frame, or frames COPYed one after the other in the same transaction.

    A partitioned load into a table holding no rows at all (its first) drops the table's
    primary key and indexes, COPYs, and builds them again before ``COMMIT``, as pg_restore
    loads (see ``_drop_indexes_if_empty``). The trade-off: that transaction holds the table's
    ``ACCESS EXCLUSIVE`` lock until it commits, so while a first load runs, other writers of the
    table (other days, other scopes) wait for it, and so do its readers, who would have seen an
    empty table. Loads into a table that already holds rows are unchanged and run side by side.
    """
    frames = iter([df] if isinstance(df, pd.DataFrame) else df)
    first = next(frames, None)
    if first is None:
        if _existing_columns(conn, table):
            with conn.transaction():
                _lock_rows(conn, table, bounds)
                where, params = row_filter(bounds, scope, "%s")
                conn.execute(f"DELETE FROM {table.sql}{where}", params)
        return
    types = _prepare(conn, table, first, bounds, json_columns, primary_key, scope)
    target = table.sql
    if not isinstance(df, pd.DataFrame):
        # A stream's next frame is made (read, split, validated...) in a worker thread while
        # the server stores this one: the two overlap instead of taking turns.
        frames = made_ahead(frames)
    try:
        with conn.transaction():
            _lock_rows(conn, table, bounds)
            if bounds is None and primary_key:
                if not first.empty:
                    _upsert(conn, table, first, types, list(primary_key))
                for frame in frames:
                    types = _prepare(conn, table, frame, bounds, json_columns, primary_key, scope)
                    if not frame.empty:
                        _upsert(conn, table, frame, types, list(primary_key))
                return
            # Only a partition's replacement, and only when there are rows to load: an empty frame
            # would rebuild the indexes for nothing (later frames of a stream cannot be known yet).
            rebuild = None
            if bounds is not None and not first.empty:
                rebuild = _drop_indexes_if_empty(conn, table)
            if rebuild is None:
                where, params = row_filter(bounds, scope, "%s")
                conn.execute(f"DELETE FROM {target}{where}", params)
            if not first.empty:
                _copy_into(conn, target, first, types)
            for frame in frames:
                # A later chunk's new column is added inside this transaction (a savepoint).
                types = _prepare(conn, table, frame, bounds, json_columns, primary_key, scope)
                if not frame.empty:
                    _copy_into(conn, target, frame, types)
            if rebuild is not None:
                _rebuild_indexes(conn, table, rebuild)
    except (psycopg.errors.UniqueViolation, psycopg.errors.ExclusionViolation) as exc:
        # Rolled back: the day is as it was.
        raise _key_error(table, f"key (constraint {exc.diag.constraint_name})", exc) from exc
    except psycopg.errors.CardinalityViolation as exc:
        raise WarehouseError(
            f"{table}: the rows to upsert repeat a primary key {list(primary_key)}: "
            f"{exc.diag.message_primary} Nothing was written."
        ) from exc


class _KeepIndexes(Exception):
    """The table cannot take a load without its indexes: it has rows, or they cannot be
    dropped and rebuilt the same (see ``_drop_indexes_if_empty``)."""


# The table's indexes, each with what rebuilds it: (index, its constraint or None, definition,
# whether the rebuild would lose something of it). ``pg_get_constraintdef`` and
# ``pg_get_indexdef`` are what pg_dump rebuilds them from; neither gives what ALTER INDEX set
# (clustering, replica identity, a tablespace, per-column statistics) nor a COMMENT.
_INDEXES = """
SELECT i.indexrelid::regclass::text,
       c.conname,
       CASE WHEN c.oid IS NULL THEN pg_get_indexdef(i.indexrelid)
            ELSE pg_get_constraintdef(c.oid) END,
       t.relkind <> 'r' OR t.relispartition OR NOT i.indisvalid OR NOT i.indisready
         OR i.indisclustered OR i.indisreplident OR ic.reltablespace <> 0
         OR obj_description(i.indexrelid, 'pg_class') IS NOT NULL
         OR (c.oid IS NOT NULL AND obj_description(c.oid, 'pg_constraint') IS NOT NULL)
         OR EXISTS (SELECT FROM pg_attribute a
                    WHERE a.attrelid = i.indexrelid AND a.attstattarget >= 0)
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
LEFT JOIN pg_constraint c
  ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid AND c.contype IN ('p', 'u', 'x')
WHERE i.indrelid = %s::regclass
ORDER BY c.oid IS NULL, c.contype <> 'p', ic.relname
"""


def _drop_indexes_if_empty(
    conn: psycopg.Connection, table: TableRef
) -> list[tuple[str, str | None, str]] | None:
    """When ``table`` holds no rows, drop its primary key and indexes (in the caller's
    transaction) and return what rebuilds them; else change nothing and return None.

    COPY into a table without indexes, then one sorted build of each, is what pg_restore does:
    the 1M-row products day of ``benchmarks/bench_postgres.py`` (``io_new``) loaded in
    2.0-2.3 s instead of 2.7-3.1 s.

    Locks. ``SHARE ROW EXCLUSIVE`` is the weakest mode that conflicts both with itself and with
    the ``ROW EXCLUSIVE`` every writer takes (DELETE, COPY): once granted, no other transaction
    has uncommitted rows in the table or can add any, so "empty" stays true until COMMIT, and
    readers still get in while it waits for the writers already running. (``SHARE`` blocks
    writers too, but not itself: two first loads could both find the table empty, then
    deadlock upgrading.) Dropping an index needs ``ACCESS EXCLUSIVE``, which readers wait for
    too, until COMMIT. Emptiness is looked at once first without that lock, so a load into a
    table holding rows never waits for other writers; that look is rolled back (a savepoint)
    to release its ``ACCESS SHARE`` before waiting for ``SHARE ROW EXCLUSIVE``: kept, two first
    loads would deadlock, each upgrading past the other's.

    None (the caller loads as before, the locks taken here released with their savepoint)
    when the table has rows, has no index, something depends on its key (a foreign key, a
    view), ``_INDEXES`` says a rebuild would lose something, or the role may not drop the
    indexes (not the table's owner).
    """
    target = table.sql
    probe = f"SELECT EXISTS (SELECT FROM {target})"
    with conn.transaction(force_rollback=True):
        if conn.execute(probe).fetchone()[0]:
            return None
    try:
        with conn.transaction():  # a savepoint: on _KeepIndexes, its locks go with it
            conn.execute(f"LOCK TABLE {target} IN SHARE ROW EXCLUSIVE MODE")
            if conn.execute(probe).fetchone()[0]:
                raise _KeepIndexes  # a writer committed rows in between
            indexes = conn.execute(_INDEXES, [target]).fetchall()
            if not indexes or any(lossy for *_, lossy in indexes):
                raise _KeepIndexes  # (no indexes: nothing to gain from holding the lock)
            for index, constraint, *_ in indexes:
                if constraint is None:
                    conn.execute(f"DROP INDEX {index}")
                else:
                    conn.execute(f"ALTER TABLE {target} DROP CONSTRAINT {quote_ident(constraint)}")
    except (
        _KeepIndexes,
        psycopg.errors.DependentObjectsStillExist,
        psycopg.errors.InsufficientPrivilege,
    ):
        return None
    return [(index, constraint, definition) for index, constraint, definition, _ in indexes]


def _rebuild_indexes(
    conn: psycopg.Connection, table: TableRef, indexes: Sequence[tuple[str, str | None, str]]
) -> None:
    """Build again the indexes ``_drop_indexes_if_empty`` dropped, with their names and
    definitions. Rows the key refuses fail the load naming the table, the key and a value."""
    for index, constraint, definition in indexes:
        if constraint is None:
            statement, what = definition, f"index {index}"
        else:
            statement = f"ALTER TABLE {table.sql} ADD CONSTRAINT {quote_ident(constraint)} "
            statement += definition
            what = f"{definition} (constraint {constraint})"
        try:
            conn.execute(statement)
        except (psycopg.errors.UniqueViolation, psycopg.errors.ExclusionViolation) as exc:
            raise _key_error(table, what, exc) from exc


def _key_error(table: TableRef, what: str, exc: psycopg.Error) -> WarehouseError:
    """Rows that break a unique key or exclusion constraint, said naming the table, the key
    (``what``) and the server's detail (the key's value)."""
    detail = exc.diag.message_detail or exc.diag.message_primary
    return WarehouseError(
        f"{table}: the rows loaded break its {what}: {detail} Nothing was written."
    )


def _prepare(
    conn: psycopg.Connection,
    table: TableRef,
    df: pd.DataFrame,
    bounds: tuple[dt.date, dt.date] | None,
    json_columns: Sequence[str],
    primary_key: Sequence[str],
    scope: Mapping[str, str] | None,
) -> dict[str, str]:
    """Check a frame; create the table or add its new columns; the types to convert it to."""
    if bounds is not None:
        check_partition_column(df, table, bounds)
    check_scope(df, table, scope)
    missing_key = [c for c in primary_key if c not in df.columns]
    if missing_key:
        raise WarehouseError(f"{table}: primary key column(s) {missing_key} are not in the frame")
    # An exact decimal is NUMERIC (unconstrained: the dataset's scale is enforced upstream).
    types = {
        c: PG_TYPES.get(t) or "numeric" for c, t in logical_types(df, list(json_columns)).items()
    }
    existing = _ensure_table(conn, table, df, types, list(primary_key), bounds is not None)
    # Convert to what the table holds, so e.g. a bigint into a text column arrives as text.
    return {c: existing[c] for c in df.columns}


def _upsert(
    conn: psycopg.Connection,
    table: TableRef,
    df: pd.DataFrame,
    types: dict[str, str],
    key: list[str],
) -> None:
    columns = [str(c) for c in df.columns]
    names = ", ".join(quote_ident(c) for c in columns)
    conn.execute(
        f"CREATE TEMP TABLE _ingest_stage ON COMMIT DROP AS "
        f"SELECT {names} FROM {table.sql} WITH NO DATA"
    )
    _copy_into(conn, "_ingest_stage", df, types)
    updates = [f"{quote_ident(c)} = EXCLUDED.{quote_ident(c)}" for c in columns if c not in key]
    action = f"DO UPDATE SET {', '.join(updates)}" if updates else "DO NOTHING"
    try:
        conn.execute(
            f"INSERT INTO {table.sql} ({names}) SELECT {names} FROM _ingest_stage "
            f"ON CONFLICT ({', '.join(map(quote_ident, key))}) {action}"
        )
    except psycopg.errors.InvalidColumnReference as exc:
        raise WarehouseError(
            f"{table}: cannot upsert on primary key {key}: the table has no unique constraint "
            f"on exactly these columns ({exc.diag.message_primary})"
        ) from exc


def read_frame(
    conn: psycopg.Connection,
    table: TableRef,
    bounds: tuple[dt.date, dt.date] | None,
    columns: Sequence[str] | None = None,
    scope: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """The partition window (or whole table) as a frame with the dtypes DuckDB's reader gives.

    ``columns`` keeps only those columns (an input's ``columns`` metadata), e.g. to count rows.
    """
    with conn.transaction():
        # One snapshot for the column list and the rows.
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        existing = _existing_columns(conn, table)
        require_readable(table, existing, columns)
        if columns:
            existing = {c: existing[c] for c in columns}
        query = f"SELECT {', '.join(quote_ident(c) for c in existing)} FROM {table.sql}"
        buffer = io.BytesIO()
        _copy_out(conn, query + _literal_filter(bounds, scope), buffer)
    buffer.seek(0)
    return loaded_frame(pacsv.read_csv(buffer, **_csv_options(existing)))


def _copy_out(conn: psycopg.Connection, query: str, sink: Any) -> None:
    """Write the rows of ``query`` as CSV with a header into ``sink`` (a binary file)."""
    with (
        conn.cursor() as cur,
        cur.copy(f"COPY ({query}) TO STDOUT (FORMAT csv, HEADER)") as copy,
    ):
        for chunk in copy:
            sink.write(chunk)


def _literal_filter(
    bounds: tuple[dt.date, dt.date] | None, scope: Mapping[str, str] | None = None
) -> str:
    """``row_filter`` with literals: COPY takes no parameters. Bounds are dates (their ISO text
    is a safe literal); scope values are quoted as string literals."""
    clauses = []
    if bounds is not None:
        start, end = (d.isoformat() for d in bounds)
        column = quote_ident(PARTITION_COLUMN)
        clauses += [f"{column} >= DATE '{start}'", f"{column} < DATE '{end}'"]
    for name, value in (scope or {}).items():
        clauses.append(f"{quote_ident(name)} = '{str(value).replace(chr(39), chr(39) * 2)}'")
    return " WHERE " + " AND ".join(clauses) if clauses else ""


def _csv_options(existing: Mapping[str, str]) -> dict[str, Any]:
    return {
        "parse_options": pacsv.ParseOptions(newlines_in_values=True),
        "convert_options": pacsv.ConvertOptions(
            column_types={c: _ARROW_TYPES.get(t, pa.string()) for c, t in existing.items()},
            # PostgreSQL writes NULL as an empty field and '' as "": keep them apart.
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            true_values=["t"],
            false_values=["f"],
        ),
    }


def read_batches(
    conn: psycopg.Connection,
    table: TableRef,
    bounds: tuple[dt.date, dt.date],
    columns: Sequence[str] | None,
    order_by: Sequence[str],
    chunk_rows: int = READ_CHUNK_ROWS,
) -> Iterator[pd.DataFrame]:
    """The partition window in chunks: COPYed to a temporary file (one snapshot), then read
    back by Arrow's streaming CSV reader, so memory holds one chunk, not the partition."""
    with tempfile.TemporaryFile() as spool:
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            existing = _existing_columns(conn, table)
            if not existing:
                return
            wanted = list(columns) if columns else list(existing)
            selected = ", ".join(
                quote_ident(c) if c in existing else f"NULL::text AS {quote_ident(c)}"
                for c in wanted
            )
            order = ", ".join(quote_ident(c) for c in order_by if c in existing)
            query = f"SELECT {selected} FROM {table.sql}{_literal_filter(bounds)}"
            query += f" ORDER BY {order}" if order else ""
            _copy_out(conn, query, spool)
        spool.seek(0)
        types = {c: existing.get(c, "text") for c in wanted}
        reader = pacsv.open_csv(
            spool,
            read_options=pacsv.ReadOptions(block_size=16 << 20),
            **_csv_options(types),
        )
        pending: list[pa.RecordBatch] = []
        rows = 0
        for batch in reader:
            pending.append(batch)
            rows += batch.num_rows
            if rows >= chunk_rows:
                yield loaded_frame(pa.Table.from_batches(pending))
                pending, rows = [], 0
        if pending:
            yield loaded_frame(pa.Table.from_batches(pending))


class _CopyStage:
    """A raw partition written as it arrives, in one transaction: the day's old rows deleted,
    then each batch ``COPY``ed straight into the table, ``COMMIT`` by ``commit``.

    Until then readers see the old partition (MVCC); a failed or killed fetch rolls back and
    leaves it as it was. Each row is written once: a temporary table swapped in by
    ``INSERT ... SELECT`` wrote it twice and took 50% longer (100k DummyJSON-shaped records).
    Another writer of the same day waits for this one's whole fetch (``_lock_rows``). Columns
    the first batch needs are added before the transaction, in a short one of their own; a
    field first seen later in the day is added inside it, so its ``ACCESS EXCLUSIVE`` lock is
    then held until the day commits. Unlike ``write_frame``, a first load keeps the table's index
    (``_drop_indexes_if_empty``): the transaction lasts the whole fetch, and the ``ACCESS
    EXCLUSIVE`` lock a drop needs would hold every reader and every other day's fetch off that
    long, to spare the upkeep of one index on a column that is the same all day.
    """

    def __init__(
        self, conn: psycopg.Connection, partition: StagedPartition, transaction: ExitStack
    ) -> None:
        self.conn = conn
        self.partition = partition
        self.transaction = transaction
        self.columns: dict[str, str] | None = None  # the table's, once the transaction is open
        self.rows = 0
        # The open COPY (cursor, its context, the Copy), its column order and their exact types.
        self.copy: tuple[Any, Any, Any] | None = None
        self.order: list[str] = []
        self.exact: dict[str, str] = {}

    def _begin(self, names: Sequence[str]) -> dict[str, str]:
        part = self.partition
        types = {**_RAW_TYPES, **{c: _RAW_TYPES.get(c, "text") for c in names}}
        columns = _ensure_columns(self.conn, part.table, types)
        self.transaction.enter_context(self.conn.transaction())
        # The open COPY is left before the transaction, with its outcome (finished or aborted).
        self.transaction.push(self._end_copy)
        day = (part.day, part.day + dt.timedelta(days=1))
        _lock_rows(self.conn, part.table, day)
        where, params = row_filter(day, None, "%s")
        self.conn.execute(f"DELETE FROM {part.table.sql}{where}", params)
        return columns

    def append(self, batch: pa.RecordBatch) -> None:
        if not batch.num_rows:
            return
        names = batch.schema.names
        if self.columns is None:
            self.columns = self._begin(names)
        part = self.partition
        rows = batch.num_rows
        constants = {
            "partition_date": pa.repeat(pa.scalar(part.day, pa.date32()), rows),
            "_run_id": pa.repeat(pa.scalar(part.run_id, pa.string()), rows),
            "_ingested_at": pa.repeat(
                pa.scalar(part.ingested_at.to_pydatetime(), pa.timestamp("us", tz="UTC")), rows
            ),
        }
        table = pa.Table.from_batches([batch])
        for name, array in constants.items():
            table = table.append_column(name, array)
        self._write(table)
        self.rows += rows

    def _write(self, table: pa.Table) -> None:
        """Into the day's one open binary ``COPY``: the server stores a batch while the next is
        fetched and encoded, instead of each batch's ``COPY`` waiting for the server to finish.
        A field not seen before ends that ``COPY`` (a column is added between two); a batch
        without some fields gets NULLs in them."""
        names = table.column_names
        assert self.columns is not None
        new = [c for c in names if c not in self.columns]
        if self.copy is None or new:
            self._end_copy(None, None, None)
            for column in new:
                check_identifier(self.partition.table, column)
                self.conn.execute(
                    f"ALTER TABLE {self.partition.table.sql} ADD COLUMN {quote_ident(column)} text"
                )
                self.columns[column] = "text"
            target = self.partition.table.sql
            plan = _binary_plan(self.conn, target, list(dict.fromkeys([*self.order, *names])))
            if plan is None:
                _copy_arrow(self.conn, target, iter([table]))
                return
            self.order, self.exact = plan
            cursor = self.conn.cursor()
            opened = cursor.copy(_copy_in(target, self.order, "binary"))
            self.copy = (cursor, opened, opened.__enter__())
            self.copy[2].write(SIGNATURE)
        for column in self.order:
            if column not in names:
                table = table.append_column(column, pa.nulls(len(table), pa.string()))
        self.copy[2].write(encode_rows(table, self.exact, self.order))

    def _end_copy(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        """Finish the open ``COPY`` (or abort it, on an error); never swallows the error."""
        if self.copy is not None:
            cursor, opened, copy = self.copy
            self.copy = None
            try:
                if exc_type is None:
                    copy.write(TRAILER)
                opened.__exit__(exc_type, exc, tb)
            finally:
                cursor.close()
        return False

    def commit(self) -> int:
        if self.columns is None:  # no records: the day is emptied all the same
            self.columns = self._begin([])
        self.transaction.close()
        return self.rows


_RAW_TYPES = {
    "partition_date": "date",
    "_run_id": "text",
    "_ingested_at": "timestamp with time zone",
    "_seq": "bigint",
    "_record": "jsonb",
    "_parse_error": "text",
}


class PostgresPartitionedIOManager(PartitionedTableIOManager):
    """Stores each asset as the PostgreSQL table ``<schema>.<table>`` named by its asset key.

    A partitioned asset's output replaces exactly its partition window's rows in one
    transaction; an unpartitioned one is upserted on its ``primary_key`` definition metadata,
    or replaces the table when it has none. ``json_columns`` are stored as ``jsonb``.
    """

    warehouse: ClassVar[str] = "postgresql"
    url: str

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # The default repr would print the password wherever the resource is shown.
        for name, value in super().__repr_args__():
            yield name, redact_url(value) if name == "url" and isinstance(value, str) else value

    def write(
        self,
        table: TableRef,
        df: pd.DataFrame,
        bounds: tuple[dt.date, dt.date] | None,
        json_columns: Sequence[str],
        primary_key: Sequence[str],
        scope: Mapping[str, str] | None = None,
    ) -> None:
        with connect(self.url) as conn:
            write_frame(conn, table, df, bounds, json_columns, primary_key, scope)

    def read(
        self,
        table: TableRef,
        bounds: tuple[dt.date, dt.date] | None,
        columns: Sequence[str] | None,
        scope: Mapping[str, str] | None = None,
    ) -> pd.DataFrame:
        with connect(self.url) as conn:
            return read_frame(conn, table, bounds, columns, scope)

    placeholder = "%s"

    def fetch_all(self, query: str, params: Sequence[Any]) -> list[tuple]:
        with connect(self.url) as conn:
            return conn.execute(query, list(params)).fetchall()

    def read_records(self, table: TableRef, day: dt.date, seqs: Sequence[int]) -> dict[int, str]:
        if not len(seqs):
            return {}
        with connect(self.url) as conn:
            rows = conn.execute(
                f"SELECT _seq, _record::text FROM {table.sql} "
                "WHERE partition_date = %s AND _seq = ANY(%s)",
                [day, [int(s) for s in seqs]],
            ).fetchall()
        return dict(rows)

    @contextmanager
    def stage(self, partition: StagedPartition) -> Iterator[_CopyStage]:
        # The transaction is left (rolled back, unless committed) before the connection closes.
        with connect(self.url) as conn, ExitStack() as transaction:
            yield _CopyStage(conn, partition, transaction)

    def read_batches(
        self,
        table: TableRef,
        bounds: tuple[dt.date, dt.date],
        columns: Sequence[str] | None,
        order_by: Sequence[str],
        chunk_rows: int = READ_CHUNK_ROWS,
    ) -> Iterator[pd.DataFrame]:
        with connect(self.url) as conn:
            yield from read_batches(conn, table, bounds, columns, order_by, chunk_rows)
