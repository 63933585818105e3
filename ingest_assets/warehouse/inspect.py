"""Read-only questions about the warehouse, for the demo summary and tests."""

from __future__ import annotations

from ingest_assets.warehouse import duckdb_path, warehouse_kind
from ingest_assets.warehouse.common import PARTITION_COLUMN, quote_ident

TABLES_SQL = (
    "SELECT table_schema, table_name FROM information_schema.tables "
    "WHERE table_schema IN ('raw', 'quarantine', 'cleaned', 'features', 'metrics') "
    "ORDER BY 1, 2"
)


def _query(url: str, sql: str, params: list | None = None) -> list[tuple]:
    if warehouse_kind(url) == "duckdb":
        from ingest_assets.warehouse.duckdb_io import connect

        with connect(duckdb_path(url)) as con:
            return con.execute(sql, params or []).fetchall()
    from ingest_assets.warehouse.postgres_io import connect

    with connect(url) as con:
        return con.execute(sql.replace("?", "%s"), params or []).fetchall()


def partition_counts(url: str, partition: str) -> dict[str, int]:
    """Rows of one partition in every warehouse table."""
    counts = {}
    for schema, table in _query(url, TABLES_SQL):
        target = f"{quote_ident(schema)}.{quote_ident(table)}"
        sql = (
            f"SELECT count(*) FROM {target} WHERE {quote_ident(PARTITION_COLUMN)} = CAST(? AS DATE)"
        )
        counts[f"{schema}.{table}"] = _query(url, sql, [partition])[0][0]
    return counts


def quarantine_rows(url: str, partition: str) -> list[tuple[str, str]]:
    """(source, errors JSON) of every quarantined record of a partition."""
    sql = (
        "SELECT source, CAST(errors AS TEXT) FROM quarantine.records "
        f"WHERE {quote_ident(PARTITION_COLUMN)} = CAST(? AS DATE) ORDER BY source"
    )
    return [(s, e) for s, e in _query(url, sql, [partition])]


def table_rows(url: str, table: str, partition: str | None = None, limit: int = 20):
    """Up to ``limit`` rows of ``schema.table`` (of one day, if given) as a DataFrame;
    ``LookupError`` names a table that is not there."""
    import pandas as pd

    tables = {f"{s}.{t}" for s, t in _query(url, TABLES_SQL)}
    if table not in tables:
        known = ", ".join(sorted(tables)) or "none yet"
        raise LookupError(f"no table {table!r} in the warehouse (tables: {known})")
    schema, name = table.split(".", 1)
    target = f"{quote_ident(schema)}.{quote_ident(name)}"
    columns = [
        c
        for (c,) in _query(
            url,
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
            [schema, name],
        )
    ]
    where, params = "", []
    if partition is not None and PARTITION_COLUMN in columns:
        where, params = f" WHERE {quote_ident(PARTITION_COLUMN)} = CAST(? AS DATE)", [partition]
    rows = _query(url, f"SELECT * FROM {target}{where} LIMIT {int(limit)}", params)
    return pd.DataFrame(rows, columns=columns)
