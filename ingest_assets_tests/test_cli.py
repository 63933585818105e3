"""``python -m ingest_assets``: validate, schema, scaffold and show, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest
import yaml

from ingest_assets.cli import datasets_json_schema
from ingest_assets.datasets.catalog import BUILTIN_DIR
from ingest_assets.datasets.scaffold import field_names, scaffold
from ingest_assets.loading import load_sources
from ingest_assets.sandbox import Sandbox
from ingest_assets_tests.conftest import DEMO_PARTITION, read_table, run_pipeline

REPO_ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("INGEST_")}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "ingest_assets", *args],
        cwd=cwd or REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- validate ---------------------------------------------------------------------------------


def test_validate_says_what_a_good_file_declares() -> None:
    done = cli("validate", str(REPO_ROOT / "ingest_assets" / "examples" / "github_issues.yaml"))
    assert done.returncode == 0, done.stderr
    assert "valid" in done.stdout
    assert "dataset github_issues (12 fields, key ['issue_id']): github_issues" in done.stdout
    assert "dataset products (9 fields" in done.stdout and "partner_feed" in done.stdout


def test_validate_names_file_line_dataset_field_and_word_without_a_traceback(
    tmp_path: Path,
) -> None:
    broken = tmp_path / "sources.yaml"
    broken.write_text(
        textwrap.dedent(
            """\
            datasets:
              orders:
                key: [order_id]
                fields:
                  order_id: {type: text}
                  total: {type: decimel, scale: 2}
            sources:
              shop:
                connector: jsonl
                dataset: orders
                path: "{landing_dir}/shop/{date}.jsonl"
            """
        )
    )
    done = cli("validate", str(broken))
    assert done.returncode == 2 and done.stdout == ""
    first = done.stderr.splitlines()[0]
    assert first.startswith("error: sources.yaml:6: datasets.orders.fields.total.type:")
    assert "unknown type 'decimel'" in first and "Traceback" not in done.stderr


# -- schema -----------------------------------------------------------------------------------


def test_the_shipped_json_schema_is_current_and_knows_every_word() -> None:
    shipped = json.loads(
        (REPO_ROOT / "ingest_assets" / "datasets" / "datasets.schema.json").read_text()
    )
    assert shipped == datasets_json_schema(), "run: python -m ingest_assets schema > ..."
    done = cli("schema")
    assert done.returncode == 0 and json.loads(done.stdout) == shipped
    words = set(shipped["$defs"]["FieldDeclaration"]["properties"])
    assert {"type", "nullable", "between", "isin", "regex", "lower", "scale"} <= words
    assert shipped["$defs"]["FieldDeclaration"]["additionalProperties"] is False
    # Every key the shipped declarations use is one the schema offers.
    for path in BUILTIN_DIR.glob("*.yaml"):
        for declaration in yaml.safe_load(path.read_text())["datasets"].values():
            assert set(declaration) <= set(shipped["$defs"]["DatasetDeclaration"]["properties"])
            for field in declaration["fields"].values():
                assert set(field) <= words, path


# -- scaffold ---------------------------------------------------------------------------------

ORDERS = [
    {"orderId": "A-1", "placed": "2024-06-01T08:15:00+02:00", "total": "19.90", "paid": True,
     "customer": {"email": "ana@example.org", "tier": "gold"}, "items": [{"sku": "X"}],
     "Straße": "Hauptstraße 1"},
    {"orderId": "A-2", "placed": "2024-06-01T09:00:00Z", "total": "5.00", "paid": "false",
     "customer": {"email": "bo@example.org", "tier": "silver"}, "items": [],
     "Straße": "Ring 2"},
    {"orderId": "A-3", "placed": "2024-06-01T10:30:00Z", "total": "120.5", "paid": False,
     "customer": {"tier": "gold"}, "items": [{"sku": "Y"}, {"sku": "Z"}], "Straße": None},
]  # fmt: skip
RETURNS_CSV = """return_id,order,reason,refund,day
R-1,A-1,damaged,19.90,2024-06-01
R-2,A-3,late,0,2024-06-01
R-3,A-2,damaged,5.00,2024-06-01
"""


def test_a_scaffold_profiles_types_nullability_keys_and_nested_fields() -> None:
    drafted = scaffold("orders", ORDERS)
    fields = {name: (type_, scale, nullable) for name, type_, scale, nullable, _ in drafted.fields}
    assert fields == {
        "order_id": ("text", None, False),
        "placed": ("timestamp", None, False),
        "total": ("decimal", 2, False),
        "paid": ("boolean", None, False),
        "customer_email": ("text", None, True),
        "customer_tier": ("text", None, False),
        "items": ("json", None, False),
        "stra_e": ("text", None, True),
    }
    assert drafted.mapping == {
        "order_id": "orderId",
        "customer_email": "customer.email",
        "customer_tier": "customer.tier",
        "stra_e": "Straße",
    }
    assert drafted.keys == ["order_id", "placed"]
    text = drafted.text("a test")
    # Observations are comments, never rules.
    declared = yaml.safe_load(text)["datasets"]["orders"]["fields"]
    assert declared["total"] == {"type": "decimal", "scale": 2}
    assert "seen 5.0 .. 120.5" in text


def test_field_names_are_unique_valid_and_never_a_pipeline_column() -> None:
    names = field_names([("source",), ("Source",), ("1st",), ("a", "b"), ("a_b",), ("日本",)])
    assert list(names.values()) == ["source_field", "source_field_2", "f_1st", "a_b", "a_b_2",
                                    "field"]  # fmt: skip


@pytest.mark.slow
def test_a_scaffold_round_trips_into_a_working_dataset(
    ingest_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, instance: dg.DagsterInstance
) -> None:
    """Draft from two samples (nested JSON lines, a flat CSV), keep the drafts as they are,
    materialize the day: every sampled record lands in cleaned/, none in quarantine."""
    landing = tmp_path / "landing"
    (landing / "shop").mkdir(parents=True)
    (landing / "returns").mkdir(parents=True)
    orders_file = landing / "shop" / f"{DEMO_PARTITION}.jsonl"
    orders_file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ORDERS))
    (landing / "returns" / f"{DEMO_PARTITION}.csv").write_text(RETURNS_CSV)
    env = {"INGEST_LANDING_DIR": str(landing)}

    orders = cli("scaffold", "orders", "--sample", str(orders_file), "--source", "shop", **env)
    assert orders.returncode == 0, orders.stderr
    returns_file = landing / "returns" / f"{DEMO_PARTITION}.csv"
    returns = cli(
        "scaffold", "returns", "--sample", str(returns_file), "--source", "returns", **env
    )
    assert returns.returncode == 0, returns.stderr
    first, second = yaml.safe_load(orders.stdout), yaml.safe_load(returns.stdout)
    assert first["sources"]["shop"]["path"] == "{landing_dir}/shop/{date}.jsonl"
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        yaml.safe_dump(
            {
                "datasets": {**first["datasets"], **second["datasets"]},
                "sources": {**first["sources"], **second["sources"]},
            },
            allow_unicode=True,
            sort_keys=False,
        )
    )
    monkeypatch.setenv("INGEST_SOURCES_FILE", str(sources))
    monkeypatch.setenv("INGEST_LANDING_DIR", str(landing))
    assert cli("validate", str(sources), **env).returncode == 0
    assert {"orders", "returns"} <= set(load_sources(sources).catalog.names)

    assert run_pipeline(instance=instance).success
    cleaned = read_table(ingest_env, "cleaned.orders").sort_values("order_id")
    assert cleaned["order_id"].tolist() == ["A-1", "A-2", "A-3"]
    assert cleaned["paid"].tolist() == [True, False, False]
    assert cleaned["customer_email"].tolist()[:2] == ["ana@example.org", "bo@example.org"]
    assert cleaned["stra_e"].tolist()[:2] == ["Hauptstraße 1", "Ring 2"]
    assert cleaned["total"].astype(float).tolist() == [19.9, 5.0, 120.5]
    assert read_table(ingest_env, "cleaned.returns")["return_id"].tolist() == ["R-1", "R-2", "R-3"]
    assert read_table(ingest_env, "quarantine.records").empty


def test_a_scaffold_from_one_api_page_and_from_a_source_day(tmp_path: Path) -> None:
    with Sandbox(port=0) as sandbox:
        page = cli("scaffold", "catalogue", "--url", f"{sandbox.url}/products?limit=30")
        assert page.returncode == 0, page.stderr
        drafted = yaml.safe_load(page.stdout)["datasets"]["catalogue"]
        assert drafted["key"] == ["id"]
        assert drafted["fields"]["price"]["type"] == "number"
        assert drafted["fields"]["dimensions_width"]["type"] == "number"
        assert "(30 records)" in page.stdout

        # A source whose dataset is not declared yet: its connector fetches the day.
        sources = tmp_path / "sources.yaml"
        sources.write_text(
            yaml.safe_dump(
                {
                    "sources": {
                        "issues": {
                            "connector": "rest",
                            "dataset": "issues",
                            "base_url": sandbox.url,
                            "path": "/repos/acme/widgets/issues",
                            "params": {"since": "{date}T00:00:00Z", "per_page": 10},
                            "pagination": {"kind": "link_header"},
                        }
                    }
                }
            )
        )
        day = cli(
            "scaffold", "issues", "--source", "issues", "--partition", DEMO_PARTITION,
            "--sources-file", str(sources),
        )  # fmt: skip
    assert day.returncode == 0, day.stderr
    text = day.stdout
    assert "user_login: user.login" in text
    fields = yaml.safe_load(text)["datasets"]["issues"]["fields"]
    assert fields["created_at"]["type"] == "timestamp" and fields["locked"]["type"] == "boolean"
    assert fields["labels"]["type"] == "json"


def test_a_scaffold_of_nothing_or_a_bad_name_is_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    done = cli("scaffold", "things", "--sample", str(empty))
    assert done.returncode == 2 and "no records to profile" in done.stderr
    done = cli("scaffold", "Things", "--sample", str(empty))
    assert done.returncode == 2 and "is not a dataset name" in done.stderr
    assert "Traceback" not in done.stderr


# -- show -------------------------------------------------------------------------------------


def test_show_names_a_missing_table(tmp_path: Path) -> None:
    done = cli("show", "cleaned.nothing", INGEST_HOME=str(tmp_path))
    assert done.returncode == 2 and "no table 'cleaned.nothing'" in done.stderr
