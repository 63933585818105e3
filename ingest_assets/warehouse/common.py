"""What every warehouse IO manager shares: table naming, column typing and partition bounds.

The frame an asset returns is the single description of its table. Column types are derived
from pandas dtypes, with two conventions carried in the asset's definition metadata:

- ``json_columns``: text columns that hold JSON documents (stored as JSON/JSONB where the
  warehouse has it);
- ``primary_key``: the columns that identify a row (a unique constraint where the warehouse
  supports it).

``partition_date`` is always a calendar date.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import pandas as pd
from pandas.api import types as ptypes

PARTITION_COLUMN = "partition_date"

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class WarehouseError(Exception):
    """A table or column cannot be written as asked; the message names them."""


@dataclass(frozen=True)
class TableRef:
    schema: str
    table: str

    @classmethod
    def from_asset_key(cls, path: Sequence[str]) -> TableRef:
        if len(path) < 2:
            raise WarehouseError(
                f"asset key {list(path)} needs a [schema, table] form to be stored in the warehouse"
            )
        schema, table = path[-2], path[-1]
        for name in (schema, table):
            if not _IDENTIFIER.match(name):
                raise WarehouseError(f"{name!r} is not a valid table or schema name")
        return cls(schema, table)

    @property
    def sql(self) -> str:
        """The quoted ``"schema"."table"`` for SQL text (DuckDB and PostgreSQL alike)."""
        return f"{quote_ident(self.schema)}.{quote_ident(self.table)}"

    def __str__(self) -> str:
        return f"{self.schema}.{self.table}"


def redact_url(url: str) -> str:
    """The URL with its password (in the user info or a ``password=`` parameter) masked."""
    url = re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:@/?#]*):[^@/]*@", r"\1:***@", url)
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", url)


def quote_ident(name: str) -> str:
    """Quote an identifier for SQL (DuckDB and PostgreSQL share the rule)."""
    return '"' + name.replace('"', '""') + '"'


def logical_types(df: pd.DataFrame, json_columns: Sequence[str] = ()) -> dict[str, str]:
    """Map each column to one of: date, timestamptz, timestamp, double, bigint, boolean, text,
    json, or ``decimal(38,S)`` (a column of ``decimal.Decimal`` values of scale S: exact)."""
    types: dict[str, str] = {}
    for name, dtype in df.dtypes.items():
        column = str(name)
        if column in json_columns:
            types[column] = "json"
        elif column == PARTITION_COLUMN:
            types[column] = "date"
        elif isinstance(dtype, pd.ArrowDtype) and _arrow_logical(dtype):
            types[column] = _arrow_logical(dtype)
        elif isinstance(dtype, pd.DatetimeTZDtype):
            types[column] = "timestamptz"
        elif ptypes.is_datetime64_dtype(dtype):
            types[column] = "timestamp"
        elif ptypes.is_bool_dtype(dtype):
            types[column] = "boolean"
        elif ptypes.is_integer_dtype(dtype):
            types[column] = "bigint"
        elif ptypes.is_float_dtype(dtype):
            types[column] = "double"
        elif ptypes.is_object_dtype(dtype) or ptypes.is_string_dtype(dtype):
            types[column] = _object_type(df[column])
        else:
            types[column] = "text"
    return types


def _arrow_logical(dtype: pd.ArrowDtype) -> str | None:
    """Arrow-backed dates and exact decimals (the string types are text as before)."""
    import pyarrow as pa

    arrow = dtype.pyarrow_dtype
    if pa.types.is_date(arrow):
        return "date"
    if pa.types.is_decimal(arrow):
        return f"decimal(38,{arrow.scale})"
    return None


def _object_type(series: pd.Series) -> str:
    """An object column holding only dates stays a date, only bools a boolean; else text."""
    if not ptypes.is_object_dtype(series.dtype):
        return "text"  # a string dtype holds nothing else
    # One pass in C over the values (not an isinstance call per value).
    kind = pd.api.types.infer_dtype(series, skipna=True)
    if kind == "decimal":
        exponents = [v.as_tuple().exponent for v in series.dropna()]
        scale = max((-e for e in exponents if isinstance(e, int)), default=0)
        return f"decimal(38,{max(scale, 0)})"
    if kind == "date":  # "date" also admits datetimes among dates: those make it text
        dated = series.dropna()
        return "date" if not any(isinstance(v, dt.datetime) for v in dated) else "text"
    return "boolean" if kind == "boolean" else "text"


def partition_dates(context) -> tuple[dt.date, dt.date] | None:
    """The [start, end) dates of the partition (or range) an IO manager is handling, if any."""
    if not context.has_asset_partitions:
        return None
    window = context.asset_partitions_time_window
    return window.start.date(), window.end.date()


def definition_list(metadata: Mapping[str, object] | None, key: str) -> list[str]:
    """Read a list of column names from an asset's definition metadata."""
    if not metadata or key not in metadata:
        return []
    value = metadata[key]
    value = getattr(value, "value", value)
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]  # type: ignore[union-attr]


def text_types_mapper(arrow_type: object) -> object:
    """Read text as Arrow-backed strings: a day of millions of rows holds its text in Arrow
    buffers (bytes), not as one Python object per value (about 50 bytes more each)."""
    import pyarrow as pa

    if arrow_type in (pa.string(), pa.large_string()):
        return pd.StringDtype("pyarrow")
    return None


def normalize_loaded(df: pd.DataFrame) -> pd.DataFrame:
    """Give frames read back from any warehouse the same dtypes the assets wrote."""
    out = df
    for column in out.columns:
        dtype = out[column].dtype
        if isinstance(dtype, pd.DatetimeTZDtype):
            out[column] = out[column].dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
        elif ptypes.is_datetime64_dtype(dtype):
            out[column] = out[column].astype("datetime64[ns]")
        elif ptypes.is_integer_dtype(dtype) and not ptypes.is_bool_dtype(dtype):
            # Whole numbers are nullable everywhere in this project (Pandera models use Int64).
            out[column] = out[column].astype("Int64")
    if PARTITION_COLUMN in out.columns and not ptypes.is_datetime64_dtype(out[PARTITION_COLUMN]):
        out[PARTITION_COLUMN] = pd.to_datetime(out[PARTITION_COLUMN])
    return out


def require_readable(
    table: TableRef, existing: Mapping[str, str], columns: Sequence[str] | None
) -> None:
    """A table to read must exist, and have every column asked for."""
    if not existing:
        raise WarehouseError(
            f"{table} does not exist in the warehouse yet: materialize its asset first"
        )
    unknown = [c for c in columns or [] if c not in existing]
    if unknown:
        raise WarehouseError(f"{table} has no column(s) {', '.join(unknown)}")


def check_partition_column(
    df: pd.DataFrame, table: TableRef, bounds: tuple[dt.date, dt.date]
) -> None:
    """Refuse to write rows that fall outside the partition being replaced."""
    if PARTITION_COLUMN not in df.columns:
        raise WarehouseError(f"{table}: a partitioned table needs a {PARTITION_COLUMN!r} column")
    if df.empty:
        return
    dates = pd.to_datetime(df[PARTITION_COLUMN])
    if isinstance(dates.dtype, pd.DatetimeTZDtype):
        dates = dates.dt.tz_localize(None)  # the wall-clock date, as written
    start, end = bounds
    outside = dates[(dates < pd.Timestamp(start)) | (dates >= pd.Timestamp(end))]
    if not outside.empty:
        raise WarehouseError(
            f"{table}: {len(outside)} rows have {PARTITION_COLUMN} outside the partition "
            f"[{start}, {end}), e.g. {outside.iloc[0].date()}"
        )


def row_filter(
    bounds: tuple[dt.date, dt.date] | None,
    scope: Mapping[str, str] | None = None,
    placeholder: str = "?",
) -> tuple[str, list[object]]:
    """The ``WHERE`` clause (and its parameters) selecting a partition window within a scope."""
    clauses: list[str] = []
    params: list[object] = []
    if bounds is not None:
        column = quote_ident(PARTITION_COLUMN)
        clauses += [f"{column} >= {placeholder}", f"{column} < {placeholder}"]
        params += list(bounds)
    for name, value in (scope or {}).items():
        clauses.append(f"{quote_ident(name)} = {placeholder}")
        params.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def check_column_type(
    df: pd.DataFrame,
    table: TableRef,
    column: str,
    have: str,
    wanted: str,
    widens: Collection[tuple[str, str]],
) -> None:
    """A column the table holds as ``have`` takes new data of type ``wanted`` when the types
    are equal, the new one widens into it (``(wanted, have)`` in ``widens``) or the new data has
    no values in it; anything else is refused, naming table, column and both types."""
    if have != wanted and (wanted, have) not in widens and df[column].notna().any():
        raise WarehouseError(
            f"{table}: column {column!r} is {have} in the warehouse but the new data is "
            f"{wanted}; migrate the column or rename it"
        )


def check_scope(df: pd.DataFrame, table: TableRef, scope: Mapping[str, str] | None) -> None:
    """Refuse to write rows outside the scope being replaced (they would never be deleted)."""
    for name, value in (scope or {}).items():
        if name not in df.columns:
            raise WarehouseError(f"{table}: the frame has no scope column {name!r}")
        outside = df[df[name] != value]
        if len(outside):
            raise WarehouseError(
                f"{table}: {len(outside)} rows have {name} other than {value!r}, the scope written"
            )


def loaded_frame(arrow: object) -> pd.DataFrame:
    """An Arrow table (or batch) read from a warehouse as the frame every reader hands back,
    whole or in chunks.

    Text is Arrow-backed (``text_types_mapper``): a record's JSON is kilobytes, and as Python
    strings a chunk of them would weigh several times its size; Pandera's and pandas' string
    work on it runs in Arrow. Whole numbers are ``Int64`` and boolean columns holding NULLs
    ``boolean``. Each Arrow column is released once converted, so a read holds about one copy
    of the table, not two.
    """
    import pyarrow as pa

    if isinstance(arrow, pa.RecordBatch):
        arrow = pa.Table.from_batches([arrow])
    names = list(arrow.column_names)
    special = {
        name: arrow.column(name).to_pandas(types_mapper={pa.bool_(): pd.BooleanDtype()}.get)
        for name in names
        if arrow.column(name).type == pa.bool_() and arrow.column(name).null_count
    }
    rest = arrow.drop_columns(list(special))
    del arrow
    df = rest.to_pandas(
        date_as_object=False,
        types_mapper=lambda t: pd.Int64Dtype() if t == pa.int64() else text_types_mapper(t),
        split_blocks=True,
        self_destruct=True,
    )
    del rest
    for name, values in special.items():
        df[name] = values.array
    return normalize_loaded(df[names])


_T = TypeVar("_T")
_END: Any = object()


def made_ahead(items: Iterator[_T]) -> Iterator[_T]:
    """``items``, each made in a worker thread while the caller consumes the one before.

    A writer consuming a stream of chunks stores one (the server's or DuckDB's work, without
    the GIL) while the next is read, split and validated: the two overlap instead of taking
    turns, with one chunk in flight. An error making an item is raised here, in order.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="ingest-ahead") as pool:
        pending = pool.submit(next, items, _END)
        while (item := pending.result()) is not _END:
            pending = pool.submit(next, items, _END)
            yield item
