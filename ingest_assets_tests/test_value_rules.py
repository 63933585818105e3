"""The value rules of DESIGN.md, through the real record split."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest

from ingest_assets.datasets import shipped
from ingest_assets.quality.validate import split_records, to_text, to_whole
from ingest_assets.transforms.raw import raw_frame

NOW = pd.Timestamp("2024-06-02T03:00", tz="UTC")
MAPPING = {"product_id": "id", "discount_pct": "discountPercentage"}


def product(**overrides: object) -> dict:
    record = {
        "id": 1,
        "title": "Lamp",
        "category": "Home",
        "brand": "Acme",
        "sku": "L-1",
        "price": 10,
        "discountPercentage": 5,
        "rating": 4.2,
        "stock": 3,
    }
    record.update(overrides)
    return record


def split(records: list[dict], dataset: str = "products", mapping: dict | None = None):
    raw = raw_frame(records, dt.date(2024, 6, 1), "run-1", NOW)
    result = split_records(
        raw,
        source="src",
        dataset=shipped()[dataset],
        mapping=MAPPING if mapping is None else mapping,
        run_id="run-1",
        quarantined_at=NOW,
    )
    assert len(result.valid) + len(result.quarantined) == len(records)
    return result


def reasons(result) -> list[list[tuple[str, str]]]:
    return [
        [(e["column"], e["check"]) for e in json.loads(text)]
        for text in result.quarantined["errors"]
    ]


def test_whole_numbers() -> None:
    assert to_whole(5) == 5 and to_whole(5.0) == 5 and to_whole("5.0") == 5 and to_whole(" 7 ") == 7
    for bad in (5.5, "5.5", "five", True, "99999999999999999999", 2**63):
        with pytest.raises(ValueError):
            to_whole(bad)


def test_text_is_trimmed_and_empty_is_null() -> None:
    assert to_text("  Lamp ") == "Lamp"
    assert to_text("   ") is None and to_text(None) is None
    assert to_text(42) == "42" and to_text(42.0) == "42"


def test_clean_record_types_and_mapping() -> None:
    result = split(
        [product(id=7, stock=3.0, title="  Lamp  ", category=" Home Decor ", brand="  ")]
    )
    row = result.valid.iloc[0]
    assert row["product_id"] == "7" and row["title"] == "Lamp" and row["category"] == "home decor"
    assert (
        row["brand"] is None and row["stock"] == 3 and str(result.valid["stock"].dtype) == "Int64"
    )
    assert row["discount_pct"] == 5.0 and row["source"] == "src"
    assert result.valid["_ingested_at"].dt.tz is not None


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"title": "   "}, [("title", "not_nullable")]),
        ({"category": None}, [("category", "not_nullable")]),
        ({"price": 0}, [("price", "greater_than(0)")]),
        ({"price": "ten"}, [("price", "dtype")]),
        ({"discountPercentage": 100.5}, [("discount_pct", "less_than_or_equal_to(100)")]),
        ({"rating": 5.1}, [("rating", "less_than_or_equal_to(5)")]),
        ({"stock": 5.5}, [("stock", "dtype")]),
        ({"stock": -1}, [("stock", "greater_than_or_equal_to(0)")]),
        ({"stock": 2**63}, [("stock", "dtype")]),
        ({"price": -1, "stock": "x"}, [("stock", "dtype"), ("price", "greater_than(0)")]),
    ],
)
def test_invalid_values_are_quarantined_with_reasons(overrides: dict, expected: list) -> None:
    result = split([product(**overrides)])
    assert result.valid.empty
    assert reasons(result) == [expected]
    quarantined = result.quarantined.iloc[0]
    assert json.loads(quarantined["record"])["id"] == 1
    assert quarantined["source"] == "src" and quarantined["dataset"] == "products"
    assert quarantined["partition_date"] == pd.Timestamp("2024-06-01")


def test_optional_fields_may_be_missing() -> None:
    result = split(
        [
            {
                "id": 1,
                "title": "Lamp",
                "category": "home",
                "price": 1,
                "discountPercentage": 0,
                "stock": 0,
            }
        ]
    )
    row = result.valid.iloc[0]
    assert row["brand"] is None and row["sku"] is None and pd.isna(row["rating"])


def test_a_repeated_key_is_a_duplicate_of_the_first_valid_record() -> None:
    result = split(
        [product(id=1, price=-1), product(id=1), product(id=1, title="again"), product(id=2)]
    )
    assert result.valid["product_id"].tolist() == ["1", "2"]
    assert result.valid["title"].tolist() == ["Lamp", "Lamp"]
    assert reasons(result) == [[("price", "greater_than(0)")], [("source,product_id", "duplicate")]]


def test_parse_errors_are_quarantined() -> None:
    result = split([{"_parse_error": "line 3: more fields than the header names", **product()}])
    assert reasons(result) == [[(None, "parse")]]


def test_weather_rules() -> None:
    mapping = {"observed_at": "time", "temperature_c": "temperature_2m"}
    base = {
        "city": " Oslo ",
        "latitude": 59.9,
        "longitude": 10.7,
        "time": "2024-06-01T05:00",
        "temperature_2m": 12.5,
    }
    result = split(
        [
            base,
            {**base, "temperature_2m": 61},
            {**base, "time": "2024-06-02T00:00"},
            {**base, "temperature_2m": None},
            {**base, "temperature_2m": 3.0},
            {**base, "time": "yesterday"},
        ],
        dataset="weather",
        mapping=mapping,
    )
    row = result.valid.iloc[0]
    assert row["city"] == "Oslo" and row["observed_at"] == pd.Timestamp(
        "2024-06-01T05:00", tz="UTC"
    )
    assert reasons(result) == [
        [("temperature_c", "less_than_or_equal_to(60)")],
        [(None, "observed_in_partition")],
        [("temperature_c", "not_nullable")],
        [("city,observed_at", "duplicate")],
        [("observed_at", "dtype")],
    ]


def test_the_earlier_duplicate_is_the_first_fetched_whatever_the_read_order() -> None:
    from ingest_assets.transforms.raw import with_sequence

    raw = with_sequence(
        raw_frame([product(title="first"), product(title="second")], dt.date(2024, 6, 1), "r", NOW)
    )
    as_read = raw.iloc[::-1].reset_index(drop=True)  # a warehouse may return rows in any order
    result = split_records(
        as_read,
        source="src",
        dataset=shipped()["products"],
        mapping=MAPPING,
        run_id="r",
        quarantined_at=NOW,
    )
    assert result.valid["title"].tolist() == ["first"]
    assert json.loads(result.quarantined["record"][0])["title"] == "second"
