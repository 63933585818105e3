"""PostgreSQL writes: the IO manager against ``psql \\copy`` and pandas ``to_sql``.

    python benchmarks/bench_postgres.py [--rows 1000000] [--to-sql-rows 100000] [--json]

``psql \\copy`` of the same rows as a CSV file is the practical limit (no Python, no
conversion); pandas ``to_sql`` is what people write by hand. Every load goes into an identical
table (the IO manager's own: same columns, primary key and indexes), in a throw-away database.
The IO manager comes from ``ingest_assets.warehouse.build_io_manager``, as Dagster uses it.
The new-partition loads go into an empty table, so the IO manager drops the primary key and
builds it after its COPY (``postgres_io.write_frame``), where ``\copy`` and ``to_sql`` keep
it up row by row.

- ``load_vs_psql_copy``: a new partition (empty table), rows/s;
- ``replace_vs_psql_copy``: the same rows over the existing partition, against DELETE +
  ``\\copy`` in one transaction;
- ``load_vs_to_sql``: a new partition against pandas ``to_sql`` (on a tenth of the rows: it is
  slow; rows/s compared).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from benchmarks.harness import (  # noqa: E402
    FULL_RECORDS,
    PYTHON,
    REPO,
    Result,
    announce,
    base_env,
    measure_process,
    ratio,
    scaled,
    temp_database,
)
from ingest_assets.warehouse import build_io_manager  # noqa: E402

PARTITION = "2024-01-01"
PRIMARY_KEY = ["partition_date", "source", "product_id"]
CATEGORIES = ["beauty", "fragrances", "furniture", "groceries", "laptops", "smartphones"]
BRANDS = ["Essence", "Glamour Beauty", "Velvet Touch", "Chic Cosmetics", None]
NAMES = ("load_vs_psql_copy", "replace_vs_psql_copy", "load_vs_to_sql")


def products_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    """A day of ``features.products``-like rows: date, timestamptz, text, double, bigint, bool."""
    rng = np.random.default_rng(seed)
    ids = np.arange(rows)
    price = rng.uniform(1, 2000, rows).round(2)
    rating = rng.uniform(0, 5, rows).round(2)
    rating[rng.random(rows) < 0.05] = np.nan
    stock = rng.integers(0, 500, rows)
    return pd.DataFrame(
        {
            "partition_date": pd.Timestamp(PARTITION),
            "source": "dummyjson_products",
            "product_id": [f"P{i:08d}" for i in ids],
            "sku": [f"SKU-{i % 99991:06d}-{i % 7}" for i in ids],
            "title": [f"Essence Mascara Lash Princess, size {i % 1000}" for i in ids],
            "category": rng.choice(CATEGORIES, rows),
            "brand": rng.choice(np.array(BRANDS, dtype=object), rows),
            "price": price,
            "discount_pct": rng.uniform(0, 30, rows).round(2),
            "rating": rating,
            "stock": stock,
            "in_stock": stock > 0,
            "_run_id": str(uuid.uuid4()),
            "_ingested_at": pd.Timestamp.now(tz="UTC")
            + pd.to_timedelta(ids % 86_400_000, unit="ms"),
        }
    )


def checkpoint(url: str) -> None:
    """Flush dirty pages first, so one load does not pay for the previous one's checkpoint."""
    with (
        psycopg.connect(url, autocommit=True) as conn,
        contextlib.suppress(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("CHECKPOINT")


def timed(url: str, action: Callable[[], object]) -> float:
    checkpoint(url)
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def io_manager_write(url: str, df: pd.DataFrame, table: str) -> Callable[[], None]:
    """The IO manager's ``handle_output`` of one daily partition into ``bench.<table>``, to call.

    The output context is built here, not in the call: ``build_output_context`` makes an
    ephemeral Dagster instance (0.1-0.2 s, a fifth of a 100k-row load), which a run has already.
    """
    context = dg.build_output_context(
        asset_key=["bench", table],
        partition_key=PARTITION,
        asset_partitions_def=dg.DailyPartitionsDefinition(start_date="2024-01-01"),
        definition_metadata={"primary_key": PRIMARY_KEY},
    )
    manager = build_io_manager(url)
    return lambda: manager.handle_output(context, df)


def clone_table(url: str, name: str) -> None:
    """An empty copy of the IO manager's table (columns, primary key, indexes)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS bench.{name}")
        conn.execute(f"CREATE TABLE bench.{name} (LIKE bench.template INCLUDING ALL)")


def write_csv(url: str, df: pd.DataFrame, path: Path) -> None:
    """The rows as CSV in the column order and types of the IO manager's table."""
    with psycopg.connect(url) as conn:
        columns = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'bench' AND table_name = 'template' ORDER BY ordinal_position"
        ).fetchall()
    arrays = {}
    for name, sql_type in columns:
        array = pa.array(df[name], from_pandas=True)
        if sql_type == "date":
            array = array.cast(pa.timestamp("us")).cast(pa.date32())
        elif sql_type.startswith("timestamp"):
            array = array.cast(pa.timestamp("us", tz="UTC" if "with time" in sql_type else None))
        arrays[name] = array
    pacsv.write_csv(pa.table(arrays), str(path), pacsv.WriteOptions(include_header=False))


def psql_copy(url: str, csv_path: Path, table: str, replace: bool) -> None:
    """``psql \\copy`` of the CSV file; with ``replace``, after deleting the partition, in one
    transaction (what the IO manager does when a partition is re-materialized)."""
    command = ["psql", url, "-q", "-v", "ON_ERROR_STOP=1", "-c", "SET TIME ZONE 'UTC'"]
    command += ["-c", "BEGIN"]
    if replace:
        command += ["-c", f"DELETE FROM bench.{table} WHERE partition_date = '{PARTITION}'"]
    command += ["-c", f"\\copy bench.{table} FROM '{csv_path}' WITH (FORMAT csv)", "-c", "COMMIT"]
    subprocess.run(command, check=True)


def to_sql(url: str, df: pd.DataFrame, table: str) -> None:
    """pandas ``to_sql`` through SQLAlchemy and psycopg 3 (its default executemany)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        df.to_sql(table, engine, schema="bench", if_exists="append", index=False)
    finally:
        engine.dispose()


def measure(url: str, rows: int, to_sql_rows: int) -> dict[str, float]:
    """Rows per second of every write path, side by side on one database."""
    if not shutil.which("psql"):
        raise RuntimeError("psql not found: no \\copy baseline")
    df = products_frame(rows)
    sample = df.head(to_sql_rows).copy()
    io_manager_write(url, df.head(1), "template")()  # the IO manager's table, for the clones
    with tempfile.TemporaryDirectory() as folder:
        csv_path = Path(folder) / "products.csv"
        write_csv(url, df, csv_path)
        for name in ("io", "psql", "to_sql"):
            clone_table(url, name)
        seconds = {
            "io_new": timed(url, io_manager_write(url, df, "io")),
            "io_replace": timed(url, io_manager_write(url, df, "io")),
            "psql_new": timed(url, lambda: psql_copy(url, csv_path, "psql", False)),
            "psql_replace": timed(url, lambda: psql_copy(url, csv_path, "psql", True)),
            "to_sql": timed(url, lambda: to_sql(url, sample, "to_sql")),
        }
    counts = {k: (to_sql_rows if k == "to_sql" else rows) for k in seconds}
    with psycopg.connect(url) as conn:
        for table, expected in (("io", rows), ("psql", rows), ("to_sql", to_sql_rows)):
            found = conn.execute(f"SELECT count(*) FROM bench.{table}").fetchone()[0]
            if found != expected:
                raise RuntimeError(f"bench.{table} holds {found} rows, expected {expected}")
    return {
        **{f"{k}_rows_per_s": counts[k] / s for k, s in seconds.items()},
        **{f"{k}_s": s for k, s in seconds.items()},
    }


def compare(selected: set[str]) -> list[Result]:
    """The three write comparisons, measured in one worker process."""
    wanted = [n for n in NAMES if n in selected]
    if not wanted:
        return []
    rows = scaled(FULL_RECORDS, 1000)
    to_sql_rows = max(500, rows // 10)
    results = {
        "load_vs_psql_copy": Result("load_vs_psql_copy", "rows/s", ">= 0.9"),
        "replace_vs_psql_copy": Result("replace_vs_psql_copy", "rows/s", ">= 0.9"),
        "load_vs_to_sql": Result("load_vs_to_sql", "rows/s", ">= 10"),
    }
    try:
        command = [PYTHON, str(Path(__file__).resolve()), "--json", "--rows", str(rows)]
        command += ["--to-sql-rows", str(to_sql_rows)]
        rate = measure_process(command, base_env(), cwd=REPO).last_json
    except Exception as exc:  # recorded per row; the other modules still run
        for result in results.values():
            result.error = f"{type(exc).__name__}: {exc}"[:3000]
        return [announce(results[n]) for n in wanted]
    pairs = {
        "load_vs_psql_copy": ("io_new", "psql_new"),
        "replace_vs_psql_copy": ("io_replace", "psql_replace"),
        "load_vs_to_sql": ("io_new", "to_sql"),
    }
    for name, (ours, theirs) in pairs.items():
        result = results[name]
        result.ours = round(rate[f"{ours}_rows_per_s"])
        result.baseline = round(rate[f"{theirs}_rows_per_s"])
        result.ratio = ratio(rate[f"{ours}_rows_per_s"], rate[f"{theirs}_rows_per_s"])
        result.detail = {
            "rows": to_sql_rows if theirs == "to_sql" else rows,
            "ours_s": round(rate[f"{ours}_s"], 2),
            "baseline_s": round(rate[f"{theirs}_s"], 2),
        }
        if theirs == "to_sql":
            result.detail["ours_rows"] = rows
    return [announce(results[n]) for n in wanted]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=FULL_RECORDS)
    parser.add_argument("--to-sql-rows", type=int, default=FULL_RECORDS // 10)
    parser.add_argument("--json", action="store_true", help="print the rates as one JSON line")
    args = parser.parse_args(argv)
    with temp_database() as url:
        rate = measure(url, args.rows, args.to_sql_rows)
    if args.json:
        print(json.dumps(rate))
    else:
        for key, value in rate.items():
            print(f"{key:<28} {value:>14,.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
