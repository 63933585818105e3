"""What the UI shows about each asset: columns, owners, layer kinds, code references, previews."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import dagster as dg
import pandas as pd
import pandera.pandas as pa
import pytest
from pandera.typing import Series

from ingest_assets.assets.metadata import (
    DEFAULT_OWNER,
    git_link_target,
    model_table_schema,
    table_schema,
    web_url,
    with_code_references,
)
from ingest_assets.datasets import shipped as shipped_datasets
from ingest_assets.quality import schemas
from ingest_assets.transforms.raw import SYSTEM_COLUMNS as RAW_SYSTEM_COLUMNS
from ingest_assets.warehouse.preview import preview_metadata, table_preview
from ingest_assets_tests.quality_fixtures import (  # noqa: F401 - fixtures
    QualityEnv,
    quality_env_fixture,
    quality_sandbox_fixture,
    shipped,
)

pytestmark = pytest.mark.timeout(300)
LAYERS = {"raw", "cleaned", "features", "metrics", "quarantine"}


def asset_nodes(defs: dg.Definitions) -> dict[str, dg.AssetSpec]:
    graph = defs.resolve_asset_graph()
    return {key.to_user_string(): graph.get(key) for key in graph.get_all_asset_keys()}


def columns(node) -> dict[str, dg.TableColumn]:
    schema = node.metadata["dagster/column_schema"]
    assert isinstance(schema, dg.TableSchema)
    return {c.name: c for c in schema.columns}


def quarantine_tables(names) -> list[str]:
    """The quarantine assets (one shared, or one per dataset), not the history."""
    found = [n for n in names if n.startswith("quarantine/") and n != "quarantine/history"]
    assert found
    return found


def test_every_table_asset_has_columns_owners_a_layer_kind_and_code_references(
    quality_env: QualityEnv,
) -> None:
    nodes = asset_nodes(quality_env.definitions())
    assert {"cleaned/products", "features/products", "metrics/products", "raw/partner_feed"} <= set(
        nodes
    )
    for name, node in nodes.items():
        layer = name.split("/")[0]
        assert columns(node), name
        assert "partition_date" in columns(node), name
        undescribed = [c.name for c in columns(node).values() if not c.description]
        assert not undescribed, (name, undescribed)
        assert node.owners == [DEFAULT_OWNER], name  # the shipped sources declare no owners
        # The group box (and, zoomed in, the kind tag) tells cleaned/products,
        # features/products and metrics/products apart in the lineage, where all three nodes
        # are labelled "products".
        assert node.group_name == layer and node.kinds & LAYERS == {layer}, name
        references = node.metadata["dagster/code_references"].code_references
        assert references, name
        for reference in references:
            if isinstance(reference, dg.LocalFileCodeReference):
                # The line where the asset's own function is declared (its first decorator).
                line = Path(reference.file_path).read_text().splitlines()[reference.line_number - 1]
                assert line.strip().startswith(("@", "def ")), (name, line)
                assert Path(reference.file_path).parent.name == "assets", name
            else:
                assert isinstance(reference, dg.UrlCodeReference)
                assert reference.url.startswith("https://")


def test_columns_come_from_the_compiled_schema(quality_env: QualityEnv) -> None:
    nodes = asset_nodes(quality_env.definitions())
    cleaned = columns(nodes["cleaned/products"])
    assert list(cleaned) == list(shipped_datasets()["products"].cleaned_schema.columns)
    price, rating, category = cleaned["price"], cleaned["rating"], cleaned["category"]
    assert (price.type, price.constraints.nullable, price.constraints.other) == (
        "double",
        False,
        ["> 0"],
    )
    assert rating.constraints.nullable and rating.constraints.other == [">= 0", "<= 5"]
    assert "lower_case" in category.constraints.other and "non-empty" in category.constraints.other
    assert cleaned["partition_date"].type == "date"
    assert cleaned["_ingested_at"].type == "timestamp (UTC)"
    assert cleaned["stock"].type == "bigint"
    table_rules = nodes["cleaned/products"].metadata["dagster/column_schema"].constraints.other
    assert "unique (partition_date, source, product_id)" in table_rules

    features = columns(nodes["features/products"])
    assert features["rating_bucket"].constraints.other == ["one of low, medium, high"]
    assert "final_price_formula" in (
        nodes["features/products"].metadata["dagster/column_schema"].constraints.other
    )
    for name in quarantine_tables(nodes):
        assert set(columns(nodes[name])) >= {"record", "errors", "source"}


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("cleaned/products", "cleaned.products"),
        ("features/weather", "features.weather"),
        ("metrics/products", "metrics.products"),
        ("metrics/ingestion", "MetricsIngestion"),
        ("metrics/ingestion_weather", "MetricsIngestion"),
        ("quarantine/records", "QuarantineRecords"),
        ("quarantine/products", "QuarantineRecords"),
        ("quarantine/history", "QuarantineHistory"),
        ("raw/partner_feed", None),
        ("cleaned/unknown", None),
    ],
)
def test_the_schema_of_a_table_follows_its_key(key: str, expected: str | None) -> None:
    schema = table_schema(dg.AssetKey(key.split("/")), shipped_datasets())
    assert (schema.name if schema is not None else None) == expected


def test_a_model_field_description_is_the_column_description() -> None:
    class Described(schemas.PartitionedModel):
        amount: Series[float] = pa.Field(ge=0, description="What was paid, in EUR.")

    amount = {c.name: c for c in model_table_schema(Described.to_schema()).columns}["amount"]
    assert amount.description == "What was paid, in EUR."


def test_raw_columns_are_the_system_columns_and_the_declared_fields(
    quality_env: QualityEnv,
) -> None:
    weather = shipped("open_meteo_weather")
    weather.pop("fields")
    quality_env.use_sources(partner_feed=shipped("partner_feed"), open_meteo_weather=weather)
    nodes = asset_nodes(quality_env.definitions())
    partner = columns(nodes["raw/partner_feed"])
    system = [c for c in RAW_SYSTEM_COLUMNS if c != "partition_date"]
    assert list(partner) == ["partition_date", *shipped("partner_feed")["fields"], *system]
    assert {"_run_id", "_ingested_at", "_record", "_seq"} <= set(system)
    assert not partner["_record"].constraints.nullable
    assert partner["list_price"].type == "text"
    assert "number" in partner["list_price"].description
    assert "becomes price in cleaned/products" in partner["list_price"].description
    # Without fields:, what the mapping reads is what is known.
    undeclared = columns(nodes["raw/open_meteo_weather"])
    assert {"temperature_2m", "time", "city"} <= set(undeclared)


def test_raw_columns_match_the_stored_table(quality_env: QualityEnv) -> None:
    quality_env.use_sources(partner_feed=shipped("partner_feed"))
    nodes = asset_nodes(quality_env.definitions())
    quality_env.run()
    for name in ("raw/partner_feed", "cleaned/products", "features/products", "metrics/products"):
        stored = set(quality_env.table(name.replace("/", ".")).columns)
        assert set(columns(nodes[name])) == stored, name


def test_owners_come_from_the_sources_file(quality_env: QualityEnv) -> None:
    partner = {**shipped("partner_feed"), "owners": ["team:partners", "ana@example.com"]}
    quality_env.use_sources(
        partner_feed=partner,
        supplier_catalog=shipped("supplier_catalog"),
        open_meteo_weather=shipped("open_meteo_weather"),
    )
    nodes = asset_nodes(quality_env.definitions())
    assert nodes["raw/partner_feed"].owners == ["team:partners", "ana@example.com"]
    assert nodes["raw/supplier_catalog"].owners == [DEFAULT_OWNER]
    for name in ("cleaned/products", "features/products", "metrics/products"):
        assert nodes[name].owners == ["team:partners", "ana@example.com"], name
    assert nodes["cleaned/weather"].owners == [DEFAULT_OWNER]
    assert nodes["features/products"].tags["dataset"] == "products"


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    git(repo, "add", "pyproject.toml")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "init")
    return repo


def test_no_git_link_without_a_remote_or_outside_a_checkout(git_repo: Path, tmp_path: Path) -> None:
    assert git_link_target(git_repo) is None
    assert git_link_target(tmp_path / "not-a-repo") is None
    git(git_repo, "remote", "add", "origin", "https://git.example.org/acme/ingest.git")
    assert git_link_target(git_repo) is None  # a host Dagster cannot link to


def test_a_github_remote_links_the_code_references_to_the_commit(git_repo: Path) -> None:
    git(git_repo, "remote", "add", "origin", "https://ci:s3cret@github.com/acme/ingest.git")
    commit = git(git_repo, "rev-parse", "HEAD")
    assert git_link_target(git_repo) == ("https://github.com/acme/ingest", commit)

    # An asset defined in a file of that checkout links to the file and line at that commit.
    module = git_repo / "pkg" / "things.py"
    module.parent.mkdir()
    module.write_text("import dagster as dg\n\n\n@dg.asset\ndef things() -> int:\n    return 1\n")
    namespace: dict = {}
    exec(compile(module.read_text(), str(module), "exec"), namespace)
    (linked,) = with_code_references([namespace["things"]], repo_root=git_repo)
    (reference,) = (
        linked.specs_by_key[dg.AssetKey("things")]
        .metadata["dagster/code_references"]
        .code_references
    )
    assert isinstance(reference, dg.UrlCodeReference)
    assert reference.url == f"https://github.com/acme/ingest/tree/{commit}/pkg/things.py#L4"
    assert "s3cret" not in reference.url


@pytest.mark.parametrize(
    ("remote", "url"),
    [
        ("git@github.com:acme/ingest.git", "https://github.com/acme/ingest"),
        ("ssh://git@gitlab.com:2222/acme/ingest.git", "https://gitlab.com/acme/ingest"),
        ("https://user:token@github.com/acme/ingest/", "https://github.com/acme/ingest"),
        ("/srv/git/ingest.git", None),
    ],
)
def test_web_url_of_a_remote(remote: str, url: str | None) -> None:
    assert web_url(remote) == url


def test_a_preview_leaves_out_what_could_carry_a_credential() -> None:
    frame = pd.DataFrame(
        {
            "product_id": ["1", "2", "3"],
            "day": pd.to_datetime(["2024-06-01"] * 3),
            "price": [9.5, None, 1 / 3],
            "stock": pd.array([1, None, 3], dtype="Int64"),
            "at": pd.to_datetime(["2024-06-01"] * 3, utc=True),
            "api_token": ["t1", "t2", "t3"],
            "record": [json.dumps({"id": 1, "password": "hunter2", "x": "y" * 200}), "{}", "{}"],
        }
    )
    preview = table_preview(frame, rows=2)
    assert [c.name for c in preview.schema.columns] == [
        "product_id",
        "day",
        "price",
        "stock",
        "at",
        "record",
    ]
    assert [c.type for c in preview.schema.columns] == [
        "string",
        "string",
        "float",
        "int",
        "string",
        "string",
    ]
    first, second = (r.data for r in preview.records)
    assert first["price"] == 9.5 and second["price"] is None and second["stock"] is None
    assert first["at"] == "2024-06-01T00:00:00+00:00" and first["day"] == "2024-06-01"
    assert first["stock"] == 1
    assert "hunter2" not in first["record"] and '"password": ***' in first["record"]
    assert len(first["record"]) <= 80
    assert preview_metadata(frame, {}) == {}
    (*_, third) = preview_metadata(frame, {"preview_rows": 5})["preview"].records
    assert third.data["price"] == 0.333333


def test_cleaned_metrics_and_quarantine_materializations_carry_a_preview(
    quality_env: QualityEnv,
) -> None:
    result = quality_env.run()
    by_asset = {
        e.asset_key.to_user_string(): e.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    preview = by_asset["cleaned/products"]["preview"]
    assert isinstance(preview, dg.TableMetadataValue)
    assert len(preview.records) == 5
    cleaned = quality_env.table("cleaned.products")
    shown = {(r.data["source"], r.data["product_id"]) for r in preview.records}
    assert shown <= set(zip(cleaned["source"], cleaned["product_id"], strict=True))
    assert {"price", "category", "title"} <= {c.name for c in preview.schema.columns}
    assert len(by_asset["metrics/products"]["preview"].records) == 5
    shown = [by_asset[name]["preview"] for name in quarantine_tables(by_asset)]
    assert any(p.records for p in shown)
    for quarantined in shown:
        assert {"record", "errors"} <= {c.name for c in quarantined.schema.columns}
    for name in ("raw/partner_feed", "features/products"):
        assert "preview" not in by_asset[name], name
