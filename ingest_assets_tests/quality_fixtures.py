"""What the data-quality tests share: a private warehouse, sources files, landing files, runs.

Import the fixtures explicitly: ``from ingest_assets_tests.quality_fixtures import
quality_env_fixture, quality_sandbox_fixture`` makes ``quality_env`` (and the module's sandbox,
``quality_sandbox``) available to a test module.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pandas as pd
import pytest
import yaml

from ingest_assets.config import DEFAULT_LANDING_DIR, DEFAULT_SOURCES_FILE
from ingest_assets.datasets import CompiledDataset
from ingest_assets.datasets import shipped as shipped_datasets
from ingest_assets.datasets.catalog import BUILTIN_DIR
from ingest_assets.datasets.compile import compile_dataset
from ingest_assets.datasets.declaration import DatasetDeclaration
from ingest_assets.sandbox import Sandbox

QUIET: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
SHIPPED: dict[str, Any] = yaml.safe_load(DEFAULT_SOURCES_FILE.read_text())


def _merged(base: Any, changes: Any) -> Any:
    if isinstance(base, dict) and isinstance(changes, dict):
        merged = dict(base)
        for key, value in changes.items():
            merged[key] = _merged(base.get(key), value) if key in base else value
        return merged
    return changes


def declaration(dataset: str, **changes: Any) -> CompiledDataset:
    """A shipped dataset's YAML declaration with ``changes`` merged in, compiled as the loader
    compiles it (``fields={"rating": {"le": 10}}`` changes one rule and nothing else)."""
    data = yaml.safe_load((BUILTIN_DIR / f"{dataset}.yaml").read_text())["datasets"][dataset]
    decl = DatasetDeclaration.model_validate(_merged(data, changes))
    return compile_dataset(dataset, decl, f"{dataset}.yaml (changed by a test)")


def redeclare(monkeypatch: pytest.MonkeyPatch, dataset: str, **changes: Any) -> CompiledDataset:
    """Change a shipped declaration for the rest of the test (what a user does by editing its
    YAML): every definitions built afterwards compile with it."""
    compiled = declaration(dataset, **changes)
    monkeypatch.setitem(shipped_datasets().datasets, dataset, compiled)
    return compiled


def shipped(name: str) -> dict[str, Any]:
    """A copy of a source block of the shipped sources.yaml, to change in a test."""
    return copy.deepcopy(SHIPPED["sources"][name])


def check_results(
    result: dg.ExecuteInProcessResult,
) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    """The run's check evaluations by (asset key as a/b, check name)."""
    return {
        (e.asset_key.to_user_string(), e.check_name): e
        for e in result.get_asset_check_evaluations()
    }


def materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


@dataclass
class QualityEnv:
    """A private INGEST_HOME (DuckDB warehouse), landing folder and Dagster instance."""

    home: Path
    landing: Path
    instance: dg.DagsterInstance
    monkeypatch: pytest.MonkeyPatch

    def use_sources(self, **blocks: dict[str, Any]) -> Path:
        """Write a sources file with these blocks (name → block) and point INGEST_SOURCES_FILE at it."""
        path = self.home / "sources.yaml"
        path.write_text(yaml.safe_dump({"sources": blocks}, sort_keys=False))
        self.monkeypatch.setenv("INGEST_SOURCES_FILE", str(path))
        return path

    def land(self, source: str, day: str, text: str, suffix: str = "csv") -> Path:
        path = self.landing / source / f"{day}.{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def definitions(self) -> dg.Definitions:
        from ingest_assets.definitions import build_definitions

        return build_definitions()

    def run(
        self,
        partition: str | None = "2024-06-01",
        *,
        job: str = "ingest_pipeline",
        until: str | None = None,
        run_config: dict[str, Any] | None = None,
        defs: dg.Definitions | None = None,
        raise_on_error: bool = True,
    ) -> dg.ExecuteInProcessResult:
        """Run a job for a partition, or for the range ``partition``..``until`` in one run."""
        defs = defs or self.definitions()
        tags = {}
        if until is not None:
            tags = {
                "dagster/asset_partition_range_start": partition,
                "dagster/asset_partition_range_end": until,
            }
        return defs.resolve_job_def(job).execute_in_process(
            partition_key=None if until else partition,
            tags=tags,
            instance=self.instance,
            run_config={**QUIET, **(run_config or {})},
            raise_on_error=raise_on_error,
        )

    def table(self, name: str, where: str = "") -> pd.DataFrame:
        with duckdb.connect(str(self.home / "warehouse.duckdb"), read_only=True) as con:
            con.execute("SET TimeZone='UTC'")
            return con.execute(f"SELECT * FROM {name} {where}").df()

    def count(self, name: str, where: str = "") -> int:
        return len(self.table(name, where))


@pytest.fixture(scope="module", name="quality_sandbox")
def quality_sandbox_fixture() -> Iterator[Sandbox]:
    """The loopback imitation of DummyJSON and Open-Meteo, over real HTTP."""
    with Sandbox(port=0) as server:
        yield server


@pytest.fixture(name="quality_env")
def quality_env_fixture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quality_sandbox: Sandbox
) -> Iterator[QualityEnv]:
    """The shipped sources (until a test writes its own) against the sandbox and sample files."""
    home = tmp_path / "ingest_home"
    landing = tmp_path / "landing"
    home.mkdir()
    shutil.copytree(DEFAULT_LANDING_DIR, landing)
    monkeypatch.setenv("INGEST_HOME", str(home))
    monkeypatch.setenv("INGEST_LANDING_DIR", str(landing))
    monkeypatch.setenv("DUMMYJSON_BASE_URL", quality_sandbox.url)
    monkeypatch.setenv("OPEN_METEO_BASE_URL", quality_sandbox.url)
    for name in ("INGEST_WAREHOUSE_URL", "INGEST_SOURCES_FILE", "INGEST_EXECUTOR"):
        monkeypatch.delenv(name, raising=False)
    with dg.DagsterInstance.ephemeral() as instance:
        yield QualityEnv(home=home, landing=landing, instance=instance, monkeypatch=monkeypatch)
