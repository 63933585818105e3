"""The repository's dagster.yaml: instance storage on PostgreSQL from the plain DAGSTER_PG_URL.

Each test gets its own database and a temporary DAGSTER_HOME holding a copy of the repo's
``dagster.yaml``. The point is the plain ``postgresql://`` form users write, which fails with
dagster-postgres' own ``storage: postgres:`` under SQLAlchemy 2.1 (see instance_storage.py).
"""

import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from dagster._core.run_coordinator import QueuedRunCoordinator

from ingest_assets.instance_storage import InstanceStorage, psycopg2_url
from ingest_assets.warehouse.postgres_io import PostgresPartitionedIOManager
from ingest_assets_tests.pg import (  # noqa: F401  (pg_url_fixture registers pg_url)
    REPO_ROOT,
    pg_url_fixture,
    query,
    subprocess_env,
)

DAILY = dg.DailyPartitionsDefinition(start_date="2024-01-01")


@pytest.fixture
def dagster_home(pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A DAGSTER_HOME with the repo's dagster.yaml, its storage in this test's database."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    assert pg_url.startswith("postgresql://")  # the plain form, no driver
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_PG_URL", pg_url)
    yield home


def test_psycopg2_url_picks_the_driver_dagster_postgres_needs() -> None:
    assert psycopg2_url("postgresql://u:pw@h:5432/db") == "postgresql+psycopg2://u:pw@h:5432/db"
    assert psycopg2_url("postgres://u@h/db?sslmode=require") == (
        "postgresql+psycopg2://u@h/db?sslmode=require"
    )
    assert psycopg2_url("postgresql+psycopg://h/db") == "postgresql+psycopg2://h/db"
    assert psycopg2_url("postgresql+psycopg2://h/db") == "postgresql+psycopg2://h/db"
    assert psycopg2_url("postgresql+pg8000://h/db") == "postgresql+pg8000://h/db"


def test_the_repo_instance_config(dagster_home: Path) -> None:
    with dg.DagsterInstance.get() as instance:
        storage = instance.get_ref().storage_data
        assert storage is not None and storage.class_name == InstanceStorage.__name__
        # The URL stays an env reference in the serialized config: no password in run storage.
        assert (
            "DAGSTER_PG_URL" in storage.config_yaml and "postgresql://" not in storage.config_yaml
        )
        assert instance.event_log_storage._engine.dialect.driver == "psycopg2"  # type: ignore[attr-defined]
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        assert not instance.telemetry_enabled
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 2


def test_a_materialization_is_recorded_in_postgres(dagster_home: Path, pg_url: str) -> None:
    @dg.asset(key=["raw", "things"], partitions_def=DAILY, pool="ingest_things")
    def things(context) -> pd.DataFrame:
        return pd.DataFrame(
            {"partition_date": pd.to_datetime([context.partition_key]), "thing": ["a"]}
        )

    with dg.DagsterInstance.get() as instance:
        result = dg.materialize(
            [things],
            partition_key="2024-01-03",
            instance=instance,
            resources={"io_manager": PostgresPartitionedIOManager(url=pg_url)},
        )
        assert result.success
        run_id = result.run_id

    assert query(pg_url, "SELECT status FROM runs WHERE run_id = %s", [run_id]) == [("SUCCESS",)]
    materializations = query(
        pg_url,
        "SELECT asset_key, partition FROM event_logs "
        "WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'",
        [run_id],
    )
    assert materializations == [('["raw", "things"]', "2024-01-03")]
    # The same database also holds the warehouse table here.
    assert query(pg_url, "SELECT thing FROM raw.things") == [("a",)]


ASSET_FILE = textwrap.dedent(
    """
    import dagster as dg

    @dg.asset(pool="ingest_cli")
    def cli_thing() -> int:
        return 1
    """
)


def test_the_dagster_cli_uses_postgres_storage_from_the_plain_url(
    dagster_home: Path, pg_url: str, tmp_path: Path
) -> None:
    assets = tmp_path / "cli_assets.py"
    assets.write_text(ASSET_FILE)
    dagster = Path(sys.executable).with_name("dagster")
    result = subprocess.run(
        [str(dagster), "asset", "materialize", "-f", str(assets), "--select", "cli_thing"],
        env=subprocess_env(DAGSTER_HOME=str(dagster_home), DAGSTER_PG_URL=pg_url),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "syntax error" not in result.stderr
    runs = query(pg_url, "SELECT status FROM runs")
    assert runs == [("SUCCESS",)]
    events = query(
        pg_url,
        "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
        "AND asset_key = '[\"cli_thing\"]'",
    )
    assert events == [(1,)]
