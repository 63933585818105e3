"""Transforms on small frames: the formulas of DESIGN.md, and inputs never mutated."""

from __future__ import annotations

import pandas as pd
import pytest

from ingest_assets.transforms import products, weather
from ingest_assets.transforms.datasets import DATASETS
from ingest_assets.transforms.steps import group_chunks, pipeline, recording, step

D1, D2 = pd.Timestamp("2024-06-01"), pd.Timestamp("2024-06-02")


def cleaned_products(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(
        rows,
        columns=[
            "partition_date",
            "category",
            "product_id",
            "price",
            "discount_pct",
            "rating",
            "stock",
        ],
    )
    return frame.assign(
        source="s", stock=frame["stock"].astype("Int64"), rating=frame["rating"].astype(float)
    )


@pytest.fixture
def catalogue() -> pd.DataFrame:
    return cleaned_products(
        [
            (D1, "phones", "1", 100.0, 10.0, 4.5, 5),
            (D1, "phones", "2", 200.0, 0.0, 3.0, 0),
            (D1, "phones", "3", 300.0, 12.5, None, 1),
            (D1, "lamps", "4", 20.0, 33.333, 2.99, 2),
            (D2, "phones", "1", 150.0, 0.0, 4.0, 3),
        ]
    )


def test_product_features(catalogue: pd.DataFrame) -> None:
    before = catalogue.copy(deep=True)
    features = products.build_features(catalogue).set_index(["partition_date", "product_id"])
    pd.testing.assert_frame_equal(catalogue, before)  # input untouched

    assert features.loc[(D1, "1"), "final_price"] == 90.0
    assert features.loc[(D1, "3"), "final_price"] == 262.5
    assert features.loc[(D1, "4"), "final_price"] == 13.33
    # min-max and population z-score within partition_date × category
    assert features.loc[(D1, "1"), "price_norm"] == 0.0
    assert features.loc[(D1, "2"), "price_norm"] == 0.5
    assert features.loc[(D1, "3"), "price_norm"] == 1.0
    std = pd.Series([100.0, 200.0, 300.0]).std(ddof=0)
    assert features.loc[(D1, "3"), "price_zscore"] == pytest.approx(100.0 / std)
    # single-member groups: max = min and std = 0 give 0.0
    assert (
        features.loc[(D1, "4"), "price_norm"] == 0.0
        and features.loc[(D1, "4"), "price_zscore"] == 0.0
    )
    assert (
        features.loc[(D2, "1"), "price_norm"] == 0.0
        and features.loc[(D2, "1"), "price_zscore"] == 0.0
    )
    assert features["rating_bucket"].tolist() == ["high", "medium", None, "low", "high"]
    assert features["in_stock"].tolist() == [True, False, True, True, True]


def test_rating_bucket_boundaries() -> None:
    ratings = pd.Series([0.0, 2.999, 3.0, 3.999, 4.0, 5.0, None], dtype=float)
    assert products.rating_bucket(ratings).tolist() == [
        "low",
        "low",
        "medium",
        "medium",
        "high",
        "high",
        None,
    ]


def test_product_metrics(catalogue: pd.DataFrame) -> None:
    metrics = products.build_metrics(products.build_features(catalogue)).set_index(
        ["partition_date", "category"]
    )
    phones = metrics.loc[(D1, "phones")]
    assert phones["product_count"] == 3
    assert (
        phones["price_min"],
        phones["price_max"],
        phones["price_mean"],
        phones["price_median"],
    ) == (100, 300, 200, 200)
    assert phones["final_price_mean"] == pytest.approx((90 + 200 + 262.5) / 3)
    assert phones["rating_mean"] == pytest.approx(3.75)  # null ratings are left out
    assert phones["stock_total"] == 6
    assert phones["share"] == pytest.approx(0.75)
    assert metrics.loc[(D1, "lamps"), "share"] == pytest.approx(0.25)
    assert metrics.loc[(D2, "phones"), "share"] == 1.0


def test_product_metrics_of_nothing_is_an_empty_frame() -> None:
    empty = products.build_features(cleaned_products([]))
    metrics = products.build_metrics(empty)
    assert metrics.empty and "share" in metrics.columns


def observations(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(
        rows, columns=["city", "observed_at", "temperature_c", "precipitation_mm", "wind_speed_kmh"]
    )
    return frame.assign(
        partition_date=pd.to_datetime(frame["observed_at"]).dt.normalize().dt.tz_localize(None),
        observed_at=pd.to_datetime(frame["observed_at"], utc=True),
        precipitation_mm=frame["precipitation_mm"].astype(float),
        wind_speed_kmh=frame["wind_speed_kmh"].astype(float),
    )


def test_weather_features_roll_within_city_and_day() -> None:
    frame = observations(
        [
            ("Oslo", "2024-06-01T02:00", 12.0, 0.0, 5.0),
            ("Oslo", "2024-06-01T00:00", 10.0, None, 3.0),
            ("Oslo", "2024-06-01T01:00", 11.0, 0.4, 4.0),
            ("Oslo", "2024-06-01T03:00", 16.0, 0.0, 4.0),
            ("Rome", "2024-06-01T00:00", 20.0, 1.0, 1.0),
        ]
    )
    features = weather.build_features(frame).set_index(["city", "observed_at"])
    oslo = features.loc["Oslo"]["temp_rolling_3h"].tolist()
    assert oslo == [10.0, 10.5, 11.0, 13.0]
    assert features.loc["Oslo"]["temp_norm"].tolist() == [0.0, 1 / 6, 2 / 6, 1.0]
    assert features.loc["Rome"]["temp_norm"].tolist() == [0.0]
    assert features.loc["Oslo"]["is_precipitating"].tolist() == [False, True, False, False]


def test_weather_metrics_sum_of_nothing_is_zero() -> None:
    frame = observations(
        [
            ("Oslo", "2024-06-01T00:00", 10.0, None, None),
            ("Oslo", "2024-06-01T01:00", 14.0, None, None),
            ("Rome", "2024-06-01T00:00", 20.0, 1.5, 7.0),
        ]
    )
    metrics = weather.build_metrics(weather.build_features(frame)).set_index("city")
    assert metrics.loc["Oslo", "hours_observed"] == 2
    assert metrics.loc["Oslo", "precipitation_total"] == 0.0
    assert pd.isna(metrics.loc["Oslo", "wind_speed_max"])
    assert (
        metrics.loc["Oslo", "temp_min"],
        metrics.loc["Oslo", "temp_max"],
        metrics.loc["Oslo", "temp_mean"],
    ) == (10, 14, 12)
    assert metrics.loc["Rome", "precipitation_total"] == 1.5


def test_steps_compose_and_record_their_timings() -> None:
    @step
    def double(df: pd.DataFrame) -> pd.DataFrame:
        return df.assign(x=df["x"] * 2)

    @step
    def drop_small(df: pd.DataFrame) -> pd.DataFrame:
        return df[df["x"] > 2]

    frame = pd.DataFrame({"x": [1, 2, 3]})
    with recording() as log:
        out = pipeline(double, drop_small)(frame)
    assert out["x"].tolist() == [4, 6]
    assert frame["x"].tolist() == [1, 2, 3]
    assert [(t.name, t.rows_in, t.rows_out) for t in log.timings] == [
        ("double", 3, 3),
        ("drop_small", 3, 2),
    ]
    assert set(log.as_metadata()) == {"double", "drop_small"}


def test_raw_field_columns_are_text_as_fetched() -> None:
    import datetime as dt

    from ingest_assets.transforms.raw import concat_raw, raw_frame

    at = pd.Timestamp("2024-06-01T01:00", tz="UTC")
    first = raw_frame([{"id": 1, "price": 9.5, "tags": ["a"]}], dt.date(2024, 6, 1), "r", at)
    second = raw_frame([{"id": 2, "price": "n/a", "Odd Name!": 1}], dt.date(2024, 6, 1), "r", at)
    frame = concat_raw([first, second])
    assert frame["price"].tolist() == ["9.5", "n/a"]
    assert frame["tags"].tolist() == ['["a"]', None]
    assert frame["odd_name"].tolist() == [None, "1"]
    assert frame["id"].tolist() == ["1", "2"]
    assert list(frame.columns[:1]) == ["partition_date"] and "_record" in frame.columns
    # The record as the source sent it, its fields in their own order.
    assert frame["_record"].tolist()[1] == '{"id":2,"price":"n/a","Odd Name!":1}'


def test_chunks_are_recut_so_that_no_group_spans_two() -> None:
    frame = pd.DataFrame({"day": [1, 1, 1, 1, 2, 2, 2], "city": list("aabbbbc"), "t": range(7)})
    pieces = [frame.iloc[:3], frame.iloc[3:4], frame.iloc[4:6], frame.iloc[6:]]
    chunks = list(group_chunks(pieces, ["day", "city"]))
    assert [c["t"].tolist() for c in chunks] == [[0, 1], [2, 3], [4, 5], [6]]
    assert pd.concat(chunks, ignore_index=True).equals(frame)
    # Features computed per chunk equal the features of the whole frame.
    weather = pd.DataFrame(
        {
            "partition_date": pd.Timestamp("2024-06-01"),
            "city": list("aaabbb"),
            "observed_at": pd.date_range("2024-06-01", periods=6, freq="h", tz="UTC"),
            "temperature_c": [1.0, 3.0, 2.0, 5.0, 5.0, 8.0],
            "precipitation_mm": [0.0, None, 1.0, 0.0, 0.0, 2.0],
        }
    )
    steps = DATASETS["weather"]
    whole = steps.features(weather).reset_index(drop=True)
    parts = group_chunks([weather.iloc[:2], weather.iloc[2:5], weather.iloc[5:]], steps.group_by)
    chunked = pd.concat([steps.features(c) for c in parts], ignore_index=True)
    pd.testing.assert_frame_equal(chunked, whole)
