"""The PostgreSQL warehouse IO manager against the real local server, one database per test."""

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import numpy as np
import pandas as pd
import psycopg
import pytest

from ingest_assets.records.encode import RawEncoder
from ingest_assets.warehouse.base import FrameStream, StagedPartition
from ingest_assets.warehouse.common import TableRef, WarehouseError, normalize_loaded
from ingest_assets.warehouse.duckdb_io import DuckDBPartitionedIOManager
from ingest_assets.warehouse.postgres_io import PostgresPartitionedIOManager, redact_url
from ingest_assets_tests.pg import (  # noqa: F401  (pg_url_fixture registers pg_url)
    REPO_ROOT,
    column_types,
    pg_url_fixture,
    primary_key,
    query,
    run_python,
    subprocess_env,
)

DAILY = dg.DailyPartitionsDefinition(start_date="2024-01-01")
KEY = ["shop", "products"]
SECRET = "Sup3r-Secret-Pw"


def output_context(
    partition: str | None = "2024-01-01",
    key_range: tuple[str, str] | None = None,
    metadata: dict | None = None,
) -> dg.OutputContext:
    kwargs: dict = {"asset_key": KEY, "definition_metadata": metadata or {}}
    if key_range is not None:
        kwargs.update(
            asset_partitions_def=DAILY, asset_partition_key_range=dg.PartitionKeyRange(*key_range)
        )
    elif partition is not None:
        kwargs.update(asset_partitions_def=DAILY, partition_key=partition)
    return dg.build_output_context(**kwargs)


def input_context(
    partition: str | None = "2024-01-01", key_range: tuple[str, str] | None = None
) -> dg.InputContext:
    kwargs: dict = {"asset_key": KEY}
    if key_range is not None:
        kwargs.update(
            asset_partitions_def=DAILY, asset_partition_key_range=dg.PartitionKeyRange(*key_range)
        )
    elif partition is not None:
        kwargs.update(asset_partitions_def=DAILY, partition_key=partition)
    return dg.build_input_context(**kwargs)


def products(day: str, ids: list[int], label: str = "v1") -> pd.DataFrame:
    """A small products-like frame, one row per id, with every supported column type."""
    n = len(ids)
    return pd.DataFrame(
        {
            "partition_date": pd.to_datetime([day] * n),
            "product_id": [f"p{i}" for i in ids],
            "title": [f"{label} item {i}" for i in ids],
            "price": [10.0 + i for i in ids],
            "stock": np.array([i * 2 for i in ids], dtype="int64"),
            "in_stock": [i % 2 == 0 for i in ids],
            "released_on": [dt.date(2023, 1, 1) + dt.timedelta(days=i) for i in ids],
            "_ingested_at": pd.to_datetime(["2024-01-02T03:04:05.123456Z"] * n, utc=True),
            "_record": [json.dumps({"id": i, "tags": ["a", label]}) for i in ids],
        }
    )


def rows_by_day(url: str) -> dict[str, list[tuple[str, str]]]:
    rows = query(
        url,
        "SELECT partition_date::text, product_id, title FROM shop.products "
        "ORDER BY partition_date, product_id",
    )
    out: dict[str, list[tuple[str, str]]] = {}
    for day, product_id, title in rows:
        out.setdefault(day, []).append((product_id, title))
    return out


def manager(url: str) -> PostgresPartitionedIOManager:
    return PostgresPartitionedIOManager(url=url)


def test_redact_url_masks_every_spelling_of_the_password() -> None:
    assert redact_url("postgresql://u:pw@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact_url("postgresql+psycopg2://u:p%40w@h/db") == "postgresql+psycopg2://u:***@h/db"
    assert redact_url("postgres://u@h/db?password=pw&sslmode=require") == (
        "postgres://u@h/db?password=***&sslmode=require"
    )
    assert redact_url("postgresql://h/db") == "postgresql://h/db"
    assert "pw" not in repr(PostgresPartitionedIOManager(url="postgresql://u:pw@h/db"))


def test_create_types_primary_key_and_metadata(pg_url: str) -> None:
    context = output_context(
        metadata={"primary_key": ["partition_date", "product_id"], "json_columns": ["_record"]}
    )
    manager(pg_url).handle_output(context, products("2024-01-01", [1, 2, 3]))

    assert column_types(pg_url, "shop", "products") == {
        "partition_date": "date",
        "product_id": "text",
        "title": "text",
        "price": "double precision",
        "stock": "bigint",
        "in_stock": "boolean",
        "released_on": "date",
        "_ingested_at": "timestamp with time zone",
        "_record": "jsonb",
    }
    assert primary_key(pg_url, "shop", "products") == ["partition_date", "product_id"]
    logged = context.get_logged_metadata()
    assert {name: value.value for name, value in logged.items()} == {
        "dagster/row_count": 3,
        "dagster/table_name": "shop.products",
        "warehouse": "postgresql",
    }
    # The JSON is real jsonb: queryable with JSON operators.
    assert query(
        pg_url, "SELECT _record->'tags'->>1 FROM shop.products WHERE product_id = 'p2'"
    ) == [("v1",)]


def test_partition_without_key_gets_an_index_for_partition_filters(pg_url: str) -> None:
    manager(pg_url).handle_output(output_context(), products("2024-01-01", [1]))
    indexes = query(pg_url, "SELECT indexdef FROM pg_indexes WHERE schemaname = 'shop'")
    assert any("(partition_date)" in definition for (definition,) in indexes)


def test_rewriting_a_partition_replaces_exactly_its_rows(pg_url: str) -> None:
    io = manager(pg_url)
    io.handle_output(output_context("2024-01-01"), products("2024-01-01", [1, 2, 3]))
    io.handle_output(output_context("2024-01-02"), products("2024-01-02", [1, 2]))
    io.handle_output(output_context("2024-01-01"), products("2024-01-01", [7], label="v2"))

    assert rows_by_day(pg_url) == {
        "2024-01-01": [("p7", "v2 item 7")],
        "2024-01-02": [("p1", "v1 item 1"), ("p2", "v1 item 2")],
    }


def test_a_partition_range_is_replaced_as_a_whole(pg_url: str) -> None:
    io = manager(pg_url)
    for day in ("2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"):
        io.handle_output(output_context(day), products(day, [1, 2]))
    new = pd.concat([products("2024-01-02", [5], "v2"), products("2024-01-03", [6, 7], "v2")])
    io.handle_output(output_context(key_range=("2024-01-02", "2024-01-03")), new)

    assert rows_by_day(pg_url) == {
        "2024-01-01": [("p1", "v1 item 1"), ("p2", "v1 item 2")],
        "2024-01-02": [("p5", "v2 item 5")],
        "2024-01-03": [("p6", "v2 item 6"), ("p7", "v2 item 7")],
        "2024-01-04": [("p1", "v1 item 1"), ("p2", "v1 item 2")],
    }
    loaded = io.load_input(input_context(key_range=("2024-01-02", "2024-01-03")))
    assert sorted(loaded["product_id"]) == ["p5", "p6", "p7"]

    # Rows outside the window being replaced are refused, and nothing changes.
    with pytest.raises(WarehouseError, match="outside the partition"):
        io.handle_output(output_context(key_range=("2024-01-02", "2024-01-02")), new)
    assert len(rows_by_day(pg_url)["2024-01-03"]) == 2


def test_an_empty_frame_clears_its_partition(pg_url: str) -> None:
    io = manager(pg_url)
    io.handle_output(output_context("2024-01-01"), products("2024-01-01", [1, 2]))
    io.handle_output(output_context("2024-01-02"), products("2024-01-02", [3]))
    io.handle_output(output_context("2024-01-01"), products("2024-01-01", []))

    assert rows_by_day(pg_url) == {"2024-01-02": [("p3", "v1 item 3")]}
    assert io.load_input(input_context("2024-01-01")).empty


def test_a_new_column_is_added_and_a_missing_one_kept(pg_url: str) -> None:
    io = manager(pg_url)
    io.handle_output(output_context("2024-01-01"), products("2024-01-01", [1]))
    wider = products("2024-01-02", [2]).drop(columns=["title"]).assign(weight_kg=[1.5])
    io.handle_output(output_context("2024-01-02"), wider)

    assert column_types(pg_url, "shop", "products")["weight_kg"] == "double precision"
    rows = query(pg_url, "SELECT product_id, title, weight_kg FROM shop.products ORDER BY 1")
    assert rows == [("p1", "v1 item 1", None), ("p2", None, 1.5)]


def test_a_type_conflict_names_table_and_column_and_changes_nothing(pg_url: str) -> None:
    io = manager(pg_url)
    io.handle_output(output_context("2024-01-01"), products("2024-01-01", [1]))
    bad = products("2024-01-01", [2]).assign(stock=["plenty"])

    with pytest.raises(WarehouseError) as caught:
        io.handle_output(output_context("2024-01-01"), bad)

    message = str(caught.value)
    assert "shop.products" in message and "'stock'" in message and "bigint" in message
    assert rows_by_day(pg_url) == {"2024-01-01": [("p1", "v1 item 1")]}
    # A narrower type into a wider column is fine: bigint into double precision.
    io.handle_output(output_context("2024-01-02"), products("2024-01-02", [3]).assign(price=[4]))
    assert query(pg_url, "SELECT price FROM shop.products WHERE product_id = 'p3'") == [(4.0,)]


def test_json_columns_are_jsonb_and_read_back_as_text(pg_url: str) -> None:
    frame = products("2024-01-01", [1, 2]).assign(_record=['{"a": 1}', {"b": [1, 2]}])
    io = manager(pg_url)
    io.handle_output(output_context(metadata={"json_columns": ["_record"]}), frame)

    assert column_types(pg_url, "shop", "products")["_record"] == "jsonb"
    assert query(pg_url, "SELECT jsonb_typeof(_record) FROM shop.products") == [("object",)] * 2
    loaded = io.load_input(input_context())
    assert loaded["_record"].tolist() == ['{"a": 1}', '{"b": [1, 2]}']


def test_nul_characters_are_replaced_not_fatal(pg_url: str) -> None:
    record = json.dumps({"name": "a\x00b"})
    assert "\\u0000" in record
    frame = products("2024-01-01", [1]).assign(name=["a\x00b"], _record=[record])
    io = manager(pg_url)
    io.handle_output(output_context(metadata={"json_columns": ["_record"]}), frame)
    loaded = io.load_input(input_context())
    assert loaded["name"].tolist() == ["a\ufffdb"]
    assert json.loads(loaded["_record"][0]) == {"name": "a\ufffdb"}


def tricky_frame() -> pd.DataFrame:
    """Every dtype the assets write, with NULLs, empty strings, quotes and newlines."""
    return pd.DataFrame(
        {
            "partition_date": pd.to_datetime(["2024-01-01"] * 4),
            "text": ["plain", "", None, 'comma, "quote"\nnewline'],
            "price": [1.5, np.nan, -0.1, 1e300],
            "count": np.array([1, 2, 3, 4], dtype="int64"),
            "maybe_count": pd.array([1, None, 3, None], dtype="Int64"),
            "flag": [True, False, True, False],
            "maybe_flag": pd.array([True, None, False, None], dtype="boolean"),
            "observed_at": pd.to_datetime(
                [
                    "2024-01-01T00:00:00Z",
                    None,
                    "2024-01-01T23:59:59.999999Z",
                    "1999-12-31T12:00:00Z",
                ],
                utc=True,
                format="ISO8601",
            ),
            "local_time": pd.to_datetime(
                ["2024-01-01 08:00:00", None, "2024-01-01 09:30:00", "2024-01-01 10:00:00"]
            ),
            "day": pd.to_datetime(["2023-12-31", None, "2024-01-01", "2020-02-29"]),
            "_record": ['{"a": 1}', None, "[]", '{"nested": {"x": [1, 2]}}'],
        }
    )


def test_load_input_round_trips_dtypes_like_duckdb(pg_url: str, tmp_path) -> None:
    frame = tricky_frame()
    metadata = {"json_columns": ["_record"]}
    manager(pg_url).handle_output(output_context(metadata=metadata), frame)
    loaded = manager(pg_url).load_input(input_context())

    # What was written, in the dtypes every warehouse hands back (the shared normalization) ...
    # Text comes back Arrow-backed (pd.StringDtype("pyarrow")) from either warehouse.
    expected = normalize_loaded(frame.copy())
    for column in expected.columns:
        if isinstance(loaded[column].dtype, pd.StringDtype):
            expected[column] = expected[column].astype(pd.StringDtype("pyarrow"))
    pd.testing.assert_frame_equal(loaded, expected)
    # ... and exactly what the DuckDB warehouse gives for the same frame.
    duck = DuckDBPartitionedIOManager(path=str(tmp_path / "w.duckdb"))
    duck.handle_output(output_context(metadata=metadata), frame)
    pd.testing.assert_frame_equal(loaded, duck.load_input(input_context()))


def test_binary_and_csv_copy_store_the_same_values(pg_url: str) -> None:
    """Tables of the IO manager's own types load by binary COPY; a table made by hand with
    other types (here varchar and integer) falls back to CSV. Both hold the same values."""
    frame = tricky_frame().assign(
        unicode=["é", "\U0001f600 \\N", "a\x00b", None],
        long_ago=pd.to_datetime(["1969-07-20", "1900-01-01", None, "2261-12-31"]),
    )
    frame["count"] = frame["count"] * -(10**9)
    metadata = {"json_columns": ["_record"]}
    manager(pg_url).handle_output(output_context(metadata=metadata), frame)
    columns = column_types(pg_url, "shop", "products")
    assert columns["text"] == "text" and columns["count"] == "bigint"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE shop.by_hand (LIKE shop.products)")
        conn.execute(
            "ALTER TABLE shop.by_hand ALTER COLUMN text TYPE varchar(100), "
            "ALTER COLUMN maybe_count TYPE integer"
        )
    by_hand = dg.build_output_context(
        asset_key=["shop", "by_hand"],
        asset_partitions_def=DAILY,
        partition_key="2024-01-01",
        definition_metadata=metadata,
    )
    manager(pg_url).handle_output(by_hand, frame)

    def rows(table: str) -> list[tuple]:
        texts = ", ".join(f'"{c}"::text' for c in frame.columns)
        return query(pg_url, f'SELECT {texts} FROM shop.{table} ORDER BY {table}."count" DESC')

    binary = rows("products")
    assert binary == rows("by_hand")
    assert [r[list(frame.columns).index("unicode")] for r in binary] == [
        "é",
        "\U0001f600 \\N",
        "a\ufffdb",
        None,
    ]
    assert binary[0][1:3] == ("plain", "1.5") and binary[1][1:3] == ("", None)


def test_unpartitioned_with_primary_key_upserts(pg_url: str) -> None:
    io = manager(pg_url)
    metadata = {"primary_key": ["product_id"]}
    first = products("2024-01-01", [1, 2]).drop(columns=["partition_date"])
    io.handle_output(output_context(None, metadata=metadata), first)
    second = products("2024-01-01", [2, 3], label="v2").drop(columns=["partition_date"])
    io.handle_output(output_context(None, metadata=metadata), second)

    rows = query(pg_url, "SELECT product_id, title FROM shop.products ORDER BY 1")
    assert rows == [("p1", "v1 item 1"), ("p2", "v2 item 2"), ("p3", "v2 item 3")]
    assert len(io.load_input(input_context(None))) == 3
    # Rows repeating a key among themselves: a clear error, and the table as it was.
    twice = products("2024-01-01", [4, 4], label="v3").drop(columns=["partition_date"])
    with pytest.raises(WarehouseError, match=r"shop\.products: .*repeat a primary key"):
        io.handle_output(output_context(None, metadata=metadata), twice)
    assert query(pg_url, "SELECT product_id, title FROM shop.products ORDER BY 1") == rows


def test_unpartitioned_without_key_replaces_the_table(pg_url: str) -> None:
    io = manager(pg_url)
    io.handle_output(
        output_context(None), products("2024-01-01", [1, 2]).drop(columns=["partition_date"])
    )
    io.handle_output(
        output_context(None), products("2024-01-01", [3]).drop(columns=["partition_date"])
    )
    assert query(pg_url, "SELECT product_id FROM shop.products") == [("p3",)]


def test_reading_a_table_that_does_not_exist_says_so(pg_url: str) -> None:
    with pytest.raises(WarehouseError, match="materialize its asset first"):
        manager(pg_url).load_input(input_context())


@pytest.mark.parametrize(
    "url",
    [
        # Nothing listens on port 1: the connection is refused.
        f"postgresql://postgres:{SECRET}@127.0.0.1:1/whatever",
        # The server is there (trust auth ignores the password) but the database is not.
        f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:5432/no_such_db_{SECRET}",
    ],
    ids=["port-closed", "no-such-database"],
)
def test_the_password_never_appears_in_errors(pg_url: str, url: str) -> None:
    with pytest.raises(WarehouseError) as caught:
        manager(url).handle_output(output_context(), products("2024-01-01", [1]))

    text = "".join(traceback.format_exception(caught.value))
    assert "cannot connect to PostgreSQL" in text
    assert SECRET not in text
    assert caught.value.__cause__ is None and caught.value.__context__ is None


def test_the_password_never_reaches_dagsters_event_log(pg_url: str, monkeypatch) -> None:
    monkeypatch.setenv("INGEST_TEST_SECRET_URL", f"postgresql://postgres:{SECRET}@127.0.0.1:1/db")

    @dg.asset(key=KEY, partitions_def=DAILY)
    def broken() -> pd.DataFrame:
        return products("2024-01-01", [1])

    io_manager = PostgresPartitionedIOManager(url=dg.EnvVar("INGEST_TEST_SECRET_URL"))
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            [broken],
            partition_key="2024-01-01",
            resources={"io_manager": io_manager},
            instance=instance,
            raise_on_error=False,
        )
        assert not result.success
        records = instance.all_logs(result.run_id)
        assert any("cannot connect to PostgreSQL" in str(r) for r in records)
        assert not [r for r in records if SECRET in str(r)]


def test_materializing_twice_gives_an_identical_table(pg_url: str) -> None:
    @dg.asset(key=KEY, partitions_def=DAILY, metadata={"json_columns": ["_record"]})
    def shop_products(context: dg.AssetExecutionContext) -> pd.DataFrame:
        return products(context.partition_key, [1, 2, 3])

    def materialize() -> list[tuple]:
        result = dg.materialize(
            [shop_products],
            partition_key="2024-01-05",
            resources={"io_manager": manager(pg_url)},
        )
        assert result.success
        (event,) = result.get_asset_materialization_events()
        metadata = event.materialization.metadata
        assert metadata["dagster/row_count"].value == 3
        assert metadata["warehouse"].value == "postgresql"
        return query(pg_url, "SELECT * FROM shop.products ORDER BY product_id")

    first = materialize()
    second = materialize()
    assert len(first) == 3 and first == second

    # And the downstream asset reads the partition through load_input.
    @dg.asset(partitions_def=DAILY, ins={"shop_products": dg.AssetIn(key=KEY)})
    def titles(shop_products: pd.DataFrame) -> None:
        assert shop_products["title"].tolist() == ["v1 item 1", "v1 item 2", "v1 item 3"]
        assert str(shop_products["partition_date"].dtype) == "datetime64[ns]"

    result = dg.materialize(
        [shop_products, titles],
        partition_key="2024-01-05",
        resources={"io_manager": manager(pg_url)},
        selection=["titles"],
    )
    assert result.success


FIRST_LOAD_KEY = {"primary_key": ["product_id", "partition_date"]}


def keys_and_indexes(url: str) -> dict[str, list[tuple]]:
    """shop.products' constraints, indexes and NOT NULL columns, as a rebuild must keep them."""
    table = "'shop.products'::regclass"
    return {
        "constraints": query(
            url,
            "SELECT conname, contype, pg_get_constraintdef(oid), condeferrable, condeferred "
            f"FROM pg_constraint WHERE conrelid = {table} ORDER BY conname",
        ),
        "indexes": query(
            url,
            "SELECT indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = 'shop' AND tablename = 'products' ORDER BY indexname",
        ),
        "not_null": query(
            url,
            f"SELECT attname FROM pg_attribute WHERE attrelid = {table} AND attnum > 0 "
            "AND attnotnull AND NOT attisdropped ORDER BY attname",
        ),
    }


def index_oids(url: str) -> set[int]:
    """The oids of shop.products' indexes: new ones when the indexes were dropped and rebuilt."""
    rows = query(
        url, "SELECT indexrelid::int FROM pg_index WHERE indrelid = 'shop.products'::regclass"
    )
    return {oid for (oid,) in rows}


def emptied_products_table(url: str) -> PostgresPartitionedIOManager:
    """shop.products created by the IO manager (with its primary key), then emptied; returns
    the IO manager."""
    io = manager(url)
    io.handle_output(output_context(metadata=FIRST_LOAD_KEY), products("2024-01-01", [0]))
    io.handle_output(output_context(metadata=FIRST_LOAD_KEY), products("2024-01-01", []))
    return io


def empty_products_table(url: str) -> dict[str, list[tuple]]:
    """``emptied_products_table`` given more to rebuild: a UNIQUE constraint, a deferrable
    one, a partial index with storage parameters and an expression index. Returns its keys
    and indexes."""
    emptied_products_table(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "ALTER TABLE shop.products ADD CONSTRAINT products_title_key "
            "UNIQUE (partition_date, title)"
        )
        conn.execute(
            "ALTER TABLE shop.products ADD CONSTRAINT products_sku UNIQUE (title, product_id) "
            "DEFERRABLE INITIALLY DEFERRED"
        )
        conn.execute(
            "CREATE INDEX products_cheap ON shop.products (price DESC NULLS LAST) "
            "WITH (fillfactor = 70) WHERE price < 100"
        )
        conn.execute("CREATE INDEX ON shop.products (lower(title))")
    before = keys_and_indexes(url)
    assert primary_key(url, "shop", "products") == ["product_id", "partition_date"]
    assert len(before["indexes"]) == 6  # the key, the partition_date index and the four above
    return before


def test_a_first_load_rebuilds_the_same_keys_and_indexes_after_the_copy(pg_url: str) -> None:
    before = empty_products_table(pg_url)
    oids = index_oids(pg_url)
    # A stream (not held whole): its second chunk brings a new column, added mid-load.
    chunks = iter(
        [
            products("2024-01-01", list(range(100))),
            products("2024-01-01", list(range(100, 250))).assign(weight_kg=2.5),
        ]
    )
    manager(pg_url).handle_output(output_context(metadata=FIRST_LOAD_KEY), FrameStream(chunks))

    assert keys_and_indexes(pg_url) == before
    assert not index_oids(pg_url) & oids  # every index was dropped and built again
    assert query(pg_url, "SELECT count(*), count(weight_kg) FROM shop.products") == [(250, 150)]
    # They work as before: the key refuses a duplicate.
    with pytest.raises(psycopg.errors.UniqueViolation, match="duplicate key value"):
        query(pg_url, "INSERT INTO shop.products SELECT * FROM shop.products LIMIT 1")


def test_duplicates_in_a_first_load_fail_naming_table_and_key(pg_url: str) -> None:
    before = empty_products_table(pg_url)
    duplicated = products("2024-01-01", [1, 2, 3, 2])
    duplicated["title"] = [f"item {i}" for i in range(4)]  # only the primary key is broken

    with pytest.raises(WarehouseError) as caught:
        manager(pg_url).handle_output(output_context(metadata=FIRST_LOAD_KEY), duplicated)

    message = str(caught.value)
    assert "shop.products" in message
    assert "PRIMARY KEY (product_id, partition_date)" in message
    assert "Key (product_id, partition_date)=(p2, 2024-01-01) is duplicated" in message
    assert isinstance(caught.value.__cause__, psycopg.errors.UniqueViolation)
    # Rolled back: the key and indexes are there, and no row.
    assert keys_and_indexes(pg_url) == before
    assert primary_key(pg_url, "shop", "products") == ["product_id", "partition_date"]
    assert query(pg_url, "SELECT count(*) FROM shop.products") == [(0,)]


def test_a_first_load_failing_mid_stream_keeps_the_keys_and_no_rows(pg_url: str) -> None:
    before = empty_products_table(pg_url)

    def chunks():
        yield products("2024-01-01", [1, 2])
        raise RuntimeError("the source broke")

    with pytest.raises(RuntimeError, match="the source broke"):
        manager(pg_url).handle_output(
            output_context(metadata=FIRST_LOAD_KEY), FrameStream(chunks())
        )
    assert keys_and_indexes(pg_url) == before
    assert query(pg_url, "SELECT count(*) FROM shop.products") == [(0,)]


def test_a_stream_made_while_the_last_chunk_is_stored_fails_whole(pg_url: str) -> None:
    """The chunks after the first are made in a worker thread while the server stores the one
    before: they arrive in order, and an error there fails the load and keeps the old day."""
    io = manager(pg_url)
    io.handle_output(output_context(metadata=FIRST_LOAD_KEY), products("2024-01-01", [1, 2]))
    made: list[str] = []

    def chunks(fail: bool):
        for ids in ([3], [4, 5], [6]):
            made.append(threading.current_thread().name)
            yield products("2024-01-01", ids, "v2")
        if fail:
            raise RuntimeError("the split broke")

    with pytest.raises(RuntimeError, match="the split broke"):
        io.handle_output(output_context(metadata=FIRST_LOAD_KEY), FrameStream(chunks(True)))
    assert rows_by_day(pg_url) == {"2024-01-01": [("p1", "v1 item 1"), ("p2", "v1 item 2")]}
    assert any(name != threading.current_thread().name for name in made)

    io.handle_output(output_context(metadata=FIRST_LOAD_KEY), FrameStream(chunks(False)))
    assert rows_by_day(pg_url) == {"2024-01-01": [(f"p{i}", f"v2 item {i}") for i in (3, 4, 5, 6)]}


def test_a_load_into_a_table_with_rows_keeps_its_indexes(pg_url: str) -> None:
    io = manager(pg_url)
    io.handle_output(output_context(metadata=FIRST_LOAD_KEY), products("2024-01-01", [1, 2]))
    before, oids = keys_and_indexes(pg_url), index_oids(pg_url)

    io.handle_output(
        output_context("2024-01-02", metadata=FIRST_LOAD_KEY), products("2024-01-02", [1, 2, 3])
    )
    io.handle_output(
        output_context("2024-01-01", metadata=FIRST_LOAD_KEY), products("2024-01-01", [5], "v2")
    )

    assert keys_and_indexes(pg_url) == before and index_oids(pg_url) == oids  # not rebuilt
    assert rows_by_day(pg_url) == {
        "2024-01-01": [("p5", "v2 item 5")],
        "2024-01-02": [("p1", "v1 item 1"), ("p2", "v1 item 2"), ("p3", "v1 item 3")],
    }
    # Duplicates fail in the COPY, said as a first load says them, and nothing is written.
    with pytest.raises(WarehouseError, match=r"shop\.products: .*products_pkey.*p1") as caught:
        io.handle_output(
            output_context("2024-01-03", metadata=FIRST_LOAD_KEY), products("2024-01-03", [1, 1])
        )
    assert isinstance(caught.value.__cause__, psycopg.errors.UniqueViolation)
    assert "2024-01-03" not in rows_by_day(pg_url)


def test_a_first_load_keeps_a_key_that_a_foreign_key_references(pg_url: str) -> None:
    io = emptied_products_table(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE shop.orders (product_id text, partition_date date, "
            "FOREIGN KEY (product_id, partition_date) REFERENCES shop.products)"
        )
    before, oids = keys_and_indexes(pg_url), index_oids(pg_url)

    io.handle_output(output_context(metadata=FIRST_LOAD_KEY), products("2024-01-01", [1, 2]))

    assert keys_and_indexes(pg_url) == before and index_oids(pg_url) == oids
    assert len(rows_by_day(pg_url)["2024-01-01"]) == 2


def test_a_first_load_holds_off_other_writers_and_readers_until_it_commits(pg_url: str) -> None:
    empty_products_table(pg_url)
    loading, release = threading.Event(), threading.Event()

    def first_load():
        yield products("2024-01-01", [1, 2])
        loading.set()  # the first chunk is copied; the transaction stays open
        assert release.wait(60)

    io = manager(pg_url)
    with ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(
            io.handle_output, output_context(metadata=FIRST_LOAD_KEY), FrameStream(first_load())
        )
        assert loading.wait(60)
        other = pool.submit(
            io.handle_output,
            output_context("2024-01-02", metadata=FIRST_LOAD_KEY),
            products("2024-01-02", [3]),
        )
        time.sleep(0.5)
        assert not other.done()  # the other day's writer waits
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '200ms'")
            with pytest.raises(psycopg.errors.LockNotAvailable):
                conn.execute("SELECT count(*) FROM shop.products")  # and so does a reader
        release.set()
        first.result(timeout=60)
        other.result(timeout=60)
    assert rows_by_day(pg_url) == {
        "2024-01-01": [("p1", "v1 item 1"), ("p2", "v1 item 2")],
        "2024-01-02": [("p3", "v1 item 3")],
    }
    assert primary_key(pg_url, "shop", "products") == ["product_id", "partition_date"]


def test_concurrent_writers_neither_collide_nor_duplicate(pg_url: str) -> None:
    """Writers racing to create the table, and to replace the same partition (no key)."""

    def write(day: str, label: str, rows: int) -> None:
        manager(pg_url).handle_output(output_context(day), products(day, list(range(rows)), label))

    days = ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for future in [pool.submit(write, day, "v1", 10) for day in days]:
            future.result()
    assert {day: len(rows) for day, rows in rows_by_day(pg_url).items()} == dict.fromkeys(days, 10)

    with ThreadPoolExecutor(max_workers=3) as pool:
        labels = ["a", "b", "c"]
        for future in [pool.submit(write, "2024-01-02", label, 20_000) for label in labels]:
            future.result()
    titles = query(
        pg_url,
        "SELECT split_part(title, ' ', 1), count(*) FROM shop.products "
        "WHERE partition_date = '2024-01-02' GROUP BY 1",
    )
    assert len(titles) == 1 and titles[0][1] == 20_000  # one writer's rows, exactly once
    assert len(rows_by_day(pg_url)["2024-01-03"]) == 10


CRASH_LOAD = textwrap.dedent(
    """
    import sys
    import numpy as np
    import pandas as pd
    import dagster as dg
    from ingest_assets.warehouse.postgres_io import PostgresPartitionedIOManager

    url, rows = sys.argv[1], int(sys.argv[2])
    ids = pd.Series(np.arange(rows)).astype(str)
    frame = pd.DataFrame({
        "partition_date": pd.Timestamp("2024-01-01"),
        "product_id": "p" + ids,
        "title": "new item " + ids,
        "price": np.arange(rows) * 0.5,
        "generation": "new",
    })
    context = dg.build_output_context(
        asset_key=["shop", "products"],
        partition_key="2024-01-01",
        asset_partitions_def=dg.DailyPartitionsDefinition(start_date="2024-01-01"),
        definition_metadata={"primary_key": ["partition_date", "product_id"]},
    )
    print("loading", flush=True)
    PostgresPartitionedIOManager(url=url).handle_output(context, frame)
    print("done", flush=True)
    """
)
CRASH_ROWS = 1_500_000


def copy_progress(url: str, application: str) -> int | None:
    """Rows the COPY of the backend named ``application`` has loaded so far, if it is copying."""
    rows = query(
        url,
        "SELECT p.tuples_processed FROM pg_stat_progress_copy p "
        "JOIN pg_stat_activity a USING (pid) WHERE a.application_name = %s",
        [application],
    )
    return rows[0][0] if rows else None


def generations(url: str) -> dict[str, int]:
    rows = query(
        url,
        "SELECT generation, count(*) FROM shop.products "
        "WHERE partition_date = '2024-01-01' GROUP BY 1",
    )
    return dict(rows)


@pytest.mark.timeout(600)
def test_a_writer_killed_mid_load_leaves_the_old_partition_and_a_rerun_completes(
    pg_url: str,
) -> None:
    old = pd.DataFrame(
        {
            "partition_date": pd.to_datetime(["2024-01-01"] * 1000),
            "product_id": [f"old{i}" for i in range(1000)],
            "title": "old item",
            "price": 1.0,
            "generation": "old",
        }
    )
    io = manager(pg_url)
    metadata = {"primary_key": ["partition_date", "product_id"]}
    io.handle_output(output_context(metadata=metadata), old)
    io.handle_output(
        output_context("2024-01-02", metadata=metadata),
        old.assign(partition_date=pd.Timestamp("2024-01-02")),
    )

    application = "ingest_crash_test"
    url = f"{pg_url}?application_name={application}"
    process = subprocess.Popen(
        [sys.executable, "-c", CRASH_LOAD, url, str(CRASH_ROWS)],
        env=subprocess_env(),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while (copy_progress(pg_url, application) or 0) < CRASH_ROWS // 5:
            if process.poll() is not None:
                output = process.stdout.read() if process.stdout else ""
                pytest.fail(f"the load ended before it could be killed:\n{output}")
            assert time.monotonic() < deadline, "the load never reached its COPY"
            time.sleep(0.05)
        # Mid-load: the old rows are deleted and many new ones copied, all uncommitted.
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert generations(pg_url) == {"old": 1000}
    deadline = time.monotonic() + 60
    while query(
        pg_url, "SELECT 1 FROM pg_stat_activity WHERE application_name = %s", [application]
    ):
        assert time.monotonic() < deadline, "the killed writer's backend did not go away"
        time.sleep(0.2)
    assert generations(pg_url) == {"old": 1000}

    # The re-run, same load, left alone this time.
    assert "done" in run_python(CRASH_LOAD, pg_url, str(CRASH_ROWS))
    assert generations(pg_url) == {"new": CRASH_ROWS}
    assert query(
        pg_url, "SELECT count(*) FROM shop.products WHERE partition_date = '2024-01-02'"
    ) == [(1000,)]


def raw_day(url: str, day: dt.date, pages: list[list[dict]], fail_after: int | None = None) -> int:
    """Stream ``pages`` of records into ``raw.feed`` for ``day`` as the raw asset does;
    with ``fail_after``, raise once that many pages are written (a failed fetch)."""
    partition = StagedPartition(
        TableRef("raw", "feed"), day, f"run-{day}", pd.Timestamp("2024-01-02T00:00:00Z")
    )
    encoder = RawEncoder()
    with manager(url).stage(partition) as stage:
        for written, page in enumerate(pages):
            if written == fail_after:
                raise RuntimeError("the fetch failed")
            stage.append(encoder.encode(page))
        return stage.commit()


def test_the_raw_stage_adds_late_fields_and_a_failed_fetch_keeps_the_old_day(pg_url: str) -> None:
    day, other = dt.date(2024, 1, 1), dt.date(2024, 1, 2)
    raw_day(pg_url, other, [[{"id": 9}]])
    # One COPY for the day: a new field ends it and starts another; a page without a field
    # already seen gets NULLs in its column.
    pages = [[{"id": 1}], [{"id": 2, "late": "x\ny"}], [{"id": 3}], [{"id": 4, "late": "z"}]]
    assert raw_day(pg_url, day, pages) == 4
    rows = query(
        pg_url, "SELECT partition_date::text, id, late, _record->>'id' FROM raw.feed ORDER BY id"
    )
    assert rows == [
        ("2024-01-01", "1", None, "1"),
        ("2024-01-01", "2", "x\ny", "2"),
        ("2024-01-01", "3", None, "3"),
        ("2024-01-01", "4", "z", "4"),
        ("2024-01-02", "9", None, "9"),
    ]
    assert column_types(pg_url, "raw", "feed")["_record"] == "jsonb"

    # A fetch that fails after a page with a new field: nothing of it is kept, not even the column.
    with pytest.raises(RuntimeError, match="the fetch failed"):
        raw_day(pg_url, day, [[{"id": 3}], [{"id": 4, "later": 1}], [{"id": 5}]], fail_after=2)
    assert "later" not in column_types(pg_url, "raw", "feed")
    assert query(pg_url, "SELECT id FROM raw.feed ORDER BY id") == [
        ("1",),
        ("2",),
        ("3",),
        ("4",),
        ("9",),
    ]

    assert raw_day(pg_url, day, []) == 0  # a day without records is emptied
    assert query(pg_url, "SELECT id FROM raw.feed ORDER BY id") == [("9",)]
