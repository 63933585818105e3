"""One source of truth: the record split, the checks and drift all read the dataset's compiled
Pandera schemas."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
import pandas as pd
import pandera.pandas as pa
import pyarrow

from ingest_assets.assets.schema_checks import schema_rules, validate_frame
from ingest_assets.config import SourceConfig
from ingest_assets.datasets import shipped as shipped_datasets
from ingest_assets.quality import schemas
from ingest_assets.quality.chunked import SchemaRun
from ingest_assets.quality.drift import detect_drift, source_drift
from ingest_assets.quality.history import (
    QUARANTINED,
    REPLAYED,
    SUPERSEDED,
    empty_history,
    replayed_in,
    update_history,
)
from ingest_assets.quality.validate import split_records
from ingest_assets.transforms.raw import raw_frame
from ingest_assets_tests.quality_fixtures import declaration

NOW = pd.Timestamp("2024-06-02T03:00", tz="UTC")
MAPPING = {"product_id": "id", "discount_pct": "discountPercentage"}


def product(**overrides: object) -> dict:
    record = {
        "id": 1,
        "title": "Lamp",
        "category": "home",
        "price": 10,
        "discountPercentage": 5,
        "rating": 4.2,
        "stock": 3,
    }
    record.update(overrides)
    return record


def cleaned_products() -> pa.DataFrameSchema:
    return shipped_datasets()["products"].cleaned_schema


def split(records_by_day: dict[str, list[dict]], dataset=None):
    raw = pd.concat(
        [raw_frame(rs, dt.date.fromisoformat(d), "run-1", NOW) for d, rs in records_by_day.items()],
        ignore_index=True,
    )
    return split_records(
        raw,
        source="shop",
        dataset=dataset or shipped_datasets()["products"],
        mapping=MAPPING,
        run_id="run-1",
        quarantined_at=NOW,
    )


def test_the_split_follows_the_declaration() -> None:
    records = {"2024-06-01": [product(id=1, rating=7.5), product(id=2)]}
    strict = split(records)
    assert len(strict.valid) == 1
    assert json.loads(strict.quarantined["errors"][0]) == [
        {
            "column": "rating",
            "check": "less_than_or_equal_to(5)",
            "message": "less_than_or_equal_to(5) failed for 7.5",
        }
    ]
    # Change the declaration, nothing else: the split follows.
    generous = split(records, declaration("products", fields={"rating": {"le": 10}}))
    assert len(generous.valid) == 2 and generous.quarantined.empty


def test_duplicate_keys_come_from_the_declared_key() -> None:
    catalog = shipped_datasets()
    for compiled in catalog:
        assert compiled.cleaned_schema.unique == ["partition_date", *compiled.key]
        assert compiled.features_schema.unique == ["partition_date", *compiled.key]
    assert {c.name: c.key for c in catalog} == {
        "products": ["source", "product_id"],
        "weather": ["city", "observed_at"],
    }


def test_a_backfill_range_repeats_keys_only_within_a_day() -> None:
    result = split(
        {
            "2024-06-01": [product(id=1), product(id=2), product(id=1, price=11)],
            "2024-06-02": [product(id=1), product(id=2)],
        }
    )
    assert len(result.valid) == 4
    assert [json.loads(e)[0]["check"] for e in result.quarantined["errors"]] == ["duplicate"]
    assert result.quarantined["partition_date"].tolist() == [pd.Timestamp("2024-06-01")]


def cleaned_frame(**overrides: object) -> pd.DataFrame:
    row = {
        "partition_date": pd.Timestamp("2024-06-01"),
        "source": "shop",
        "product_id": "1",
        "sku": None,
        "title": "Lamp",
        "category": "home",
        "brand": None,
        "price": 10.0,
        "discount_pct": 5.0,
        "rating": 4.0,
        "stock": 3,
        "_run_id": "r",
        "_ingested_at": NOW,
    }
    frame = pd.DataFrame([row, {**row, "product_id": "2", **overrides}])
    frame["stock"] = frame["stock"].astype("Int64")
    return frame


def test_a_schema_check_reports_counts_per_check_and_the_failing_rows() -> None:
    assert validate_frame(cleaned_products(), cleaned_frame()).passed
    result = validate_frame(cleaned_products(), cleaned_frame(price=-1.0, category="Home"))
    assert not result.passed and result.severity.value == "ERROR"
    metadata = {k: getattr(v, "value", v) for k, v in result.metadata.items()}
    assert metadata["failures_by_check"] == {"price: greater_than(0)": 1, "category: lower_case": 1}
    assert metadata["failing_rows"] == 1 and metadata["rows_checked"] == 2
    # The failing rows show as a table in the UI, one row per failure, with the row's key.
    sample = result.metadata["sample"]
    assert isinstance(sample, dg.TableMetadataValue)
    assert [c.name for c in sample.schema.columns] == ["column", "check", "value", "row"]
    rows = [record.data for record in sample.records]
    assert {"column": "price", "check": "greater_than(0)", "value": "-1.0"}.items() <= next(
        r for r in rows if r["column"] == "price"
    ).items()
    assert all(r["row"].endswith("product_id=2") for r in rows)


def test_a_model_run_in_chunks_gives_the_verdict_of_one_frame() -> None:
    frame = pd.concat(
        [cleaned_frame(price=-1.0), cleaned_frame(category="Home").assign(product_id=["3", "4"])],
        ignore_index=True,
    )
    whole = SchemaRun(cleaned_products()).validate_all([frame])
    chunked = SchemaRun(cleaned_products()).validate_all([frame.iloc[:2], frame.iloc[2:]])
    assert (
        whole.by_check
        == chunked.by_check
        == {
            "price: greater_than(0)": 1,
            "category: lower_case": 1,
        }
    )
    assert (chunked.rows, chunked.failing_rows) == (4, 2)
    assert [row for *_, row in chunked.sample] == [
        "partition_date=2024-06-01 00:00:00, source=shop, product_id=2",
        "partition_date=2024-06-01 00:00:00, source=shop, product_id=4",
    ]


def test_a_key_repeated_in_a_later_chunk_breaks_the_model_unique_key() -> None:
    first, again = cleaned_frame(), cleaned_frame().assign(title=["Desk", "Sofa"])
    run = SchemaRun(cleaned_products()).validate_all([first, again.iloc[1:]])
    assert run.by_check == {"(frame): multiple_fields_uniqueness": 1}
    assert run.failing_rows == 1 and run.sample[0][-1].endswith("product_id=2")
    # A new key in a later chunk, and a repeat within one chunk (Pandera's own check).
    run = SchemaRun(cleaned_products()).validate_all(
        [first.iloc[:1], pd.concat([first.iloc[1:], again.iloc[1:]], ignore_index=True)]
    )
    assert run.by_check == {"(frame): multiple_fields_uniqueness": 2}


def test_text_columns_get_the_verdict_of_object_columns() -> None:
    """Arrow- or pandas-string columns skip Pandera's per-value str test (they hold only text);
    the verdict is the same as for the same values as Python objects."""
    frame = pd.concat(
        [cleaned_frame(category="Home"), cleaned_frame(brand=None).assign(product_id=["3", "4"])],
        ignore_index=True,
    )
    text = [c for c in frame.columns if frame[c].dtype == object]
    verdicts = []
    for dtype in (None, pd.ArrowDtype(pyarrow.string()), pd.StringDtype()):
        typed = frame if dtype is None else frame.astype(dict.fromkeys(text, dtype))
        run = SchemaRun(cleaned_products()).validate_all([typed.iloc[:2], typed.iloc[2:]])
        verdicts.append((run.by_check, run.rows, run.failing_rows))
    assert verdicts[0] == verdicts[1] == verdicts[2] == ({"category: lower_case": 1}, 4, 1)
    # A value that is not text still fails the type test of an object column.
    mixed = frame.assign(title=frame["title"].astype(object))
    mixed.loc[3, "title"] = 7
    run = SchemaRun(cleaned_products()).validate_all([mixed])
    assert "title: dtype('str')" in run.by_check


def test_the_rules_are_listed_from_the_schema() -> None:
    rules = schema_rules(cleaned_products())
    assert rules["price"].startswith("float64, required") and "greater_than(0)" in rules["price"]
    assert rules["(unique)"] == "partition_date, source, product_id"


PRODUCTS = shipped_datasets()["products"]
PARTNER = SourceConfig(
    name="partner",
    connector="csv",
    dataset="products",
    mapping={"product_id": "sku", "title": "name", "price": "list_price"},
    fields={
        "sku": "string",
        "name": "string",
        "category": "string",
        "list_price": "number",
        "stock": "integer",
    },
)


def test_drift_new_missing_and_retyped_fields() -> None:
    records = [
        {"sku": "A", "name": "Lamp", "list_price": "cheap", "stock": "3.0", "color": "red"},
        {"sku": "B", "name": "Desk", "list_price": "n/a", "stock": "4", "_parse_error": "x"},
        {"sku": "C", "name": "Sofa", "list_price": " 12.50 ", "stock": ""},
    ]
    report = source_drift(PARTNER, PRODUCTS, records)
    assert report.new_fields == ["color"]  # "_parse_error" is the connector's, not drift
    assert report.missing_fields == ["category"] and report.missing_required == ["category"]
    assert list(report.type_changes) == ["list_price"]
    assert report.type_changes["list_price"]["nonconforming"] == 2
    assert "stock" not in report.type_changes  # "3.0" and "4" are whole numbers, "" is missing
    assert report.drifted and "new: color" in report.describe()


def test_no_drift_when_records_match_and_text_parses_as_declared() -> None:
    records = [
        {"sku": "A", "name": "Lamp", "category": "home", "list_price": "9.99", "stock": "3"},
        {"sku": "B", "name": "Desk", "category": "home", "list_price": "5", "stock": "abc"},
        {"sku": "C", "name": "Sofa", "category": "home", "list_price": "7.5", "stock": "1"},
    ]
    report = source_drift(PARTNER, PRODUCTS, records)
    assert not report.drifted, report.describe()


def test_without_a_declaration_only_the_mapped_fields_are_expected() -> None:
    source = PARTNER.model_copy(update={"fields": None})
    report = source_drift(
        source, PRODUCTS, [{"sku": "A", "name": "Lamp", "list_price": 1, "extra": 1}]
    )
    assert report.new_fields == [] and "category" in report.missing_fields
    assert detect_drift([], {"a": "string"}, True).drifted is False


T = pd.Timestamp("2024-06-01")
T1 = pd.Timestamp("2024-06-02T01:00", tz="UTC")
T2 = pd.Timestamp("2024-06-03T01:00", tz="UTC")


def quarantine(records: list[str], run_id: str, at: pd.Timestamp) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "partition_date": T,
            "source": "s",
            "dataset": "products",
            "record": records,
            "errors": "[]",
            "run_id": run_id,
            "quarantined_at": at,
        }
    )


def raw_records(records: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"partition_date": T, "source": "s", "record": records})


def test_history_marks_replayed_records_once_and_is_idempotent() -> None:
    raw = raw_records(["a", "b", "b", "c"])
    first = update_history(
        empty_history(), quarantine(["a", "b", "b"], "r1", T1), raw, run_id="r1", at=T1
    )
    assert first["status"].tolist() == [QUARANTINED] * 3
    # Today's rules accept one "b" (the other is still a duplicate): it is replayed.
    second = update_history(first, quarantine(["a", "b"], "r2", T2), raw, run_id="r2", at=T2)
    assert sorted(second["status"]) == [QUARANTINED, QUARANTINED, REPLAYED]
    moved = replayed_in(second, "r2")
    assert moved["record"].tolist() == ["b"] and (moved["replayed_at"] == T2).all()
    assert (moved["quarantined_run_id"] == "r1").all()
    # The same derivation again changes nothing, whichever run does it.
    again = update_history(second, quarantine(["a", "b"], "r3", T2), raw, run_id="r3", at=T2)
    pd.testing.assert_frame_equal(again, second)
    assert replayed_in(again, "r3").empty


def test_history_tells_a_record_gone_from_the_source_from_a_replayed_one() -> None:
    first = update_history(
        empty_history(), quarantine(["a"], "r1", T1), raw_records(["a", "c"]), run_id="r1", at=T1
    )
    fetched_again = raw_records(["a-fixed", "c"])
    second = update_history(first, quarantine([], "r2", T2), fetched_again, run_id="r2", at=T2)
    assert second["status"].tolist() == [SUPERSEDED]
    assert schemas.QuarantineHistory.validate(second) is not None
