"""The shipped datasets' features and metrics on small frames: the compiled SQL of
``datasets/builtin/*.yaml`` against an independent pandas reading of DESIGN.md ("Tables"),
inputs never mutated; and the step helpers (timings, chunks of whole groups, raw frames)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ingest_assets.datasets import CompiledDataset, shipped
from ingest_assets.transforms.steps import group_chunks, pipeline, recording, step

D1, D2 = pd.Timestamp("2024-06-01"), pd.Timestamp("2024-06-02")
NOW = pd.Timestamp("2024-06-02T03:00", tz="UTC")
PRODUCT_FEATURES = ["final_price", "price_norm", "price_zscore", "rating_bucket", "in_stock"]
PRODUCT_METRICS = [
    "product_count", "price_min", "price_max", "price_mean", "price_median",
    "final_price_mean", "rating_mean", "stock_total", "share",
]  # fmt: skip
WEATHER_FEATURES = ["temp_rolling_3h", "temp_norm", "is_precipitating"]
WEATHER_METRICS = [
    "hours_observed", "temp_min", "temp_max", "temp_mean", "precipitation_total", "wind_speed_max",
]  # fmt: skip


@pytest.fixture(scope="module")
def products() -> CompiledDataset:
    return shipped()["products"]


@pytest.fixture(scope="module")
def weather() -> CompiledDataset:
    return shipped()["weather"]


# --- independent pandas readings of DESIGN.md "Tables" -------------------------------------


def min_max(values: pd.Series, groups: list[pd.Series]) -> pd.Series:
    """(v - min) / (max - min) within the groups; 0.0 where max = min."""
    grouped = values.groupby(groups)
    low, high = grouped.transform("min"), grouped.transform("max")
    span = high - low
    return ((values - low) / span.where(span != 0)).fillna(0.0)


def expected_product_features(cleaned: pd.DataFrame) -> pd.DataFrame:
    groups = [cleaned["partition_date"], cleaned["category"]]
    price = cleaned["price"]
    grouped = price.groupby(groups)
    mean, std = grouped.transform("mean"), grouped.transform(lambda s: s.std(ddof=0))

    def bucket(rating: float) -> str | None:
        if pd.isna(rating):
            return None
        return "low" if rating < 3 else "medium" if rating < 4 else "high"

    return pd.DataFrame(
        {
            "final_price": (price * (1 - cleaned["discount_pct"] / 100)).round(2),
            "price_norm": min_max(price, groups),
            "price_zscore": ((price - mean) / std.where(std != 0)).fillna(0.0),
            "rating_bucket": cleaned["rating"].map(bucket).astype(object),
            "in_stock": (cleaned["stock"] > 0).astype(bool),
        },
        index=cleaned.index,
    )


def expected_product_metrics(features: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (day, category), group in features.groupby(["partition_date", "category"], sort=True):
        of_day = (features["partition_date"] == day).sum()
        rows.append(
            {
                "partition_date": day,
                "category": category,
                "product_count": len(group),
                "price_min": group["price"].min(),
                "price_max": group["price"].max(),
                "price_mean": group["price"].mean(),
                "price_median": group["price"].median(),
                "final_price_mean": group["final_price"].mean(),
                "rating_mean": group["rating"].dropna().mean(),  # NaN where none is rated
                "stock_total": int(group["stock"].sum()),
                "share": len(group) / of_day,
            }
        )
    return pd.DataFrame(rows)


def expected_weather_features(cleaned: pd.DataFrame) -> pd.DataFrame:
    ordered = cleaned.sort_values("observed_at", kind="stable")
    by_city_day = [ordered["city"], ordered["observed_at"].dt.tz_convert("UTC").dt.date]
    rolling = ordered.groupby(by_city_day)["temperature_c"].transform(
        lambda s: s.rolling(3, min_periods=1).mean()
    )
    day = cleaned["observed_at"].dt.tz_convert("UTC").dt.date
    return pd.DataFrame(
        {
            "temp_rolling_3h": rolling.reindex(cleaned.index),
            "temp_norm": min_max(cleaned["temperature_c"], [cleaned["city"], day]),
            "is_precipitating": cleaned["precipitation_mm"].fillna(0) > 0,
        },
        index=cleaned.index,
    )


def expected_weather_metrics(features: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (day, city), group in features.groupby(["partition_date", "city"], sort=True):
        rows.append(
            {
                "partition_date": day,
                "city": city,
                "hours_observed": len(group),
                "temp_min": group["temperature_c"].min(),
                "temp_max": group["temperature_c"].max(),
                "temp_mean": group["temperature_c"].mean(),
                "precipitation_total": float(group["precipitation_mm"].fillna(0).sum()),
                "wind_speed_max": group["wind_speed_kmh"].max(),
            }
        )
    return pd.DataFrame(rows)


def assert_columns_equal(actual: pd.DataFrame, expected: pd.DataFrame, columns: list[str]) -> None:
    for name in columns:
        got, want = actual[name], expected[name]
        if want.dtype.kind == "f" or got.dtype.kind == "f":
            np.testing.assert_allclose(
                got.astype(float), want.astype(float), rtol=1e-12, atol=1e-12, err_msg=name
            )
        else:
            assert got.tolist() == want.tolist(), name


# --- products --------------------------------------------------------------------------------


def cleaned_products(rows: list[tuple]) -> pd.DataFrame:
    """Rows of cleaned.products: (partition_date, category, product_id, price, discount_pct,
    rating, stock), the other columns filled in."""
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
    return pd.DataFrame(
        {
            "partition_date": frame["partition_date"].astype("datetime64[ns]"),
            "source": "s",
            "product_id": frame["product_id"].astype(object),
            "sku": pd.Series([None] * len(frame), dtype=object),
            "title": "Thing",
            "category": frame["category"].astype(object),
            "brand": pd.Series([None] * len(frame), dtype=object),
            "price": frame["price"].astype(float),
            "discount_pct": frame["discount_pct"].astype(float),
            "rating": frame["rating"].astype(float),
            "stock": frame["stock"].astype("Int64"),
            "_run_id": "r",
            "_ingested_at": pd.Series([NOW] * len(frame), dtype="datetime64[ns, UTC]"),
        }
    )


@pytest.fixture
def catalogue() -> pd.DataFrame:
    return cleaned_products(
        [
            (D1, "phones", "1", 100.0, 10.0, 4.5, 5),
            (D1, "phones", "2", 200.0, 0.0, 3.0, 0),
            (D1, "phones", "3", 300.0, 12.5, None, 1),
            (D1, "lamps", "4", 20.0, 33.333, 2.99, 2),
            (D1, "desks", "5", 50.0, 0.0, None, 0),  # two equal prices: max = min, std = 0
            (D1, "desks", "6", 50.0, 50.0, None, 4),
            (D2, "phones", "1", 150.0, 0.0, 4.0, 3),  # a single-member group
        ]
    )


def test_product_features(products: CompiledDataset, catalogue: pd.DataFrame) -> None:
    assert products.cleaned_schema.validate(catalogue, lazy=True) is not None
    before = catalogue.copy(deep=True)
    features = products.features(catalogue)
    pd.testing.assert_frame_equal(catalogue, before)  # input untouched
    # The cleaned columns pass through, in their order and row order, the features after them.
    assert list(features.columns) == [*catalogue.columns, *PRODUCT_FEATURES]
    pd.testing.assert_frame_equal(features[list(catalogue.columns)], catalogue)
    assert_columns_equal(features, expected_product_features(catalogue), PRODUCT_FEATURES)
    # The output satisfies the features schema, including its generated *_formula checks.
    assert products.features_schema.validate(features, lazy=True) is not None

    by_key = features.set_index(["partition_date", "product_id"])
    assert by_key.loc[(D1, "1"), "final_price"] == 90.0
    assert by_key.loc[(D1, "3"), "final_price"] == 262.5
    assert by_key.loc[(D1, "4"), "final_price"] == 13.33
    # min-max and population z-score within partition_date × category
    assert by_key.loc[(D1, "1"), "price_norm"] == 0.0
    assert by_key.loc[(D1, "2"), "price_norm"] == 0.5
    assert by_key.loc[(D1, "3"), "price_norm"] == 1.0
    std = pd.Series([100.0, 200.0, 300.0]).std(ddof=0)
    assert by_key.loc[(D1, "3"), "price_zscore"] == pytest.approx(100.0 / std)
    assert by_key.loc[(D1, "1"), "price_zscore"] == pytest.approx(-100.0 / std)
    # max = min and std = 0 give 0.0: a single member, or several with one price
    for key in ((D1, "4"), (D2, "1"), (D1, "5"), (D1, "6")):
        assert by_key.loc[key, "price_norm"] == 0.0, key
        assert by_key.loc[key, "price_zscore"] == 0.0, key
    assert features["rating_bucket"].tolist() == [
        "high",
        "medium",
        None,
        "low",
        None,
        None,
        "high",
    ]
    assert features["in_stock"].tolist() == [True, False, True, True, False, True, True]


def test_rating_bucket_boundaries(products: CompiledDataset) -> None:
    ratings = [0.0, 2.999, 3.0, 3.999, 4.0, 5.0, None]
    frame = cleaned_products([(D1, "c", str(i), 10.0, 0.0, r, 1) for i, r in enumerate(ratings)])
    buckets = products.features(frame)["rating_bucket"].tolist()
    assert buckets == ["low", "low", "medium", "medium", "high", "high", None]
    assert buckets == expected_product_features(frame)["rating_bucket"].tolist()


def test_product_metrics(products: CompiledDataset, catalogue: pd.DataFrame) -> None:
    features = products.features(catalogue)
    before = features.copy(deep=True)
    metrics = products.metrics(features)
    pd.testing.assert_frame_equal(features, before)
    assert list(metrics.columns) == ["partition_date", "category", *PRODUCT_METRICS]
    expected = expected_product_metrics(features)
    assert metrics[["partition_date", "category"]].values.tolist() == (
        expected[["partition_date", "category"]].values.tolist()
    )
    assert_columns_equal(metrics, expected, PRODUCT_METRICS)
    # The metrics satisfy their schema, price_order and shares_sum_to_one included.
    assert products.metrics_schema.validate(metrics, lazy=True) is not None

    by_group = metrics.set_index(["partition_date", "category"])
    phones = by_group.loc[(D1, "phones")]
    assert phones["product_count"] == 3
    assert (
        phones["price_min"],
        phones["price_max"],
        phones["price_mean"],
        phones["price_median"],
    ) == (100, 300, 200, 200)
    assert phones["final_price_mean"] == pytest.approx((90 + 200 + 262.5) / 3)
    assert phones["rating_mean"] == pytest.approx(3.75)  # null ratings are left out
    assert pd.isna(by_group.loc[(D1, "desks"), "rating_mean"])  # no rating at all
    assert phones["stock_total"] == 6
    assert phones["share"] == pytest.approx(0.5)  # 3 of the day's 6 products
    assert by_group.loc[(D1, "lamps"), "share"] == pytest.approx(1 / 6)
    assert by_group.loc[(D1, "desks"), "share"] == pytest.approx(2 / 6)
    assert by_group.loc[(D2, "phones"), "share"] == 1.0
    assert str(metrics["product_count"].dtype) == str(metrics["stock_total"].dtype) == "Int64"


def test_metrics_need_only_the_columns_they_declare_to_read(
    products: CompiledDataset, weather: CompiledDataset, catalogue: pd.DataFrame
) -> None:
    """The metrics asset loads only ``metrics_reads`` of the features table."""
    for dataset, frame in ((products, catalogue), (weather, observations(OBSERVATIONS))):
        features = dataset.features(frame)
        narrow = features[list(dataset.metrics_reads)]
        assert len(narrow.columns) < len(features.columns)
        pd.testing.assert_frame_equal(dataset.metrics(narrow), dataset.metrics(features))


def test_metrics_do_not_depend_on_the_order_the_warehouse_returns_rows_in(
    products: CompiledDataset,
) -> None:
    """A warehouse scan has no fixed order; a float mean does depend on the order of its sum
    (in the last bit). Shuffled rows give bit-identical metrics, so a day re-run or part of a
    backfill range comes out the same."""
    rng = np.random.default_rng(7)
    n = 20_000
    rows = [
        (D1, rng.choice(["a", "b", "c"]), f"{i:06d}", rng.random() * 1000 + 0.01,
         rng.random() * 50, rng.random() * 5, int(rng.integers(0, 9)))
        for i in range(n)
    ]  # fmt: skip
    features = products.features(cleaned_products(rows))
    shuffled = features.sample(frac=1, random_state=3).reset_index(drop=True)
    pd.testing.assert_frame_equal(
        products.metrics(features), products.metrics(shuffled), check_exact=True
    )


def test_product_features_and_metrics_of_nothing_are_empty_frames(
    products: CompiledDataset,
) -> None:
    empty = products.features(cleaned_products([]))
    assert empty.empty and set(PRODUCT_FEATURES) <= set(empty.columns)
    metrics = products.metrics(empty)
    assert metrics.empty and list(metrics.columns) == list(products.metrics_schema.columns)
    assert str(metrics["product_count"].dtype) == "Int64"


# --- weather ---------------------------------------------------------------------------------


def observations(rows: list[tuple]) -> pd.DataFrame:
    """Rows of cleaned.weather: (city, observed_at, temperature_c, precipitation_mm,
    wind_speed_kmh), the other columns filled in."""
    frame = pd.DataFrame(
        rows, columns=["city", "observed_at", "temperature_c", "precipitation_mm", "wind_speed_kmh"]
    )
    observed_at = pd.to_datetime(frame["observed_at"], utc=True).astype("datetime64[ns, UTC]")
    return pd.DataFrame(
        {
            "partition_date": observed_at.dt.normalize()
            .dt.tz_localize(None)
            .astype("datetime64[ns]"),
            "source": "open_meteo",
            "city": frame["city"].astype(object),
            "latitude": 50.0,
            "longitude": 10.0,
            "observed_at": observed_at,
            "temperature_c": frame["temperature_c"].astype(float),
            "relative_humidity": np.nan,
            "precipitation_mm": frame["precipitation_mm"].astype(float),
            "wind_speed_kmh": frame["wind_speed_kmh"].astype(float),
            "_run_id": "r",
            "_ingested_at": pd.Series([NOW] * len(frame), dtype="datetime64[ns, UTC]"),
        }
    )


OBSERVATIONS = [
    ("Oslo", "2024-06-01T02:00", 12.0, 0.0, 5.0),  # out of time order on purpose
    ("Oslo", "2024-06-01T00:00", 10.0, None, 3.0),
    ("Oslo", "2024-06-01T01:00", 11.0, 0.4, 4.0),
    ("Oslo", "2024-06-01T03:00", 16.0, 0.0, 4.0),
    ("Rome", "2024-06-01T00:00", 20.0, 1.0, 1.0),
    ("Oslo", "2024-06-02T00:00", 30.0, None, None),  # the next day: nothing carries over
    ("Oslo", "2024-06-02T01:00", 20.0, None, None),
]


def test_weather_features_roll_within_city_and_day(weather: CompiledDataset) -> None:
    frame = observations(OBSERVATIONS)
    assert weather.cleaned_schema.validate(frame, lazy=True) is not None
    before = frame.copy(deep=True)
    features = weather.features(frame)
    pd.testing.assert_frame_equal(frame, before)
    assert list(features.columns) == [*frame.columns, *WEATHER_FEATURES]
    pd.testing.assert_frame_equal(features[list(frame.columns)], frame)  # row order kept
    assert_columns_equal(features, expected_weather_features(frame), WEATHER_FEATURES)
    assert weather.features_schema.validate(features, lazy=True) is not None

    by_key = features.set_index(["partition_date", "city", "observed_at"]).sort_index()
    oslo = by_key.loc[(D1, "Oslo")]
    # this and up to two previous observations of the city and day, ordered by time
    assert oslo["temp_rolling_3h"].tolist() == [10.0, 10.5, 11.0, 13.0]
    assert oslo["temp_norm"].tolist() == [0.0, 1 / 6, 2 / 6, 1.0]
    assert oslo["is_precipitating"].tolist() == [False, True, False, False]  # null → false
    rome = by_key.loc[(D1, "Rome")]
    assert rome["temp_rolling_3h"].tolist() == [20.0] and rome["temp_norm"].tolist() == [0.0]
    assert rome["is_precipitating"].tolist() == [True]
    next_day = by_key.loc[(D2, "Oslo")]
    assert next_day["temp_rolling_3h"].tolist() == [30.0, 25.0]
    assert next_day["temp_norm"].tolist() == [1.0, 0.0]
    assert next_day["is_precipitating"].tolist() == [False, False]
    assert features["is_precipitating"].dtype == bool


def test_weather_temp_norm_is_zero_where_max_equals_min(weather: CompiledDataset) -> None:
    frame = observations(
        [
            ("Oslo", "2024-06-01T00:00", 5.0, None, None),
            ("Oslo", "2024-06-01T01:00", 5.0, None, None),
            ("Oslo", "2024-06-01T02:00", 5.0, None, None),
        ]
    )
    features = weather.features(frame)
    assert features["temp_norm"].tolist() == [0.0, 0.0, 0.0]
    assert features["temp_rolling_3h"].tolist() == [5.0, 5.0, 5.0]


def test_weather_metrics_sum_of_nothing_is_zero(weather: CompiledDataset) -> None:
    features = weather.features(observations(OBSERVATIONS))
    metrics = weather.metrics(features)
    assert list(metrics.columns) == ["partition_date", "city", *WEATHER_METRICS]
    expected = expected_weather_metrics(features)
    assert metrics[["partition_date", "city"]].values.tolist() == (
        expected[["partition_date", "city"]].values.tolist()
    )
    assert_columns_equal(metrics, expected, WEATHER_METRICS)
    assert weather.metrics_schema.validate(metrics, lazy=True) is not None  # temp_order

    by_group = metrics.set_index(["partition_date", "city"])
    oslo = by_group.loc[(D1, "Oslo")]
    assert oslo["hours_observed"] == 4
    assert (oslo["temp_min"], oslo["temp_max"], oslo["temp_mean"]) == (10, 16, 12.25)
    assert oslo["precipitation_total"] == pytest.approx(0.4)  # the null hour is left out
    assert oslo["wind_speed_max"] == 5.0
    quiet = by_group.loc[(D2, "Oslo")]  # precipitation and wind all null
    assert quiet["hours_observed"] == 2
    assert quiet["precipitation_total"] == 0.0
    assert pd.isna(quiet["wind_speed_max"])
    assert (quiet["temp_min"], quiet["temp_max"], quiet["temp_mean"]) == (20, 30, 25)
    assert by_group.loc[(D1, "Rome"), "precipitation_total"] == 1.0


def test_weather_metrics_of_nothing_are_an_empty_frame(weather: CompiledDataset) -> None:
    metrics = weather.metrics(weather.features(observations([])))
    assert metrics.empty and list(metrics.columns) == list(weather.metrics_schema.columns)


# --- steps -----------------------------------------------------------------------------------


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

    from ingest_assets.transforms.raw import column_name, concat_raw, raw_frame

    at = pd.Timestamp("2024-06-01T01:00", tz="UTC")
    first = raw_frame([{"id": 1, "price": 9.5, "tags": ["a"]}], dt.date(2024, 6, 1), "r", at)
    second = raw_frame([{"id": 2, "price": "n/a", "Odd Name!": 1}], dt.date(2024, 6, 1), "r", at)
    frame = concat_raw([first, second])
    assert frame["price"].tolist() == ["9.5", "n/a"]
    assert frame["tags"].tolist() == ['["a"]', None]
    # A name that is no lower_snake identifier: a readable prefix and a hash of the exact name.
    odd = column_name("Odd Name!")
    assert odd.startswith("odd_name_") and frame[odd].tolist() == [None, "1"]
    assert frame["id"].tolist() == ["1", "2"]
    assert list(frame.columns[:1]) == ["partition_date"] and "_record" in frame.columns
    # The record as the source sent it, its fields in their own order.
    assert frame["_record"].tolist()[1] == '{"id":2,"price":"n/a","Odd Name!":1}'


def test_chunks_are_recut_so_that_no_group_spans_two(
    products: CompiledDataset, weather: CompiledDataset, catalogue: pd.DataFrame
) -> None:
    frame = pd.DataFrame({"day": [1, 1, 1, 1, 2, 2, 2], "city": list("aabbbbc"), "t": range(7)})
    pieces = [frame.iloc[:3], frame.iloc[3:4], frame.iloc[4:6], frame.iloc[6:]]
    chunks = list(group_chunks(pieces, ["day", "city"]))
    assert [c["t"].tolist() for c in chunks] == [[0, 1], [2, 3], [4, 5], [6]]
    assert pd.concat(chunks, ignore_index=True).equals(frame)

    # Features computed per re-cut chunk equal the features of the whole frame (the features
    # asset reads the cleaned table ordered by the groups, in chunks); cut anywhere, they differ.
    hours = observations(
        [
            (city, f"2024-06-01T{h:02d}:00", t, p, None)
            for city, h, t, p in [
                ("a", 0, 1.0, 0.0),
                ("a", 1, 3.0, None),
                ("a", 2, 2.0, 1.0),
                ("b", 3, 5.0, 0.0),
                ("b", 4, 5.0, 0.0),
                ("b", 5, 8.0, 2.0),
            ]
        ]
    )
    ordered = catalogue.sort_values(
        [*products.features_group_by, *products.sort_by], ignore_index=True
    )
    for dataset, whole_frame, cuts in (
        (weather, hours, [(0, 2), (2, 5), (5, 6)]),
        (products, ordered, [(0, 2), (2, 3), (3, 5), (5, 7)]),
    ):
        whole = dataset.features(whole_frame).reset_index(drop=True)
        pieces = [whole_frame.iloc[a:b] for a, b in cuts]
        parts = list(group_chunks(pieces, dataset.features_group_by))
        assert len(parts) > 1, dataset.name
        chunked = pd.concat([dataset.features(c) for c in parts], ignore_index=True)
        pd.testing.assert_frame_equal(chunked, whole)
        naive = pd.concat([dataset.features(p) for p in pieces], ignore_index=True)
        assert not naive.equals(whole), dataset.name  # the cuts split a group
