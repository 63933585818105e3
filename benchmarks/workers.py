"""The measured sides that are not a ``dagster`` command, each run in its own interpreter.

    python benchmarks/workers.py <task> '<json arguments>'

Each task prints one JSON object as its last line (what it counted, and the seconds of the part
it times itself, where the process start-up must not count).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from ingest_assets.records.encode import column_name  # noqa: E402 - after the path

TASKS: dict[str, Callable[..., dict[str, Any]]] = {}


def task(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    TASKS[fn.__name__] = fn
    return fn


# --------------------------------------------------------------------------------------------
# dlt: the peer for the end-to-end comparisons
# --------------------------------------------------------------------------------------------


def _dlt_pipeline(name: str, url: str, workdir: str):
    from urllib.parse import urlsplit

    import dlt

    parts = urlsplit(url)
    if parts.username and not parts.password:
        # dlt insists on a password; a server that trusts the role ignores this one.
        url = url.replace(f"//{parts.username}@", f"//{parts.username}:unused@", 1)
    return dlt.pipeline(
        pipeline_name=name,
        destination=dlt.destinations.postgres(credentials=url),
        dataset_name=name,
        pipelines_dir=str(Path(workdir) / "pipelines"),
    )


def _paginator(page_size: int):
    from dlt.sources.helpers.rest_client.paginators import OffsetPaginator

    return OffsetPaginator(
        limit=page_size, offset_param="skip", limit_param="limit", total_path="total"
    )


@task
def dlt_dicts(base_url: str, url: str, workdir: str, page_size: int) -> dict[str, Any]:
    """dlt's REST API source into PostgreSQL from dicts, nested values kept as JSON columns."""
    from dlt.sources.rest_api import rest_api_source

    source = rest_api_source(
        {
            "client": {"base_url": base_url, "paginator": _paginator(page_size)},
            "resources": [
                {"name": "products", "endpoint": {"path": "products", "data_selector": "products"}}
            ],
        },
        max_table_nesting=0,
    )
    pipeline = _dlt_pipeline("dlt_dicts", url, workdir)
    pipeline.run(source)
    return {"rows": _count(url, "dlt_dicts.products")}


@task
def dlt_arrow(base_url: str, url: str, workdir: str, page_size: int) -> dict[str, Any]:
    """The same pages through dlt's REST client, each handed to dlt as an Arrow table.

    dlt writes Arrow into PostgreSQL as CSV through COPY, its fastest path, which takes no
    nested columns: nested values (tags, reviews, meta, ...) become JSON text first, as dlt's
    own error message advises.
    """
    import dlt
    import pyarrow as pa
    from dlt.sources.helpers.rest_client import RESTClient

    client = RESTClient(base_url=base_url, paginator=_paginator(page_size))

    def flat(record: dict[str, Any]) -> dict[str, Any]:
        return {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in record.items()}

    @dlt.resource(name="products", max_table_nesting=0)
    def products():
        for page in client.paginate("/products", data_selector="products"):
            yield pa.Table.from_pylist([flat(r) for r in page])

    pipeline = _dlt_pipeline("dlt_arrow", url, workdir)
    pipeline.run(products())
    return {"rows": _count(url, "dlt_arrow.products")}


def _count(url: str, table: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


# --------------------------------------------------------------------------------------------
# Bare vectorised pandas: the peer of raw → cleaned/quarantine/features/metrics
# --------------------------------------------------------------------------------------------

# By source field name; the raw stage's column of discountPercentage is a prefix and a hash.
RAW_TYPES = {
    "id": "int64",
    "title": "string",
    "category": "string",
    "brand": "string",
    "sku": "string",
    "price": "float64",
    "discountPercentage": "float64",
    "rating": "float64",
    "stock": "int64",
}


@task
def pandas_processing(url: str, table: str, partition: str) -> dict[str, Any]:
    """Read the raw partition's field columns, clean, split, derive, aggregate, write back.

    What a competent hand-written job does: COPY out as CSV, typed by Arrow's CSV reader,
    vectorised pandas, COPY in. No validation framework, no per-record Python.
    """
    import io

    import numpy as np
    import pandas as pd
    import psycopg
    import pyarrow as pa
    import pyarrow.csv as pacsv

    started = time.perf_counter()
    columns = ", ".join(f'"{column_name(field)}" AS "{field}"' for field in RAW_TYPES)
    buffer = io.BytesIO()
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        query = (
            f"COPY (SELECT {columns} FROM {table} WHERE partition_date = '{partition}' "
            "ORDER BY _seq) TO STDOUT WITH (FORMAT csv, HEADER true)"
        )
        with cur.copy(query) as copy:
            for chunk in copy:
                buffer.write(chunk)
    buffer.seek(0)
    types = {"int64": pa.int64(), "float64": pa.float64(), "string": pa.string()}
    raw = pacsv.read_csv(
        buffer,
        convert_options=pacsv.ConvertOptions(
            column_types={k: types[v] for k, v in RAW_TYPES.items()},
            strings_can_be_null=True,
        ),
    ).to_pandas()
    del buffer

    df = pd.DataFrame(
        {
            "partition_date": pd.Timestamp(partition),
            "source": "dummyjson_products",
            "product_id": raw["id"].astype("string"),
            "sku": raw["sku"].str.strip().replace("", None),
            "title": raw["title"].str.strip(),
            "category": raw["category"].str.strip().str.lower(),
            "brand": raw["brand"].str.strip().replace("", None),
            "price": raw["price"],
            "discount_pct": raw["discountPercentage"],
            "rating": raw["rating"],
            "stock": raw["stock"],
        }
    )
    ok = (
        (df["price"] > 0)
        & df["discount_pct"].between(0, 100)
        & (df["rating"].isna() | df["rating"].between(0, 5))
        & (df["stock"] >= 0)
        & df["title"].fillna("").ne("")
        & df["category"].fillna("").ne("")
    )
    duplicate = ok & df["product_id"].duplicated()
    valid = ok & ~duplicate
    cleaned = df[valid].reset_index(drop=True)
    quarantine = df[~valid].assign(reason=np.where(duplicate[~valid], "duplicate", "invalid"))

    features = cleaned.copy()
    features["final_price"] = (features["price"] * (1 - features["discount_pct"] / 100)).round(2)
    by = features.groupby(["partition_date", "category"])["price"]
    low, high = by.transform("min"), by.transform("max")
    spread = high - low
    features["price_norm"] = ((features["price"] - low) / spread.where(spread != 0)).fillna(0.0)
    std = by.transform(lambda s: s.std(ddof=0))
    features["price_zscore"] = (
        (features["price"] - by.transform("mean")) / std.where(std != 0)
    ).fillna(0.0)
    features["rating_bucket"] = pd.cut(
        features["rating"], [-np.inf, 3, 4, np.inf], right=False, labels=["low", "medium", "high"]
    ).astype("string")
    features["in_stock"] = features["stock"] > 0

    grouped = features.groupby(["partition_date", "category"])
    metrics = grouped.agg(
        product_count=("product_id", "size"),
        price_min=("price", "min"),
        price_max=("price", "max"),
        price_mean=("price", "mean"),
        price_median=("price", "median"),
        final_price_mean=("final_price", "mean"),
        rating_mean=("rating", "mean"),
        stock_total=("stock", "sum"),
    ).reset_index()
    metrics["share"] = metrics["product_count"] / len(features)

    with psycopg.connect(url) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS bare")
        for name, frame in (
            ("cleaned", cleaned),
            ("quarantine", quarantine),
            ("features", features),
            ("metrics", metrics),
        ):
            _copy_in(conn, f"bare.{name}", frame)
        conn.commit()
    return {
        "seconds": time.perf_counter() - started,
        "raw": len(raw),
        "valid": len(cleaned),
        "quarantined": len(quarantine),
    }


def _copy_in(conn, table: str, frame) -> None:
    """CREATE the table from the frame's types and COPY the rows in as CSV."""
    import io

    import pyarrow as pa
    import pyarrow.csv as pacsv

    arrow = pa.Table.from_pandas(frame, preserve_index=False)
    sql_types = []
    for field in arrow.schema:
        if pa.types.is_integer(field.type):
            sql_types.append("bigint")
        elif pa.types.is_floating(field.type):
            sql_types.append("double precision")
        elif pa.types.is_boolean(field.type):
            sql_types.append("boolean")
        elif pa.types.is_timestamp(field.type):
            sql_types.append("timestamp")
        else:
            sql_types.append("text")
    columns = ", ".join(f'"{f.name}" {t}' for f, t in zip(arrow.schema, sql_types, strict=True))
    conn.execute(f"DROP TABLE IF EXISTS {table}")
    conn.execute(f"CREATE TABLE {table} ({columns})")
    buffer = io.BytesIO()
    pacsv.write_csv(arrow, buffer, pacsv.WriteOptions(include_header=False))
    with conn.cursor() as cur, cur.copy(f"COPY {table} FROM STDIN WITH (FORMAT csv)") as copy:
        copy.write(buffer.getbuffer())


# --------------------------------------------------------------------------------------------
# Fetching: the raw stage in-process, and stdlib threads
# --------------------------------------------------------------------------------------------


def _definitions(sources_file: str, warehouse_url: str):
    os.environ["INGEST_SOURCES_FILE"] = sources_file
    from ingest_assets.definitions import build_definitions
    from ingest_assets.loading import load_sources

    return build_definitions(load_sources(), warehouse_url)


@task
def raw_stage(sources_file: str, warehouse_url: str, source: str, partition: str) -> dict[str, Any]:
    """``raw/<source>`` for one partition in this (warm) process: fetch → raw table."""
    import dagster as dg
    import duckdb

    defs = _definitions(sources_file, warehouse_url)
    key = dg.AssetKey(["raw", source])
    job = defs.resolve_implicit_global_asset_job_def()
    started = time.perf_counter()
    result = job.execute_in_process(
        asset_selection=[key],
        partition_key=partition,
        instance=dg.DagsterInstance.ephemeral(),
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )
    seconds = time.perf_counter() - started
    if not result.success:
        raise RuntimeError(f"raw/{source} failed")
    # Counted in the warehouse: what reached the raw table, not what the asset says it wrote.
    path = warehouse_url.removeprefix("duckdb:///")
    with duckdb.connect(path, read_only=True) as conn:
        (records,) = conn.execute(
            f"SELECT count(*) FROM raw.{source} WHERE partition_date = ?", [partition]
        ).fetchone()
    return {"seconds": seconds, "records": int(records)}


@task
def downstream(sources_file: str, warehouse_url: str, partition: str) -> dict[str, Any]:
    """Every asset after raw, with its checks, from the stored raw partition, in this process."""
    import dagster as dg

    defs = _definitions(sources_file, warehouse_url)
    job = defs.resolve_implicit_global_asset_job_def()
    keys = [k for k in job.asset_layer.executable_asset_keys if k.path[0] != "raw"]
    started = time.perf_counter()
    result = job.execute_in_process(
        asset_selection=keys,
        partition_key=partition,
        instance=dg.DagsterInstance.ephemeral(),
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        raise_on_error=False,
    )
    seconds = time.perf_counter() - started
    if not result.success:
        raise RuntimeError("the assets after raw failed")
    steps = {}
    for event in result.all_events:
        if event.is_step_success:
            steps[event.step_key] = round(event.event_specific_data.duration_ms / 1000, 2)
    checks = result.get_asset_check_evaluations()
    return {
        "seconds": seconds,
        "steps": steps,
        "checks": {"run": len(checks), "passed": sum(c.passed for c in checks)},
    }


@task
def threads_fetch(base_url: str, pages: int, page_size: int, threads: int) -> dict[str, Any]:
    """stdlib ``urllib`` with a pool of threads and ``json.loads``: every page, every record."""
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    def page(n: int) -> int:
        url = f"{base_url}/products?limit={page_size}&skip={n * page_size}"
        with urllib.request.urlopen(url, timeout=60) as answer:
            return len(json.loads(answer.read())["products"])

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        records = sum(pool.map(page, range(pages)))
    return {"seconds": time.perf_counter() - started, "records": records}


def main(argv: list[str]) -> int:
    name, args = argv[0], json.loads(argv[1]) if len(argv) > 1 else {}
    print(json.dumps(TASKS[name](**args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
