"""Shared fixtures: the loopback sandbox, an isolated INGEST_HOME, pipeline runs, services."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from ingest_assets.sandbox import Faults, Sandbox

DEMO_PARTITION = "2024-06-01"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def service_up(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Under CI=true a missing service fails the test; elsewhere it skips with the reason."""
    if service_up(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message} (CI=true: services are required)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(port=0) as server:
        yield server


@pytest.fixture(autouse=True)
def _sandbox_faults_reset(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "sandbox" in request.fixturenames:
        server = request.getfixturevalue("sandbox")
        server.set_faults(Faults())
        server.reset_stats()


@pytest.fixture
def ingest_env(tmp_path: Path, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private INGEST_HOME with the REST sources pointed at the sandbox."""
    home = tmp_path / "ingest_home"
    home.mkdir()
    monkeypatch.setenv("INGEST_HOME", str(home))
    monkeypatch.setenv("DUMMYJSON_BASE_URL", sandbox.url)
    monkeypatch.setenv("OPEN_METEO_BASE_URL", sandbox.url)
    for name in (
        "INGEST_WAREHOUSE_URL",
        "INGEST_SOURCES_FILE",
        "INGEST_LANDING_DIR",
        "INGEST_EXECUTOR",
    ):
        monkeypatch.delenv(name, raising=False)
    return home


def run_pipeline(
    partition: str = DEMO_PARTITION,
    *,
    instance: dg.DagsterInstance | None = None,
    job: str = "ingest_pipeline",
    defs: dg.Definitions | None = None,
    raise_on_error: bool = True,
) -> dg.ExecuteInProcessResult:
    from ingest_assets.definitions import build_definitions

    defs = defs or build_definitions()
    return defs.resolve_job_def(job).execute_in_process(
        partition_key=partition, instance=instance, raise_on_error=raise_on_error, run_config=QUIET
    )


def read_table(home: Path, table: str, where: str = "") -> pd.DataFrame:
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        con.execute("SET TimeZone='UTC'")
        return con.execute(f"SELECT * FROM {table} {where}").df()


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as test_instance:
        yield test_instance
