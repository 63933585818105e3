"""Features and metrics as SQL: DuckDB evaluates declared expressions over a chunk of rows.

Each call gets its own connection (a cursor of one in-memory database per process): UTC session
time zone, one thread (float sums in a fixed order, so a day gives the same values every run),
and the macro
``round_half_even(x, n)``, which rounds as pandas does (``x * 10^n`` to the nearest even whole
number, divided back; DuckDB's own ``round`` rounds half away from zero).

Window functions stay inside the step's groups: the compiler adds the groups to every window's
``PARTITION BY`` (DuckDB's own parse tree, ``json_serialize_sql``, rewritten and read back), so
``min(price) over ()`` is the minimum of the row's group, and a chunk of whole groups gives what
the whole day gives. Expressions are bound at load against an empty table of the declared
columns: a typo fails the load, and an undeclared type is inferred there. No dagster here.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

INPUT = "__input"
ROW = "__i"
_MACROS = ("CREATE MACRO round_half_even(x, n) AS round_even(x * pow(10, n), 0) / pow(10, n)",)


class SqlError(ValueError):
    """An expression DuckDB cannot parse or bind; the message is DuckDB's first line."""


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


_DATABASE: tuple[int, duckdb.DuckDBPyConnection] | None = None
_LOCK = threading.Lock()


def connect() -> duckdb.DuckDBPyConnection:
    """A connection of its own for one call: a cursor of the process's in-memory database
    (UTC, one thread, the macros), which costs microseconds where a new database costs tens of
    milliseconds (a load binds every expression; a step checks every chunk). Each cursor sees
    only its own registered input and temporary tables, so calls in threads do not meet."""
    global _DATABASE
    with _LOCK:
        # Per process: a DuckDB database must not cross a fork.
        if _DATABASE is None or _DATABASE[0] != os.getpid():
            con = duckdb.connect(":memory:")
            con.execute("SET threads = 1")
            con.execute("SET TimeZone = 'UTC'")
            for macro in _MACROS:
                con.execute(macro)
            _DATABASE = (os.getpid(), con)
        return _DATABASE[1].cursor()


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    for prefix in ("Binder Error: ", "Parser Error: ", "Catalog Error: ", "Conversion Error: "):
        text = text.replace(prefix, "")
    return text.splitlines()[0] if text else type(exc).__name__


def serialize(con: duckdb.DuckDBPyConnection, query: str) -> dict[str, Any]:
    """DuckDB's parse tree of a query (raises ``SqlError`` when it does not parse)."""
    text = con.execute("SELECT json_serialize_sql(?)", [query]).fetchone()[0]
    tree = json.loads(text)
    if tree.get("error"):
        raise SqlError(tree.get("error_message", "cannot parse"))
    return tree


def _nodes(tree: Any) -> Iterable[dict[str, Any]]:
    if isinstance(tree, dict):
        yield tree
        for value in tree.values():
            yield from _nodes(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _nodes(value)


def expression_facts(expression: str) -> tuple[set[str], bool]:
    """(the column names an expression reads, whether it has a window function)."""
    con = connect()
    try:
        tree = serialize(con, f"SELECT {expression} FROM {INPUT}")
    finally:
        con.close()
    columns = {
        node["column_names"][-1]
        for node in _nodes(tree)
        if node.get("class") == "COLUMN_REF" and node.get("column_names")
    }
    windowed = any(node.get("class") == "WINDOW" for node in _nodes(tree))
    return columns, windowed


def scoped(con: duckdb.DuckDBPyConnection, query: str, scope: Sequence[str]) -> str:
    """``query`` with ``scope`` added to the ``PARTITION BY`` of each of its windows."""
    if not scope:
        return query
    tree = serialize(con, query)
    windows = [node for node in _nodes(tree) if node.get("class") == "WINDOW"]
    if not windows:
        return query
    for node in windows:
        refs = [
            {
                "class": "COLUMN_REF",
                "type": "COLUMN_REF",
                "alias": "",
                "query_location": 0,
                "column_names": [name],
            }
            for name in scope
        ]
        node["partitions"] = [*refs, *node.get("partitions", [])]
    return con.execute("SELECT json_deserialize_sql(?)", [json.dumps(tree)]).fetchone()[0]


def features_query(
    con: duckdb.DuckDBPyConnection, columns: Mapping[str, str], scope: Sequence[str]
) -> str:
    """One SELECT per column, each over the one before: a feature may read earlier ones."""
    query = f"SELECT * FROM {INPUT}"
    for name, expression in columns.items():
        query = f"SELECT *, ({expression}) AS {quote(name)} FROM ({query})"
    return scoped(con, query, scope)


def metrics_query(
    con: duckdb.DuckDBPyConnection,
    group_by: Sequence[str],
    columns: Mapping[str, str],
    scope: Sequence[str],
) -> str:
    groups = ", ".join(quote(g) for g in group_by)
    selected = [quote(g) for g in group_by]
    selected += [f"({expression}) AS {quote(name)}" for name, expression in columns.items()]
    query = f"SELECT {', '.join(selected)} FROM {INPUT}"
    if group_by:
        query += f" GROUP BY {groups}"
    return scoped(con, query, scope)


def bind(query: str, input_types: Mapping[str, str]) -> dict[str, str]:
    """The result columns' DuckDB types of ``query`` over an empty input of ``input_types``
    (raises ``SqlError`` with DuckDB's reason when it does not bind)."""
    con = connect()
    try:
        columns = ", ".join(f"{quote(c)} {t}" for c, t in input_types.items())
        con.execute(f"CREATE TEMP TABLE {INPUT} ({columns})")
        try:
            described = con.execute(f"DESCRIBE {query}").fetchall()
        except duckdb.Error as exc:
            raise SqlError(_first_line(exc)) from None
        return {str(row[0]): str(row[1]) for row in described}
    finally:
        con.close()


def as_arrow(frame: pd.DataFrame, columns: Sequence[str]) -> pa.Table:
    """The columns of ``frame`` an expression reads, plus the row number, as Arrow."""
    arrays = {name: frame[name] for name in columns}
    table = pa.Table.from_pandas(pd.DataFrame(arrays), preserve_index=False)
    return table.append_column(ROW, pa.array(range(len(frame)), type=pa.int64()))


def run(query: str, inputs: pa.Table, order_by_row: bool = True) -> pa.Table:
    """``query`` (reading ``__input``) over ``inputs``, in the input's row order."""
    con = connect()
    try:
        con.register(INPUT, inputs)
        final = f"SELECT * FROM ({query})" + (f" ORDER BY {ROW}" if order_by_row else "")
        try:
            return con.sql(final).to_arrow_table()
        except duckdb.Error as exc:
            raise SqlError(_first_line(exc)) from None
    finally:
        con.close()
