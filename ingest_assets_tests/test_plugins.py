"""A connector plugin installed under the entry-point group is found, configured and materialized."""

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from ingest_assets.config import ConfigError
from ingest_assets.connectors import registry
from ingest_assets.definitions import build_definitions
from ingest_assets.loading import load_sources
from ingest_assets_tests.conftest import QUIET, read_table

PLUGIN = '''
from collections.abc import AsyncIterator

from pydantic import Field

from ingest_assets.connectors.base import Batch, Connector, ConnectorOptions, FetchContext


class StaticOptions(ConnectorOptions):
    count: int = Field(ge=1)


class StaticCatalog(Connector):
    """Makes ``count`` products for any day; the last one has no price."""

    kind = "static_catalog"
    Options = StaticOptions

    async def fetch(self, ctx: FetchContext) -> AsyncIterator[Batch]:
        ctx.stats.requests += 1
        items = [
            {"code": f"C{i}", "label": f"Item {i}", "group": "Tools", "cost": None if i == self.options.count - 1 else 2.5 * (i + 1), "markdown": 0, "qty": i}
            for i in range(self.options.count)
        ]
        yield items
'''


@pytest.fixture
def installed_plugin(tmp_path: Path) -> Iterator[None]:
    """Install a plugin distribution the way pip would: a module plus dist-info with entry points."""
    site = tmp_path / "site"
    (site / "static_catalog_plugin").mkdir(parents=True)
    (site / "static_catalog_plugin" / "__init__.py").write_text(PLUGIN)
    dist = site / "static_catalog_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: static-catalog-plugin\nVersion: 0.1\n"
    )
    (dist / "entry_points.txt").write_text(
        "[ingest_assets.connectors]\nstatic_catalog = static_catalog_plugin:StaticCatalog\n"
    )
    sys.path.insert(0, str(site))
    try:
        registry.reload_plugins()
        yield
    finally:
        sys.path.remove(str(site))
        sys.modules.pop("static_catalog_plugin", None)
        registry._REGISTRY.pop("static_catalog", None)


def sources_file(tmp_path: Path, options: str) -> Path:
    path = tmp_path / "plugin_sources.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            sources:
              tool_catalog:
                connector: static_catalog
                dataset: products
                {options}
                mapping: {{product_id: code, title: label, category: group, price: cost, discount_pct: markdown, stock: qty}}
            """
        )
    )
    return path


def test_plugin_source_is_materialized(
    installed_plugin: None, tmp_path: Path, ingest_env: Path
) -> None:
    assert "static_catalog" in registry.registered_kinds()
    defs = build_definitions(load_sources(sources_file(tmp_path, "count: 4")))
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("ingest_pipeline").execute_in_process(
            partition_key="2024-06-01", instance=instance, run_config=QUIET
        )
    assert result.success
    assert len(read_table(ingest_env, "raw.tool_catalog")) == 4
    cleaned = read_table(ingest_env, "cleaned.products")
    assert cleaned["product_id"].tolist() == ["C0", "C1", "C2"]
    assert set(cleaned["category"]) == {"tools"}
    quarantined = read_table(ingest_env, "quarantine.records")
    assert len(quarantined) == 1 and '"check": "not_nullable"' in quarantined["errors"][0]
    ingestion = read_table(ingest_env, "metrics.ingestion")
    assert ingestion[
        ["source", "records_fetched", "records_valid", "records_quarantined", "requests"]
    ].values.tolist() == [["tool_catalog", 4, 3, 1, 1]]


def test_plugin_options_are_validated_at_load(installed_plugin: None, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"source 'tool_catalog', field 'count'"):
        load_sources(sources_file(tmp_path, "count: 0"))
