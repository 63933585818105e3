"""PostgreSQL write throughput: the IO manager against ``psql \\copy`` and pandas ``to_sql``.

    python benchmarks/bench_postgres.py [--rows 1000000] [--to-sql-rows 100000] [--url URL]

``psql \\copy`` of the same rows as a CSV file is the practical limit (no Python, no
conversion); pandas ``to_sql`` is what people write by hand. Every load goes into an identical
table (same columns, primary key and indexes), in a temporary database dropped afterwards.
``--url`` (default ``$INGEST_TEST_PG_URL`` or ``postgresql://postgres@127.0.0.1:5432/postgres``)
names a server and a role allowed to create databases.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import psycopg
import pyarrow.csv as pacsv

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from ingest_assets.warehouse.common import logical_types  # noqa: E402
from ingest_assets.warehouse.postgres_io import (  # noqa: E402
    PG_TYPES,
    PostgresPartitionedIOManager,
    conninfo,
    redact_url,
    to_arrow,
)

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PARTITION = "2024-01-01"
PRIMARY_KEY = ["partition_date", "source", "product_id"]
CATEGORIES = ["beauty", "fragrances", "furniture", "groceries", "laptops", "smartphones"]
BRANDS = ["Essence", "Glamour Beauty", "Velvet Touch", "Chic Cosmetics", None]


def products_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    """A day of a products-like table: dates, timestamptz, text, double, bigint, bool."""
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
            "released_on": pd.Timestamp("2020-01-01") + pd.to_timedelta(ids % 1500, unit="D"),
            "_run_id": str(uuid.uuid4()),
            "_ingested_at": pd.Timestamp.now(tz="UTC")
            + pd.to_timedelta(ids % 86_400_000, unit="ms"),
        }
    )


@contextlib.contextmanager
def temp_database(admin_url: str) -> Iterator[str]:
    """A fresh database on the server of ``admin_url``; yields its URL, drops it afterwards."""
    name = f"ingest_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(conninfo(admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = conninfo(admin_url).partition("?")
    url = base.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with psycopg.connect(conninfo(admin_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def checkpoint(url: str) -> None:
    """Flush dirty pages first, so one load does not pay for the previous one's checkpoint."""
    # PostgreSQL 15 allows it to superusers and pg_checkpoint only; else timings get noisier.
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


def io_manager_write(url: str, df: pd.DataFrame, table: str) -> None:
    """The IO manager's ``handle_output`` of one daily partition into ``bench.<table>``."""
    context = dg.build_output_context(
        asset_key=["bench", table],
        partition_key=PARTITION,
        asset_partitions_def=dg.DailyPartitionsDefinition(start_date="2024-01-01"),
        definition_metadata={"primary_key": PRIMARY_KEY},
    )
    PostgresPartitionedIOManager(url=url).handle_output(context, df)


def clone_table(url: str, name: str) -> None:
    """An empty copy of the IO manager's table (columns, primary key, indexes)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS bench.{name}")
        conn.execute(f"CREATE TABLE bench.{name} (LIKE bench.template INCLUDING ALL)")


def psql_copy(url: str, csv_path: Path, table: str, replace: bool) -> None:
    """``psql \\copy`` of the CSV file; with ``replace``, after deleting the partition, in one
    transaction (what the IO manager does when a partition is re-materialized)."""
    # The CSV holds timestamptz values as UTC wall-clock time, as the IO manager sends them.
    command = [
        "psql",
        url,
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        "SET TIME ZONE 'UTC'",
        "-c",
        "BEGIN",
    ]
    if replace:
        command += ["-c", f"DELETE FROM bench.{table} WHERE partition_date = '{PARTITION}'"]
    command += ["-c", f"\\copy bench.{table} FROM '{csv_path}' WITH (FORMAT csv)", "-c", "COMMIT"]
    subprocess.run(command, check=True)


def to_csv_copy(url: str, df: pd.DataFrame, table: str) -> None:
    """The common hand-written fast path: ``DataFrame.to_csv`` into ``COPY``."""
    text = io.StringIO()
    df.to_csv(text, index=False, header=False)
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY bench.{table} FROM STDIN (FORMAT csv)") as copy:
            copy.write(text.getvalue())
        conn.commit()


def to_sql(url: str, df: pd.DataFrame, table: str) -> None:
    """pandas ``to_sql`` through SQLAlchemy and psycopg 3 (its default executemany)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        df.to_sql(table, engine, schema="bench", if_exists="append", index=False)
    finally:
        engine.dispose()


def measure(url: str, df: pd.DataFrame, sample: pd.DataFrame, folder: Path) -> dict[str, float]:
    """Seconds per write path (new partition = into an empty table; replace = over the same rows)."""
    io_manager_write(url, df.head(1), "template")  # the IO manager's table, for the clones
    csv_path = folder / "products.csv"
    types = {c: PG_TYPES[t] for c, t in logical_types(df).items()}
    pacsv.write_csv(to_arrow(df, types), str(csv_path), pacsv.WriteOptions(include_header=False))
    has_psql = shutil.which("psql") is not None
    seconds: dict[str, float] = {}
    for name in ("io", "psql", "to_csv", "to_sql"):
        clone_table(url, name)
    seconds["IO manager, new partition"] = timed(url, lambda: io_manager_write(url, df, "io"))
    seconds["IO manager, replace partition"] = timed(url, lambda: io_manager_write(url, df, "io"))
    if has_psql:
        seconds[NEW_BASELINE] = timed(url, lambda: psql_copy(url, csv_path, "psql", False))
        seconds[REPLACE_BASELINE] = timed(url, lambda: psql_copy(url, csv_path, "psql", True))
    seconds["pandas to_csv into COPY"] = timed(url, lambda: to_csv_copy(url, df, "to_csv"))
    seconds["pandas to_sql"] = timed(url, lambda: to_sql(url, sample, "to_sql"))
    return seconds


NEW_BASELINE = "psql \\copy, new partition"
REPLACE_BASELINE = "psql DELETE + \\copy, replace"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--to-sql-rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=1, help="report the best of N rounds")
    parser.add_argument("--url", default=os.environ.get("INGEST_TEST_PG_URL") or DEFAULT_URL)
    args = parser.parse_args(argv)

    print(f"generating {args.rows:,} product rows; server {redact_url(args.url)}", flush=True)
    df = products_frame(args.rows)
    sample = df.head(args.to_sql_rows).copy()
    best: dict[str, float] = {}
    with temp_database(args.url) as url, tempfile.TemporaryDirectory() as folder:
        for round_ in range(1, args.repeat + 1):
            for label, value in measure(url, df, sample, Path(folder)).items():
                best[label] = min(value, best.get(label, value))
                print(f"  round {round_}: {label:<34} {value:6.2f} s", flush=True)

    rows = {label: len(sample) if label == "pandas to_sql" else len(df) for label in best}
    rate = {label: rows[label] / best[label] for label in best}
    header = ("write path", "rows", "seconds", "rows/s", "vs \\copy")
    print("\n{:<34} {:>10} {:>8} {:>10} {:>9}".format(*header))
    for label in best:
        # A replace is compared with psql doing the same replace; everything else with \copy.
        baseline = rate.get(REPLACE_BASELINE if "replace" in label else NEW_BASELINE)
        ratio = f"{rate[label] / baseline:.2f}x" if baseline else "n/a"
        print(
            f"{label:<34} {rows[label]:>10,} {best[label]:>8.2f} {rate[label]:>10,.0f} {ratio:>9}"
        )
    if NEW_BASELINE not in best:
        print("(psql not found: no \\copy baseline)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
