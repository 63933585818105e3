"""Faithful fields: any field name and any value, kept exactly, alike on DuckDB and PostgreSQL.

Field names are data: each gets a raw column of its own (``column_name``), and the split reads
a field by its exact source name. Values keep every digit: integers past 53 and 64 bits, SQL
``NUMERIC``/``DECIMAL``. The end-to-end properties run generated sources (a JSON-lines landing
file and the sandbox's HTTP API) through the whole pipeline into both warehouses, twice, with a
fixed example budget so the suite stays quick.
"""

from __future__ import annotations

import decimal
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pandas as pd
import psycopg
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ingest_assets import jsontext
from ingest_assets.connectors.sql import _plain
from ingest_assets.records.encode import (
    MAX_COLUMN_BYTES,
    RESERVED_COLUMNS,
    RawEncoder,
    column_name,
    is_own_column,
)
from ingest_assets.records.split import coerce_whole
from ingest_assets.sandbox import Sandbox
from ingest_assets.warehouse.common import WarehouseError
from ingest_assets.warehouse.postgres_io import check_identifier
from ingest_assets_tests.pg import conninfo, require_postgres, temp_database

DAY = "2024-06-01"
QUIET: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
RESERVED_WORDS = sorted(RESERVED_COLUMNS - {"_parse_error"}) + ["select", "order", "user"]
# A name orjson, DuckDB or PostgreSQL might treat specially; "_parse_error" is the connectors'
# own note (a record carrying it is a parse-error record), not a field a source can send.
NAMES = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=100),
    st.sampled_from(
        [*RESERVED_WORDS, "title", "Title", "TITLE", "名前", "Prénom", "a.b", "x" * 70]
    ),
).filter(lambda name: name != "_parse_error")
# Values: text of any script with NUL and blanks, empty text, null, big integers, decimals.
TEXT = st.text(
    st.characters(
        blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), whitelist_characters=" \x00"
    ),
    max_size=20,
)
BIG = st.integers(min_value=-(2**80), max_value=2**80)
DECIMAL_TEXT = st.decimals(
    min_value=-(10**20), max_value=10**20, places=6, allow_nan=False, allow_infinity=False
).map(lambda d: format(d, "f"))
VALUES = st.one_of(TEXT, st.just(""), st.none(), BIG, DECIMAL_TEXT)


# -- the derivation of column names -------------------------------------------------------------


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(NAMES, min_size=1, max_size=12, unique=True))
def test_every_name_gets_a_column_of_its_own(names: list[str]) -> None:
    names = list(
        dict.fromkeys([*names, *(n.upper() for n in names), *(n.swapcase() for n in names)])
    )
    columns = [column_name(n) for n in names]
    # Unique even where a warehouse ignores case (DuckDB), and what PostgreSQL keeps whole.
    assert len({c.lower() for c in columns}) == len(names)
    for name, column in zip(names, columns, strict=True):
        assert len(column.encode("utf-8")) <= MAX_COLUMN_BYTES
        assert column.isascii() and column == column.lower()
        assert column not in RESERVED_COLUMNS
        assert (column == name) == is_own_column(name)
        assert column_name(name) == column  # stateless: the same on every run


def test_a_lower_snake_name_is_its_own_column() -> None:
    for name in ("title", "price", "partner_sku", "_raw", "temperature_2m"):
        assert column_name(name) == name
    for name in ("Title", "oid", "xmin", "ctid", "_seq", "partition_date", "rowid", "x" * 64):
        assert column_name(name) != name


def test_an_encoder_maps_fields_alike_whatever_the_order_it_meets_them() -> None:
    first, second = RawEncoder(), RawEncoder()
    first.encode([{"Title": "A", "title": "B"}])
    second.encode([{"title": "B"}, {"Title": "A"}])
    assert first.columns == second.columns
    assert first.columns["title"] == "title"
    batch = first.encode([{"title": "b", "Title": "a"}]).to_pydict()
    assert batch["title"] == ["b"] and batch[first.columns["Title"]] == ["a"]


def test_postgres_refuses_a_name_it_would_truncate() -> None:
    from ingest_assets.warehouse.common import TableRef

    check_identifier(TableRef("raw", "t"), "x" * 63)
    with pytest.raises(WarehouseError, match="63-byte"):
        check_identifier(TableRef("raw", "t"), "é" * 32)


# -- exact values ------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.one_of(BIG, st.integers(), st.floats(allow_nan=False, allow_infinity=False))))
def test_json_numbers_parse_as_the_standard_library_parses_them(values: list[Any]) -> None:
    text = json.dumps(values)
    assert jsontext.loads(text) == json.loads(text)
    assert [type(v) for v in jsontext.loads(text)] == [type(v) for v in json.loads(text)]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(BIG, min_size=1, max_size=20))
def test_whole_numbers_are_read_exactly_or_refused(values: list[int]) -> None:
    text = pd.Series([str(v) for v in values], dtype=object)
    read, bad, message = coerce_whole(text)
    for value, got, refused in zip(values, read, bad, strict=True):
        if -(2**63) <= value < 2**63:
            assert not refused and got == value
        else:
            assert refused and "64-bit" in message(str(value))


def test_sql_decimals_keep_every_digit() -> None:
    assert _plain(decimal.Decimal("12345678901234567890")) == 12345678901234567890
    assert _plain(decimal.Decimal("12.50")) == "12.50"
    assert _plain(decimal.Decimal("1E-7")) == "0.0000001"
    batch = RawEncoder().encode([{"n": decimal.Decimal("0.10"), "b": 2**70}]).to_pydict()
    assert batch["n"] == ["0.10"] and batch["b"] == [str(2**70)]
    assert json.loads(batch["_record"][0]) == {"n": "0.10", "b": 2**70}


# -- end to end: generated sources through the pipeline into both warehouses --------------------


@pytest.fixture(scope="module", name="sandbox")
def sandbox_fixture() -> Iterator[Sandbox]:
    with Sandbox(port=0) as server:
        yield server


def _sources_file(names: list[str], base_url: str) -> dict[str, Any]:
    """A dataset reading each generated name by its exact source name, from a file and an API."""
    mapping = {"rid": "id", "big": "Big", "amount": "amount"}
    mapping.update({f"n{i}": name for i, name in enumerate(names)})
    fields: dict[str, Any] = {
        "rid": {"type": "text"},
        "big": {"type": "integer", "nullable": True},
        "amount": {"type": "decimal", "scale": 6, "nullable": True},
    }
    fields.update({f"n{i}": {"type": "text", "nullable": True} for i in range(len(names))})
    return {
        "sources": {
            "feed": {
                "connector": "jsonl",
                "dataset": "faithful",
                "path": "{landing_dir}/feed/{date}.jsonl",
                "mapping": mapping,
            },
            "api": {
                "connector": "rest",
                "dataset": "faithful",
                "base_url": base_url,
                "path": "/products",
                "record_path": "products",
                "pagination": {
                    "kind": "limit_offset",
                    "limit_param": "limit",
                    "offset_param": "skip",
                    "page_size": 2,
                    "total_path": "total",
                },
                "mapping": mapping,
            },
        },
        "datasets": {"faithful": {"key": ["rid"], "fields": fields}},
    }


def _text(value: Any) -> str | None:
    """A value as the raw table holds it: text as sent, anything else its JSON."""
    return value if value is None or isinstance(value, str) else json.dumps(value)


def _holds_nul(record: dict[str, Any]) -> bool:
    return any(isinstance(v, str) and "\x00" in v for v in record.values())


def _expected_cleaned(names: list[str], records: list[dict[str, Any]]) -> list[tuple]:
    rows = []
    for record in records:
        big = record.get("Big")
        if _holds_nul(record) or (big is not None and not -(2**63) <= big < 2**63):
            continue
        amount = record.get("amount")
        texts = [(_text(record.get(n)) or "").strip() or None for n in names]
        exact = (
            None
            if amount is None
            else decimal.Decimal(str(amount)).quantize(decimal.Decimal("0.000001"))
        )
        rows.append((str(record["id"]), big, exact, *texts))
    return sorted(rows, key=repr)


@contextmanager
def _pipeline_env(
    monkeypatch: pytest.MonkeyPatch, spec: dict[str, Any], feed: list[dict[str, Any]]
) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp, monkeypatch.context() as patch:
        home = Path(tmp) / "home"
        landing = Path(tmp) / "landing" / "feed"
        landing.mkdir(parents=True)
        home.mkdir()
        (landing / f"{DAY}.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in feed), "utf-8"
        )
        (home / "sources.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True), "utf-8")
        patch.setenv("INGEST_HOME", str(home))
        patch.setenv("INGEST_LANDING_DIR", str(landing.parent))
        patch.setenv("INGEST_SOURCES_FILE", str(home / "sources.yaml"))
        for name in ("INGEST_WAREHOUSE_URL", "INGEST_EXECUTOR", "INGEST_FETCH"):
            patch.delenv(name, raising=False)
        yield home


def _run() -> None:
    from ingest_assets.definitions import build_definitions

    defs = build_definitions()
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("ingest_pipeline").execute_in_process(
            partition_key=DAY, instance=instance, run_config=QUIET, raise_on_error=False
        )
    failed = [e.message for e in result.all_events if e.is_step_failure]
    assert result.success, failed


def _tables(read: Any, names: list[str]) -> dict[str, Any]:
    """What the warehouse holds, without run ids and times: each source's raw field columns
    by ``_seq`` (null where the source never sent the field), and the cleaned rows."""
    fields = ["Big", "amount", "id", *names]
    raw = {}
    for source in ("feed", "api"):
        stored = {
            name
            for (name,) in read(
                "SELECT column_name FROM information_schema.columns "
                f"WHERE table_schema = 'raw' AND table_name = '{source}'"
            )
        }
        columns = [column_name(f) for f in fields]
        selected = ", ".join(_quoted(c) if c in stored else "NULL" for c in columns)
        raw[source] = [tuple(row) for row in read(f"SELECT _seq, {selected} FROM raw.{source}")]
        raw[source].sort()
    n = ", ".join(f"n{i}" for i in range(len(names)))
    cleaned = read(f"SELECT rid, big, amount{', ' if n else ''}{n} FROM cleaned.faithful")
    quarantined = read("SELECT source, errors FROM quarantine.records")
    reasons = sorted(
        (source, sorted({e["check"] for e in (json.loads(x) if isinstance(x, str) else x)}))
        for source, x in quarantined
    )
    return {
        "raw": raw,
        "cleaned": sorted((tuple(r) for r in cleaned), key=repr),
        "quarantined": reasons,
    }


def _execute(url: str, sql: str, params: list[Any] | None = None) -> None:
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        conn.execute(sql, params)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _duckdb_reader(home: Path) -> Any:
    def read(sql: str) -> list[tuple]:
        with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
            return con.execute(sql).fetchall()

    return read


def _postgres_reader(url: str) -> Any:
    def read(sql: str) -> list[tuple]:
        with psycopg.connect(conninfo(url), autocommit=True) as conn:
            return conn.execute(sql).fetchall()

    return read


def _records(draw: st.DrawFn, names: list[str], ids: list[int]) -> list[dict[str, Any]]:
    records = []
    for record_id in ids:
        record: dict[str, Any] = {"id": record_id}
        record["Big"] = draw(st.one_of(st.none(), BIG))
        record["amount"] = draw(st.one_of(st.none(), DECIMAL_TEXT, st.integers(-(10**15), 10**15)))
        for name in names:
            record[name] = draw(VALUES)
        records.append(record)
    return records


@st.composite
def sources(draw: st.DrawFn) -> tuple[list[str], list[dict], list[dict]]:
    names = draw(st.lists(NAMES, min_size=1, max_size=5, unique=True))
    # Names differing only in case (or in script) from one drawn above.
    names += [n.upper() for n in names if n.upper() != n][:2]
    names = [n for n in dict.fromkeys(names) if n not in ("id", "Big", "amount")]
    ids = draw(st.lists(BIG, min_size=2, max_size=8, unique=True))
    half = len(ids) // 2
    return names, _records(draw, names, ids[:half]), _records(draw, names, ids[half:])


def _expected_raw(names: list[str], records: list[dict[str, Any]]) -> list[tuple]:
    fields = ["Big", "amount", "id", *names]
    return [
        (seq, *(_text(record.get(f)) for f in fields))
        for seq, record in enumerate(records)
        if not _holds_nul(record)
    ]


def _without_parse_errors(rows: list[tuple], records: list[dict[str, Any]]) -> list[tuple]:
    return [row for row, record in zip(rows, records, strict=True) if not _holds_nul(record)]


# Everything at once, whatever the generator draws within its small budget: names differing
# only in case, reserved and system names, non-Latin and over-long names, a dot in a name;
# integers past 53 and 64 bits, decimals, NUL, empty and blank text.
HOSTILE_NAMES = ["title", "Title", "TITLE", "xmin", "_seq", "partition_date", "名前", "a.b"]
HOSTILE_NAMES += ["Ж" * 100, "x" * 63 + "y", "x" * 63 + "z"]
HOSTILE_FEED = [
    {"id": 2**64 + 1, "Big": 2**53 + 1, "amount": "12345678901234.123456", "title": " a "},
    {"id": 2**64 + 2, "Big": 2**63, "amount": 1, "Title": "b", "TITLE": "", "xmin": 7},
    {"id": 2**64 + 3, "Big": -(2**63), "名前": "名", "a.b": "\x00", "_seq": "s"},
    {"id": 2**64 + 4, "partition_date": "p", "Ж" * 100: "ж", "x" * 63 + "y": 1.5},
]
HOSTILE_API = [
    {"id": 2**80, "Big": 2**63 - 1, "x" * 63 + "z": "   ", "title": "t", "Title": "T"},
    {"id": -1, "Big": None, "amount": "-0.000001", "xmin": "", "a.b": "ab"},
]


@pytest.mark.postgres
@pytest.mark.slow
@example(generated=(HOSTILE_NAMES, HOSTILE_FEED, HOSTILE_API))
@settings(
    max_examples=2,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(generated=sources())
def test_generated_fields_land_exactly_and_alike_on_both_warehouses(
    generated: tuple[list[str], list[dict], list[dict]],
    sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require_postgres()
    names, feed, api = generated
    sandbox.products = api
    spec = _sources_file(names, sandbox.url)
    expected = _expected_cleaned(names, feed + api)
    held = {}
    with _pipeline_env(monkeypatch, spec, feed) as home:
        for _ in range(2):  # a second run of the same day changes nothing
            _run()
            held.setdefault("duckdb", []).append(_tables(_duckdb_reader(home), names))
        with temp_database() as url:
            monkeypatch.setenv("INGEST_WAREHOUSE_URL", url)
            for _ in range(2):
                _run()
                held.setdefault("postgres", []).append(_tables(_postgres_reader(url), names))
    for warehouse, (first, second) in held.items():
        assert first == second, warehouse
        for source, records in (("feed", feed), ("api", api)):
            # Every value in its own column, as sent (parse-error records hold visible text).
            rows = _without_parse_errors(first["raw"][source], records)
            assert rows == _expected_raw(names, records), (warehouse, source)
        assert [_normal(r) for r in first["cleaned"]] == expected, warehouse
    assert held["duckdb"][0] == held["postgres"][0]
    assert len(held["duckdb"][0]["quarantined"]) == len(feed) + len(api) - len(expected)


def _normal(row: tuple) -> tuple:
    rid, big, amount, *texts = row
    return (rid, None if big is None else int(big), amount, *texts)


# -- an SQL source's NUMERIC and DECIMAL columns ------------------------------------------------


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.parametrize("warehouse", ["duckdb", "postgres"])
def test_sql_numeric_ids_and_decimals_stay_exact(
    warehouse: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_postgres()
    ids = [12345678901234567890, 12345678901234567891, 99999999999999999999, 1]
    wholes = [9007199254740993, 9223372036854775807, -(2**63), 2**64]
    amounts = ["0.000001", "12345678901234.567890", "-1.500000", "2.000000"]
    with temp_database("faithful_src") as source_url, temp_database() as target_url:
        _execute(
            source_url,
            "CREATE TABLE items "
            "(id numeric(20,0), n numeric(25,0), amount decimal(30,6), day date)",
        )
        for row in zip(ids, wholes, amounts, strict=True):
            _execute(source_url, "INSERT INTO items VALUES (%s, %s, %s, %s)", [*row, DAY])
        spec = {
            "sources": {
                "shop": {
                    "connector": "sql",
                    "dataset": "items",
                    "url": source_url,
                    "table": "items",
                    "partition_column": "day",
                    "mapping": {"item_id": "id", "whole": "n"},
                }
            },
            "datasets": {
                "items": {
                    "key": ["item_id"],
                    "fields": {
                        "item_id": {"type": "text"},
                        "whole": {"type": "integer"},
                        "amount": {"type": "decimal", "scale": 6},
                    },
                }
            },
        }
        with _pipeline_env(monkeypatch, spec, []) as home:
            if warehouse == "postgres":
                monkeypatch.setenv("INGEST_WAREHOUSE_URL", target_url)
                read = _postgres_reader(target_url)
            else:
                read = _duckdb_reader(home)
            _run()
            raw = read("SELECT id, n, amount FROM raw.shop ORDER BY id")
            cleaned = read("SELECT item_id, whole, amount FROM cleaned.items ORDER BY whole")
            quarantined = read("SELECT errors FROM quarantine.records")
    assert sorted(raw) == sorted(zip(map(str, ids), map(str, wholes), amounts, strict=True))
    # Distinct 20-digit ids stay distinct keys, integers within 64 bits keep every digit.
    assert [(r[0], r[1], decimal.Decimal(r[2])) for r in cleaned] == sorted(
        [(str(i), w, decimal.Decimal(a)) for i, w, a in zip(ids, wholes, amounts, strict=True)][:3],
        key=lambda r: r[1],
    )
    # Past 64 bits an integer field is refused (dtype), never rounded into range.
    [(errors,)] = quarantined
    errors = json.loads(errors) if isinstance(errors, str) else errors
    assert [(e["column"], e["check"]) for e in errors] == [("whole", "dtype")]
