"""Pandera models for every table of DESIGN.md: the one place the rules are declared.

Everything that judges data reads these models, nothing restates a rule:

- the record-level split (``quality.validate.split_records``) coerces each field to the cleaned
  model's declared dtype, runs the model's field and frame checks (ranges, nullability, allowed
  values, trimming, lower case) and takes the duplicate key from the model's ``unique``;
- the asset checks (``assets.checks``) validate every table with its model, ``lazy=True``;
- schema drift (``quality.drift``) takes a source's required fields from the cleaned model.

No dagster here.
"""

from __future__ import annotations

from typing import Annotated

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

UtcTimestamp = Annotated[pd.DatetimeTZDtype, "ns", "UTC"]
Int = pd.Int64Dtype


class IngestModel(pa.DataFrameModel):
    class Config:
        strict = False
        coerce = False


class PartitionedModel(IngestModel):
    partition_date: Series[pa.DateTime] = pa.Field(nullable=False)


class CleanedProducts(PartitionedModel):
    """A product as one source listed it on one day, cleaned."""

    source: Series[str] = pa.Field(str_length={"min_value": 1})
    product_id: Series[str] = pa.Field(str_length={"min_value": 1})
    sku: Series[str] = pa.Field(nullable=True)
    title: Series[str] = pa.Field(str_length={"min_value": 1})
    category: Series[str] = pa.Field(str_length={"min_value": 1})
    brand: Series[str] = pa.Field(nullable=True)
    price: Series[float] = pa.Field(gt=0)
    discount_pct: Series[float] = pa.Field(ge=0, le=100)
    rating: Series[float] = pa.Field(ge=0, le=5, nullable=True)
    stock: Series[Int] = pa.Field(ge=0)
    run_id_: Series[str] = pa.Field(alias="_run_id")
    ingested_at_: Series[UtcTimestamp] = pa.Field(alias="_ingested_at")

    @pa.check("category", name="lower_case")
    def category_is_lower_case(cls, category: Series[str]) -> Series[bool]:
        return category == category.str.lower()

    @pa.check("title", "category", "brand", "sku", name="trimmed")
    def text_is_trimmed(cls, text: Series[str]) -> Series[bool]:
        return text.isna() | (text == text.str.strip())

    class Config:
        unique = ["partition_date", "source", "product_id"]


class FeaturesProducts(CleanedProducts):
    final_price: Series[float] = pa.Field(ge=0)
    price_norm: Series[float] = pa.Field(ge=0, le=1)
    price_zscore: Series[float]
    rating_bucket: Series[str] = pa.Field(isin=["low", "medium", "high"], nullable=True)
    in_stock: Series[bool]

    @pa.dataframe_check(name="final_price_formula")
    def final_price_matches(cls, df: pd.DataFrame) -> Series[bool]:
        expected = (df["price"] * (1 - df["discount_pct"] / 100)).round(2)
        return (df["final_price"] - expected).abs() < 0.006

    @pa.dataframe_check(name="rating_bucket_matches_rating")
    def bucket_matches(cls, df: pd.DataFrame) -> Series[bool]:
        from ingest_assets.transforms.products import rating_bucket

        return rating_bucket(df["rating"]).fillna("∅") == df["rating_bucket"].fillna("∅")

    @pa.dataframe_check(name="in_stock_matches_stock")
    def in_stock_matches(cls, df: pd.DataFrame) -> Series[bool]:
        return df["in_stock"] == (df["stock"] > 0)


class MetricsProducts(PartitionedModel):
    category: Series[str] = pa.Field(str_length={"min_value": 1})
    product_count: Series[Int] = pa.Field(ge=1)
    price_min: Series[float] = pa.Field(gt=0)
    price_max: Series[float] = pa.Field(gt=0)
    price_mean: Series[float] = pa.Field(gt=0)
    price_median: Series[float] = pa.Field(gt=0)
    final_price_mean: Series[float] = pa.Field(ge=0)
    rating_mean: Series[float] = pa.Field(ge=0, le=5, nullable=True)
    stock_total: Series[Int] = pa.Field(ge=0)
    share: Series[float] = pa.Field(gt=0, le=1)

    @pa.dataframe_check(name="price_order")
    def price_order(cls, df: pd.DataFrame) -> Series[bool]:
        return (df["price_min"] <= df["price_mean"] + 1e-9) & (
            df["price_mean"] <= df["price_max"] + 1e-9
        )

    @pa.dataframe_check(name="shares_sum_to_one")
    def shares_sum_to_one(cls, df: pd.DataFrame) -> Series[bool]:
        totals = df.groupby("partition_date")["share"].transform("sum")
        return (totals - 1).abs() < 1e-6

    class Config:
        unique = ["partition_date", "category"]


class CleanedWeather(PartitionedModel):
    # Not in DESIGN's column list (more columns are allowed): it lets raw = valid + quarantined
    # be checked per source when several sources feed the weather.
    source: Series[str] = pa.Field(str_length={"min_value": 1})
    city: Series[str] = pa.Field(str_length={"min_value": 1})
    latitude: Series[float] = pa.Field(ge=-90, le=90)
    longitude: Series[float] = pa.Field(ge=-180, le=180)
    observed_at: Series[UtcTimestamp]
    temperature_c: Series[float] = pa.Field(ge=-90, le=60)
    relative_humidity: Series[float] = pa.Field(ge=0, le=100, nullable=True)
    precipitation_mm: Series[float] = pa.Field(ge=0, nullable=True)
    wind_speed_kmh: Series[float] = pa.Field(ge=0, le=400, nullable=True)

    @pa.dataframe_check(name="observed_in_partition")
    def observed_in_partition(cls, df: pd.DataFrame) -> Series[bool]:
        observed_day = df["observed_at"].dt.tz_convert("UTC").dt.tz_localize(None).dt.normalize()
        return observed_day == df["partition_date"].dt.normalize()

    class Config:
        unique = ["city", "observed_at"]


class FeaturesWeather(CleanedWeather):
    temp_rolling_3h: Series[float] = pa.Field(ge=-90, le=60)
    temp_norm: Series[float] = pa.Field(ge=0, le=1)
    is_precipitating: Series[bool]


class MetricsWeather(PartitionedModel):
    city: Series[str] = pa.Field(str_length={"min_value": 1})
    hours_observed: Series[Int] = pa.Field(ge=1, le=24)
    temp_min: Series[float] = pa.Field(ge=-90, le=60)
    temp_max: Series[float] = pa.Field(ge=-90, le=60)
    temp_mean: Series[float] = pa.Field(ge=-90, le=60)
    precipitation_total: Series[float] = pa.Field(ge=0)
    wind_speed_max: Series[float] = pa.Field(ge=0, le=400, nullable=True)

    @pa.dataframe_check(name="temp_order")
    def temp_order(cls, df: pd.DataFrame) -> Series[bool]:
        return (df["temp_min"] <= df["temp_mean"] + 1e-9) & (
            df["temp_mean"] <= df["temp_max"] + 1e-9
        )

    class Config:
        unique = ["partition_date", "city"]


class MetricsIngestion(PartitionedModel):
    source: Series[str] = pa.Field(str_length={"min_value": 1})
    records_fetched: Series[Int] = pa.Field(ge=0)
    records_valid: Series[Int] = pa.Field(ge=0)
    records_quarantined: Series[Int] = pa.Field(ge=0)
    requests: Series[Int] = pa.Field(ge=0, nullable=True)
    retries: Series[Int] = pa.Field(ge=0, nullable=True)
    failed_requests: Series[Int] = pa.Field(ge=0, nullable=True)
    duration_s: Series[float] = pa.Field(ge=0, nullable=True)

    @pa.dataframe_check(name="records_conserved")
    def records_conserved(cls, df: pd.DataFrame) -> Series[bool]:
        return df["records_fetched"] == df["records_valid"] + df["records_quarantined"]

    class Config:
        unique = ["partition_date", "source"]


class QuarantineRecords(PartitionedModel):
    source: Series[str]
    dataset: Series[str]
    record: Series[str]
    errors: Series[str]
    run_id: Series[str]
    quarantined_at: Series[UtcTimestamp]


class QuarantineHistory(PartitionedModel):
    """Every record that has been quarantined, and whether a replay released it."""

    source: Series[str]
    dataset: Series[str]
    record: Series[str]
    errors: Series[str]
    status: Series[str] = pa.Field(isin=["quarantined", "replayed", "superseded"])
    quarantined_run_id: Series[str]
    quarantined_at: Series[UtcTimestamp]
    replay_run_id: Series[str] = pa.Field(nullable=True)
    replayed_at: Series[UtcTimestamp] = pa.Field(nullable=True)

    @pa.dataframe_check(name="replay_marked")
    def replay_marked(cls, df: pd.DataFrame) -> Series[bool]:
        """A record out of quarantine says by which run and when; one still in it does not."""
        out = df["status"] != "quarantined"
        return (out == df["replay_run_id"].notna()) & (out == df["replayed_at"].notna())


CLEANED_MODELS: dict[str, type[PartitionedModel]] = {
    "products": CleanedProducts,
    "weather": CleanedWeather,
}
# The key a record must not repeat within its source and partition (else: ``duplicate``),
# read from the cleaned model's ``unique``.
DATASET_KEYS: dict[str, list[str]] = {
    dataset: [c for c in model.to_schema().unique if c != "partition_date"]
    for dataset, model in CLEANED_MODELS.items()
}
