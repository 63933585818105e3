"""Production shape: warehouse and Dagster instance on PostgreSQL, multiprocess runs via the CLI."""

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ingest_assets.sandbox import Sandbox
from ingest_assets.warehouse.common import TableRef
from ingest_assets.warehouse.postgres_io import connect, read_frame
from ingest_assets_tests.conftest import DEMO_PARTITION
from ingest_assets_tests.pg import (  # noqa: F401  (pg_url_fixture registers pg_url)
    REPO_ROOT,
    pg_url_fixture,
    query,
    subprocess_env,
    temp_database,
)
from ingest_assets_tests.test_pipeline import TABLES

DAGSTER = Path(sys.executable).with_name("dagster")
RUN_SPECIFIC = {"_run_id", "_ingested_at", "_seq", "run_id", "quarantined_at", "duration_s"}
pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def tables(url: str) -> dict[str, pd.DataFrame]:
    found = query(
        url,
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_schema IN ('raw','quarantine','cleaned','features','metrics') ORDER BY 1, 2",
    )
    frames = {}
    with connect(url) as conn:
        for schema, table in found:
            df = read_frame(conn, TableRef(schema, table), None)
            df = df.drop(columns=[c for c in df.columns if c in RUN_SPECIFIC])
            keys = [
                c
                for c in (
                    "partition_date",
                    "source",
                    "id",
                    "partner_sku",
                    "city",
                    "time",
                    "product_id",
                    "category",
                    "observed_at",
                    "record",
                )
                if c in df.columns
            ]
            frames[f"{schema}.{table}"] = df.sort_values(keys, kind="stable").reset_index(drop=True)
    return frames


def test_the_whole_pipeline_on_postgres_twice(
    pg_url: str, tmp_path: Path, sandbox: Sandbox
) -> None:
    with temp_database("ingest_instance") as instance_url:
        home = tmp_path / "dagster_home"
        home.mkdir()
        shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
        env = subprocess_env(
            DAGSTER_HOME=str(home),
            DAGSTER_PG_URL=instance_url,
            INGEST_WAREHOUSE_URL=pg_url,
            INGEST_HOME=str(tmp_path),
            DUMMYJSON_BASE_URL=sandbox.url,
            OPEN_METEO_BASE_URL=sandbox.url,
        )
        command = [
            str(DAGSTER),
            "asset",
            "materialize",
            "-m",
            "ingest_assets.definitions",
            "--select",
            "*",
            "--partition",
            DEMO_PARTITION,
        ]
        snapshots = []
        # First the production executor (a process per step); the re-run in one process keeps
        # the suite quick on two cores and must give the same tables all the same.
        for executor in ("multiprocess", "in_process"):
            done = subprocess.run(
                command,
                env={**env, "INGEST_EXECUTOR": executor},
                capture_output=True,
                text=True,
                timeout=900,
                cwd=tmp_path,
            )
            assert done.returncode == 0, done.stderr[-4000:]
            assert (
                f"Executing steps {'using multiprocess executor' if executor == 'multiprocess' else 'in process'}"
                in done.stderr
            )
            snapshots.append(tables(pg_url))

        first, second = snapshots
        assert set(TABLES) <= set(first)
        assert len(first["cleaned.products"]) == 250 and len(first["quarantine.records"]) == 14
        for name in first:
            pd.testing.assert_frame_equal(first[name], second[name], check_like=True, obj=name)
        keys = query(
            pg_url,
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            "WHERE i.indrelid = 'cleaned.products'::regclass AND i.indisprimary ORDER BY a.attname",
        )
        assert [k for (k,) in keys] == ["partition_date", "product_id", "source"]
        assert query(
            pg_url,
            "SELECT data_type FROM information_schema.columns WHERE table_schema='quarantine' AND table_name='records' AND column_name='errors'",
        ) == [("jsonb",)]

        runs = query(instance_url, "SELECT status FROM runs ORDER BY create_timestamp")
        assert [status for (status,) in runs] == ["SUCCESS", "SUCCESS"]
        materialized = query(
            instance_url,
            "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' AND partition = %s",
            [DEMO_PARTITION],
        )[0][0]
        # One materialization per asset and run; the two datasets' quarantine and ingestion
        # assets share the tables quarantine.records and metrics.ingestion.
        assert materialized == 2 * (len(first) + 2)
        assert pg_url.split("@")[0] not in (home / "dagster.yaml").read_text()
