"""A dataset the project has never seen, declared in YAML only, fed by a nested JSON-lines feed
and a flat CSV, materialized for real on DuckDB and PostgreSQL; and broken declarations."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import textwrap
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from ingest_assets.config import ConfigError
from ingest_assets.definitions import build_definitions
from ingest_assets.loading import load_sources
from ingest_assets.warehouse.common import TableRef
from ingest_assets.warehouse.postgres_io import connect, read_frame
from ingest_assets_tests.conftest import DEMO_PARTITION, read_table, run_pipeline
from ingest_assets_tests.pg import pg_url_fixture  # noqa: F401  (registers pg_url)

DECLARATION = r"""
datasets:
  tickets:
    description: Support tickets as listed each day.
    key: [ticket_id]
    fields:
      ticket_id: {type: text, description: The ticket's id at its source.}
      subject:   {type: text, min_length: 1}
      status:    {type: text, lower: true, isin: [open, pending, closed]}
      priority:  {type: integer, between: [1, 4]}
      amount:    {type: decimal, scale: 2, ge: 0, nullable: true}
      vip:       {type: boolean}
      opened_on: {type: date}
      updated_at: {type: timestamp}
      email:     {type: text, regex: '^[^@\s]+@[^@\s]+\.[a-z]+$', nullable: true}
      labels:    {type: json, nullable: true}
    features:
      group_by: [partition_date, status]
      columns:
        age_days: {sql: "date_diff('day', opened_on, cast(partition_date as date))", ge: 0}
        is_urgent: "priority >= 3 or vip"
        priority_rank: "rank() over (order by priority desc, ticket_id)"
    metrics:
      group_by: [partition_date, status]
      columns:
        ticket_count: "count(*)"
        amount_total: "coalesce(sum(amount), 0)"
        vip_share: "avg(case when vip then 1.0 else 0.0 end)"
sources:
  helpdesk_feed:
    connector: jsonl
    dataset: tickets
    path: "{landing_dir}/helpdesk_feed/{date}.jsonl"
    mapping:
      ticket_id: id
      email: customer.email
      labels: tags
  helpdesk_export:
    connector: csv
    dataset: tickets
    path: "{landing_dir}/helpdesk_export/{date}.csv"
"""

FEED = [
    {"id": 1, "subject": " Printer on fire ", "status": "OPEN", "priority": 4, "amount": "12.50",
     "vip": True, "opened_on": "2024-05-30", "updated_at": "2024-06-01T10:00:00+02:00",
     "customer": {"email": "a@x.org"}, "tags": ["hw", "urgent"]},
    {"id": 2, "subject": "Invoice", "status": "pending", "priority": 2, "amount": 3.1,
     "vip": "FALSE", "opened_on": "2024-06-01", "updated_at": "2024-06-01T09:00:00",
     "customer": {}},
    {"id": 3, "subject": "x", "status": "closed", "priority": 5, "vip": False,
     "opened_on": "2024-06-01", "updated_at": "2024-06-01T09:00:00Z"},
    {"id": 4, "subject": "x", "status": "open", "priority": 1, "amount": "1.005", "vip": False,
     "opened_on": "2024-06-01", "updated_at": "2024-06-01T09:00:00Z"},
    {"id": 5, "subject": "x", "status": "open", "priority": 1, "vip": False,
     "opened_on": "2024-02-30", "updated_at": "2024-06-01T09:00:00Z"},
    {"id": 6, "subject": "x", "status": "unknown", "priority": 1, "vip": False,
     "opened_on": "2024-06-01", "updated_at": "2024-06-01T09:00:00Z"},
    {"id": 1, "subject": "again", "status": "open", "priority": 1, "vip": False,
     "opened_on": "2024-06-01", "updated_at": "2024-06-01T09:00:00Z"},
    {"id": 7, "subject": "x", "status": "open", "priority": 1, "vip": "yes",
     "opened_on": "2024-06-01", "updated_at": "2024-06-01T09:00:00Z"},
    {"id": 8, "subject": "x", "status": "open", "priority": 1, "vip": False,
     "opened_on": "2024-06-01", "updated_at": "2024-06-01T09:00:00Z",
     "customer": {"email": "not-an-email"}},
]  # fmt: skip
EXPORT = """ticket_id,subject,status,priority,amount,vip,opened_on,updated_at,email
10,Login fails,Closed,1,,true,2024-05-01,2024-06-01T12:30:00Z,b@y.com
1,dup of feed,open,1,0,false,2024-06-01,2024-06-01T00:00:00Z,
11,   ,open,2,5.5,false,2024-06-01,2024-06-01T00:00:00Z,
12,Cannot print,OPEN,2,7.25,false,2024-05-31,2024-06-01T13:00:00Z,c@z.io
"""
# What each invalid record must be quarantined for: (source, ticket id) → (column, check).
REASONS = {
    ("helpdesk_feed", 3): ("priority", "in_range(1, 4)"),
    ("helpdesk_feed", 4): ("amount", "dtype"),
    ("helpdesk_feed", 5): ("opened_on", "dtype"),
    ("helpdesk_feed", 6): ("status", "isin(['open', 'pending', 'closed'])"),
    ("helpdesk_feed", 1): ("ticket_id", "duplicate"),
    ("helpdesk_feed", 7): ("vip", "dtype"),
    ("helpdesk_feed", 8): ("email", r"str_matches('^(?:^[^@\s]+@[^@\s]+\.[a-z]+$)$')"),
    ("helpdesk_export", 1): ("ticket_id", "duplicate"),
    ("helpdesk_export", 11): ("subject", "not_nullable"),
}
pytestmark = pytest.mark.slow


@pytest.fixture
def tickets_env(ingest_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    landing = tmp_path / "landing"
    (landing / "helpdesk_feed").mkdir(parents=True)
    (landing / "helpdesk_export").mkdir(parents=True)
    feed = "\n".join(json.dumps(r) for r in FEED) + "\n"
    (landing / "helpdesk_feed" / f"{DEMO_PARTITION}.jsonl").write_text(feed)
    (landing / "helpdesk_export" / f"{DEMO_PARTITION}.csv").write_text(EXPORT)
    sources = tmp_path / "sources.yaml"
    sources.write_text(DECLARATION)
    monkeypatch.setenv("INGEST_SOURCES_FILE", str(sources))
    monkeypatch.setenv("INGEST_LANDING_DIR", str(landing))
    return ingest_env


def _check_tables(read) -> None:  # noqa: ANN001 - a function (table -> DataFrame)
    cleaned = read("cleaned.tickets").sort_values("ticket_id").reset_index(drop=True)
    assert list(cleaned.columns[:3]) == ["partition_date", "source", "ticket_id"]
    assert cleaned["ticket_id"].tolist() == ["1", "10", "12", "2"]
    first = cleaned.iloc[0]
    assert first["subject"] == "Printer on fire" and first["status"] == "open"
    assert first["email"] == "a@x.org" and json.loads(first["labels"]) == ["hw", "urgent"]
    assert decimal.Decimal(str(first["amount"])) == decimal.Decimal("12.50")
    assert pd.Timestamp(first["updated_at"]) == pd.Timestamp("2024-06-01T08:00:00Z")
    assert pd.Timestamp(first["opened_on"]).date() == dt.date(2024, 5, 30)
    assert bool(first["vip"]) is True
    second = cleaned.set_index("ticket_id").loc["2"]
    assert bool(second["vip"]) is False and pd.isna(second["email"]) and pd.isna(second["labels"])
    assert decimal.Decimal(str(second["amount"])) == decimal.Decimal("3.10")
    assert pd.Timestamp(second["updated_at"]) == pd.Timestamp("2024-06-01T09:00:00Z")
    assert pd.isna(cleaned.set_index("ticket_id").loc["10", "amount"])

    quarantine = read("quarantine.records")
    quarantine = quarantine[quarantine["dataset"] == "tickets"]
    found = {}
    for row in quarantine.itertuples():
        record = json.loads(row.record)
        ticket = int(record.get("id", record.get("ticket_id")))
        errors = json.loads(row.errors)
        found[(row.source, ticket)] = {(e["column"], e["check"]) for e in errors}
    assert set(found) == set(REASONS)
    for where, reason in REASONS.items():
        assert reason in found[where], (where, found[where])

    features = read("features.tickets").set_index("ticket_id")
    assert features.loc["1", "age_days"] == 2 and features.loc["10", "age_days"] == 31
    assert bool(features.loc["1", "is_urgent"]) and bool(features.loc["10", "is_urgent"])
    assert not bool(features.loc["2", "is_urgent"])
    # The window stays inside its group (status): ticket 1 and 12 are the open ones.
    assert features.loc[["1", "12", "2", "10"], "priority_rank"].tolist() == [1, 2, 1, 1]

    metrics = read("metrics.tickets").set_index("status")
    assert list(metrics.columns[:1]) == ["partition_date"] or "partition_date" in metrics.columns
    assert metrics.loc["open", "ticket_count"] == 2
    assert decimal.Decimal(str(metrics.loc["open", "amount_total"])) == decimal.Decimal("19.75")
    assert decimal.Decimal(str(metrics.loc["closed", "amount_total"])) == 0
    assert metrics.loc["open", "vip_share"] == pytest.approx(0.5)
    assert metrics.loc["closed", "vip_share"] == pytest.approx(1.0)

    ingestion = read("metrics.ingestion").set_index("source")
    assert ingestion.loc["helpdesk_feed", "records_fetched"] == 9
    assert ingestion.loc["helpdesk_feed", "records_valid"] == 2
    assert ingestion.loc["helpdesk_export", "records_quarantined"] == 2


def _checks_passed(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {
        f"{e.asset_key.to_user_string()}:{e.check_name}": e.passed
        for e in result.get_asset_check_evaluations()
    }


def test_a_declared_dataset_fills_its_tables_on_duckdb(
    tickets_env: Path, instance: dg.DagsterInstance
) -> None:
    result = run_pipeline(instance=instance)
    assert result.success
    _check_tables(lambda table: read_table(tickets_env, table))
    checks = _checks_passed(result)
    for key in ("cleaned/tickets", "features/tickets", "metrics/tickets"):
        assert checks[f"{key}:pandera_schema"], key
    with __import__("duckdb").connect(str(tickets_env / "warehouse.duckdb"), read_only=True) as c:
        types = dict(c.execute("DESCRIBE cleaned.tickets").fetchall()[i][:2] for i in range(13))
    assert types["amount"] == "DECIMAL(38,2)" and types["opened_on"] == "DATE"
    assert types["vip"] == "BOOLEAN" and types["updated_at"] == "TIMESTAMP WITH TIME ZONE"


@pytest.mark.postgres
def test_a_declared_dataset_fills_its_tables_on_postgres(
    tickets_env: Path, instance: dg.DagsterInstance, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INGEST_WAREHOUSE_URL", pg_url)
    monkeypatch.setenv("INGEST_EXECUTOR", "in_process")
    result = run_pipeline(instance=instance, defs=build_definitions())
    assert result.success

    def read(table: str) -> pd.DataFrame:
        with connect(pg_url) as conn:
            return read_frame(conn, TableRef(*table.split(".")), None)

    _check_tables(read)
    from ingest_assets_tests.pg import column_types

    types = column_types(pg_url, "cleaned", "tickets")
    assert types["amount"] == "numeric" and types["opened_on"] == "date"


def _broken(tmp_path: Path, declaration: str, sources: str = "") -> str:
    path = tmp_path / "sources.yaml"
    path.write_text(textwrap.dedent(declaration) + (sources or SOURCES))
    with pytest.raises(ConfigError) as raised:
        load_sources(path)
    return str(raised.value)


SOURCES = """
sources:
  helpdesk_export:
    connector: csv
    dataset: tickets
    path: "{landing_dir}/x/{date}.csv"
"""


def test_an_unknown_type_names_file_line_dataset_field_and_word(tmp_path: Path) -> None:
    message = _broken(
        tmp_path,
        """
        datasets:
          tickets:
            key: [ticket_id]
            fields:
              ticket_id: {type: text}
              priority: {type: integr}
        """,
    )
    assert message.startswith("sources.yaml:7: datasets.tickets.fields.priority.type: ")
    assert "unknown type 'integr' (one of text, integer" in message
    assert "Traceback" not in message


@pytest.mark.parametrize(
    ("fields", "extra", "expected"),
    [
        ("priority: {type: integer, betwen: [1, 4]}", "", "fields.priority.betwen: unknown key"),
        ("priority: {type: text, ge: 1}", "", "fields.priority.ge: applies to integer"),
        ("priority: {type: integer}", "", None),
    ],
)
def test_unknown_rules_are_refused(tmp_path: Path, fields: str, extra: str, expected) -> None:  # noqa: ANN001
    declaration = f"""
    datasets:
      tickets:
        key: [ticket_id]
        fields:
          ticket_id: {{type: text}}
          {fields}
    """
    path = tmp_path / "sources.yaml"
    path.write_text(textwrap.dedent(declaration) + SOURCES)
    if expected is None:
        assert load_sources(path).dataset("tickets").field_names == ["ticket_id", "priority"]
        return
    with pytest.raises(ConfigError, match=r"sources\.yaml:\d+: datasets\.tickets\.") as raised:
        load_sources(path)
    assert expected in str(raised.value)


def test_a_key_that_is_no_field_fails(tmp_path: Path) -> None:
    message = _broken(
        tmp_path,
        """
        datasets:
          tickets:
            key: [ticket]
            fields:
              ticket_id: {type: text}
        """,
    )
    assert "sources.yaml:4: datasets.tickets.key.0: 'ticket' is not a field" in message


def test_sql_naming_no_column_fails_at_load(tmp_path: Path) -> None:
    message = _broken(
        tmp_path,
        """
        datasets:
          tickets:
            key: [ticket_id]
            fields:
              ticket_id: {type: text}
              priority: {type: integer}
            metrics:
              columns:
                urgent: "sum(priorty)"
        """,
    )
    assert message.startswith("sources.yaml:10: datasets.tickets.metrics.columns.urgent: ")
    assert '"priorty" not found' in message


def test_a_mapping_to_no_field_and_an_unknown_dataset_fail(tmp_path: Path) -> None:
    declaration = """
    datasets:
      tickets:
        key: [ticket_id]
        fields:
          ticket_id: {type: text}
    """
    message = _broken(tmp_path, declaration, SOURCES + "    mapping: {ticket: id}\n")
    assert "source 'helpdesk_export', field 'mapping.ticket'" in message
    assert "not a field of the tickets dataset" in message
    message = _broken(tmp_path, declaration, SOURCES.replace("dataset: tickets", "dataset: orders"))
    assert "unknown dataset 'orders'; known: products, weather, tickets" in message


def test_a_name_that_exists_already_names_both_files(tmp_path: Path) -> None:
    message = _broken(
        tmp_path,
        """
        datasets:
          products:
            key: [id]
            fields:
              id: {type: text}
        """,
    )
    assert "sources.yaml:3: datasets.products: dataset 'products' exists already" in message
    assert "builtin/products.yaml" in message
