"""The repository's dagster.yaml without DAGSTER_PG_URL: SQLite, never a crash.

Dagster reads the current folder's dagster.yaml when DAGSTER_HOME is unset, so the file must
load in a bare shell. (With DAGSTER_PG_URL set it is PostgreSQL:
test_dagster_instance_postgres.py.)
"""

import shutil
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.instance.ref import InstanceRef
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.storage.event_log import SqliteEventLogStorage

from ingest_assets.instance_storage import InstanceStorage

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_pg_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAGSTER_PG_URL", raising=False)


@dg.asset
def one_thing() -> int:
    return 1


def test_without_dagster_home_runs_go_to_sqlite_under_ingest_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the dagster CLI does in a bare shell at the repo root: a temporary instance folder
    # configured by the current folder's dagster.yaml.
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("INGEST_HOME", str(tmp_path / "ingest_home"))
    temp_dir = tmp_path / "tmp_dagster_home"
    temp_dir.mkdir()
    ref = InstanceRef.from_dir(str(temp_dir), config_dir=str(REPO_ROOT))
    with dg.DagsterInstance.from_ref(ref) as instance:
        assert ref.storage_data is not None
        assert ref.storage_data.class_name == InstanceStorage.__name__
        assert isinstance(instance.event_log_storage, SqliteEventLogStorage)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert dg.materialize([one_thing], instance=instance).success
    # The run outlives the temporary folder: it is where `make dev` (DAGSTER_HOME =
    # $INGEST_HOME/dagster_home) finds it.
    shutil.rmtree(temp_dir)
    with dg.DagsterInstance.from_config(str(tmp_path / "ingest_home" / "dagster_home")) as home:
        assert [r.status for r in home.get_runs()] == [dg.DagsterRunStatus.SUCCESS]


def test_with_dagster_home_the_sqlite_files_are_dagsters_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.event_log_storage, SqliteEventLogStorage)
        assert dg.materialize([one_thing], instance=instance).success
    # A DAGSTER_HOME without our dagster.yaml (Dagster's defaults) sees the same runs.
    (home / "dagster.yaml").unlink()
    with dg.DagsterInstance.get() as instance:
        assert [r.status for r in instance.get_runs()] == [dg.DagsterRunStatus.SUCCESS]
