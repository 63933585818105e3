"""The embedded warehouse: partition replace in one transaction, schema evolution, clear errors."""

import datetime as dt
import threading
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from ingest_assets.warehouse import build_io_manager, duckdb_path, warehouse_kind, warehouse_url
from ingest_assets.warehouse.common import TableRef, WarehouseError
from ingest_assets.warehouse.duckdb_io import (
    DuckDBPartitionedIOManager,
    connect,
    read_frame,
    write_frame,
)

TABLE = TableRef("cleaned", "things")
D1, D2 = dt.date(2024, 6, 1), dt.date(2024, 6, 2)


def day(d: dt.date) -> tuple[dt.date, dt.date]:
    return d, d + dt.timedelta(days=1)


def frame(d: dt.date, ids: list[int], **extra: list) -> pd.DataFrame:
    df = pd.DataFrame(
        {
            "partition_date": pd.Timestamp(d),
            "id": pd.array(ids, dtype="Int64"),
            "name": [f"n{i}" for i in ids],
            "at": pd.Timestamp("2024-06-01T10:00", tz="UTC"),
            "ok": [True] * len(ids),
            "price": [float(i) for i in ids],
            **extra,
        }
    )
    df["partition_date"] = df["partition_date"].astype("datetime64[ns]")
    return df


def test_url_rules(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert duckdb_path("duckdb:///rel/w.duckdb") == "rel/w.duckdb"
    assert duckdb_path("duckdb:////abs/w.duckdb") == "/abs/w.duckdb"
    assert warehouse_kind("postgresql://u:p@h:5432/d") == "postgresql"
    with pytest.raises(ValueError, match="must start with duckdb:/// or postgresql://"):
        warehouse_kind("mysql://x")
    monkeypatch.delenv("INGEST_WAREHOUSE_URL", raising=False)
    monkeypatch.setenv("INGEST_HOME", str(tmp_path))
    assert warehouse_url() == f"duckdb:///{tmp_path}/warehouse.duckdb"
    manager = build_io_manager()
    assert (
        isinstance(manager, DuckDBPartitionedIOManager)
        and manager.path == f"{tmp_path}/warehouse.duckdb"
    )


def test_partition_replace_touches_only_its_partition(tmp_path: Path) -> None:
    path = str(tmp_path / "w.duckdb")
    with connect(path) as con:
        write_frame(con, TABLE, frame(D1, [1, 2, 3]), day(D1))
        write_frame(con, TABLE, frame(D2, [4, 5]), day(D2))
        write_frame(con, TABLE, frame(D1, [9]), day(D1))
        everything = read_frame(con, TABLE, None)
        first = read_frame(con, TABLE, day(D1))
        both = read_frame(con, TABLE, (D1, D2 + dt.timedelta(days=1)))
    assert sorted(everything["id"].tolist()) == [4, 5, 9]
    assert first["id"].tolist() == [9]
    assert len(both) == 3
    # what was written comes back with the same dtypes
    assert str(first["partition_date"].dtype) == "datetime64[ns]"
    assert str(first["at"].dtype) == "datetime64[ns, UTC]"
    assert str(first["id"].dtype) == "Int64" and str(first["ok"].dtype) in ("bool", "boolean")


def test_empty_frame_clears_the_partition(tmp_path: Path) -> None:
    with connect(str(tmp_path / "w.duckdb")) as con:
        write_frame(con, TABLE, frame(D1, [1, 2]), day(D1))
        write_frame(con, TABLE, frame(D1, []), day(D1))
        assert read_frame(con, TABLE, day(D1)).empty


def test_new_columns_are_added_and_conflicts_are_named(tmp_path: Path) -> None:
    with connect(str(tmp_path / "w.duckdb")) as con:
        write_frame(con, TABLE, frame(D1, [1]), day(D1))
        write_frame(con, TABLE, frame(D2, [2], colour=["red"]), day(D2))
        loaded = read_frame(con, TABLE, None).sort_values("id")
        assert pd.isna(loaded["colour"].tolist()[0]) and loaded["colour"].tolist()[1] == "red"
        with pytest.raises(
            WarehouseError, match=r"cleaned.things: column 'at' is TIMESTAMPTZ .* VARCHAR"
        ):
            write_frame(con, TABLE, frame(D1, [3]).assign(at="not a time"), day(D1))
        # the failed write changed nothing
        assert read_frame(con, TABLE, day(D1))["id"].tolist() == [1]


def test_rows_outside_the_partition_are_refused(tmp_path: Path) -> None:
    with (
        connect(str(tmp_path / "w.duckdb")) as con,
        pytest.raises(WarehouseError, match="outside the partition"),
    ):
        write_frame(con, TABLE, frame(D2, [1]), day(D1))


def test_a_failing_insert_rolls_back_the_delete(tmp_path: Path) -> None:
    with connect(str(tmp_path / "w.duckdb")) as con:
        # A constraint the type checks cannot see makes the INSERT fail after the DELETE ran.
        con.execute("CREATE SCHEMA cleaned")
        con.execute(
            "CREATE TABLE cleaned.things (partition_date DATE, id BIGINT CHECK (id < 100), "
            'name VARCHAR, "at" TIMESTAMPTZ, ok BOOLEAN, price DOUBLE)'
        )
        write_frame(con, TABLE, frame(D1, [1, 2]), day(D1))
        with pytest.raises(duckdb.ConstraintException):
            write_frame(con, TABLE, frame(D1, [500]), day(D1))
        assert sorted(read_frame(con, TABLE, day(D1))["id"].tolist()) == [1, 2]


def test_a_stream_made_while_the_last_chunk_is_stored_fails_whole(tmp_path: Path) -> None:
    """The chunks after the first are made in a worker thread while DuckDB stores the one
    before: they arrive in order, and an error there rolls the whole day back."""
    made: list[str] = []

    def chunks(fail: bool):
        for ids in ([3], [4, 5], [6]):
            made.append(threading.current_thread().name)
            yield frame(D1, ids)
        if fail:
            raise RuntimeError("the split broke")

    with connect(str(tmp_path / "w.duckdb")) as con:
        write_frame(con, TABLE, frame(D1, [1, 2]), day(D1))
        with pytest.raises(RuntimeError, match="the split broke"):
            write_frame(con, TABLE, chunks(True), day(D1))
        assert sorted(read_frame(con, TABLE, day(D1))["id"].tolist()) == [1, 2]
        assert any(name != threading.current_thread().name for name in made)
        write_frame(con, TABLE, chunks(False), day(D1))
        assert sorted(read_frame(con, TABLE, day(D1))["id"].tolist()) == [3, 4, 5, 6]


def test_missing_table_and_column_errors(tmp_path: Path) -> None:
    with connect(str(tmp_path / "w.duckdb")) as con:
        with pytest.raises(WarehouseError, match="does not exist in the warehouse yet"):
            read_frame(con, TABLE, None)
        write_frame(con, TABLE, frame(D1, [1]), day(D1))
        assert list(read_frame(con, TABLE, None, ["id"]).columns) == ["id"]
        with pytest.raises(WarehouseError, match="no column"):
            read_frame(con, TABLE, None, ["nope"])


def test_materializing_twice_through_dagster_is_idempotent(tmp_path: Path) -> None:
    partitions = dg.DailyPartitionsDefinition(start_date="2024-01-01")

    @dg.asset(key=["cleaned", "things"], partitions_def=partitions)
    def things(context: dg.AssetExecutionContext) -> pd.DataFrame:
        d = context.partition_time_window.start.date()
        return frame(d, [1, 2, 3])

    @dg.asset(
        key=["metrics", "thing_count"],
        partitions_def=partitions,
        ins={"rows": dg.AssetIn(["cleaned", "things"])},
    )
    def thing_count(rows: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"partition_date": rows["partition_date"].iloc[:1], "n": [len(rows)]})

    resources = {"io_manager": DuckDBPartitionedIOManager(path=str(tmp_path / "w.duckdb"))}
    for key in ("2024-06-01", "2024-06-02", "2024-06-01"):
        assert dg.materialize([things, thing_count], partition_key=key, resources=resources).success
    with connect(str(tmp_path / "w.duckdb")) as con:
        assert len(read_frame(con, TABLE, None)) == 6
        counts = read_frame(con, TableRef("metrics", "thing_count"), None)
    assert counts["n"].tolist() == [3, 3]
