"""The CI smoke run: `dagster asset materialize` of every asset, as a user or CI would type it."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from ingest_assets.sandbox import Sandbox
from ingest_assets_tests.conftest import DEMO_PARTITION, read_table

DAGSTER = Path(sys.executable).with_name("dagster")
pytestmark = pytest.mark.slow


def cli_env(home: Path, sandbox: Sandbox) -> dict[str, str]:
    dagster_home = home / "dagster_home"
    dagster_home.mkdir(exist_ok=True)
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "DAGSTER_"))}
    env.update(
        INGEST_HOME=str(home),
        DAGSTER_HOME=str(dagster_home),
        DUMMYJSON_BASE_URL=sandbox.url,
        OPEN_METEO_BASE_URL=sandbox.url,
    )
    return env


def test_dagster_asset_materialize_everything(tmp_path: Path, sandbox: Sandbox) -> None:
    env = cli_env(tmp_path, sandbox)
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
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "RUN_SUCCESS" in done.stderr
    assert len(read_table(tmp_path, "cleaned.products")) == 250
    assert len(read_table(tmp_path, "metrics.ingestion")) == 4
    # the run and its check results are in the instance that DAGSTER_HOME names
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        runs = instance.get_runs()
        assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS]
        checks = instance.get_latest_asset_check_evaluation_record(
            dg.AssetCheckKey(dg.AssetKey(["cleaned", "products"]), "pandera_schema")
        )
        assert checks is not None and checks.event.dagster_event.event_specific_data.passed


def test_definitions_load_through_the_workspace(tmp_path: Path, sandbox: Sandbox) -> None:
    env = cli_env(tmp_path, sandbox)
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [str(DAGSTER), "definitions", "validate", "-w", str(repo / "workspace.yaml")],
        env=env, capture_output=True, text=True, timeout=300, cwd=repo,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
