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
    partition_date: Series[pa.DateTime] = pa.Field(
        nullable=False, description="The day (UTC) the rows belong to: the asset's partition."
    )


class CleanedProducts(PartitionedModel):
    """A product as one source listed it on one day, cleaned."""

    source: Series[str] = pa.Field(
        str_length={"min_value": 1},
        description="The source (sources.yaml) that listed the product.",
    )
    product_id: Series[str] = pa.Field(
        str_length={"min_value": 1},
        description="The product's id at its source (DummyJSON id, partner SKU, supplier id), as text.",
    )
    sku: Series[str] = pa.Field(
        nullable=True, description="Stock keeping unit, if the source gives one."
    )
    title: Series[str] = pa.Field(str_length={"min_value": 1}, description="Product name, trimmed.")
    category: Series[str] = pa.Field(
        str_length={"min_value": 1}, description="Category, lower-case."
    )
    brand: Series[str] = pa.Field(nullable=True, description="Brand, if known.")
    price: Series[float] = pa.Field(gt=0, description="List price.")
    discount_pct: Series[float] = pa.Field(
        ge=0, le=100, description="Discount in percent of the price."
    )
    rating: Series[float] = pa.Field(
        ge=0, le=5, nullable=True, description="Average customer rating, 0 to 5, if rated."
    )
    stock: Series[Int] = pa.Field(ge=0, description="Units in stock.")
    run_id_: Series[str] = pa.Field(
        alias="_run_id", description="The Dagster run that wrote the row."
    )
    ingested_at_: Series[UtcTimestamp] = pa.Field(
        alias="_ingested_at", description="When the record was fetched."
    )

    @pa.check("category", name="lower_case")
    def category_is_lower_case(cls, category: Series[str]) -> Series[bool]:
        return category == category.str.lower()

    @pa.check("title", "category", "brand", "sku", name="trimmed")
    def text_is_trimmed(cls, text: Series[str]) -> Series[bool]:
        return text.isna() | (text == text.str.strip())

    class Config:
        unique = ["partition_date", "source", "product_id"]


class FeaturesProducts(CleanedProducts):
    final_price: Series[float] = pa.Field(
        ge=0, description="price after discount: round(price * (1 - discount_pct / 100), 2)."
    )
    price_norm: Series[float] = pa.Field(
        ge=0,
        le=1,
        description="Min-max normalised price within the day and category (0 where all are equal).",
    )
    price_zscore: Series[float] = pa.Field(
        description="Price z-score within the day and category (population std; 0 where std = 0)."
    )
    rating_bucket: Series[str] = pa.Field(
        isin=["low", "medium", "high"],
        nullable=True,
        description="low (< 3), medium (< 4) or high; null without a rating.",
    )
    in_stock: Series[bool] = pa.Field(description="Whether stock > 0.")

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
    category: Series[str] = pa.Field(str_length={"min_value": 1}, description="Product category.")
    product_count: Series[Int] = pa.Field(ge=1, description="Products of the category that day.")
    price_min: Series[float] = pa.Field(gt=0, description="Lowest price.")
    price_max: Series[float] = pa.Field(gt=0, description="Highest price.")
    price_mean: Series[float] = pa.Field(gt=0, description="Mean price.")
    price_median: Series[float] = pa.Field(gt=0, description="Median price.")
    final_price_mean: Series[float] = pa.Field(ge=0, description="Mean price after discount.")
    rating_mean: Series[float] = pa.Field(
        ge=0, le=5, nullable=True, description="Mean rating of the rated products."
    )
    stock_total: Series[Int] = pa.Field(ge=0, description="Units in stock, summed.")
    share: Series[float] = pa.Field(
        gt=0, le=1, description="product_count / all products of the day."
    )

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
    source: Series[str] = pa.Field(
        str_length={"min_value": 1}, description="The source (sources.yaml) of the observation."
    )
    city: Series[str] = pa.Field(str_length={"min_value": 1}, description="City name.")
    latitude: Series[float] = pa.Field(ge=-90, le=90, description="Latitude of the city, degrees.")
    longitude: Series[float] = pa.Field(
        ge=-180, le=180, description="Longitude of the city, degrees."
    )
    observed_at: Series[UtcTimestamp] = pa.Field(description="Hour of the observation (UTC).")
    temperature_c: Series[float] = pa.Field(
        ge=-90, le=60, description="Air temperature at 2 m, °C."
    )
    relative_humidity: Series[float] = pa.Field(
        ge=0, le=100, nullable=True, description="Relative humidity at 2 m, %."
    )
    precipitation_mm: Series[float] = pa.Field(
        ge=0, nullable=True, description="Precipitation of the hour, mm."
    )
    wind_speed_kmh: Series[float] = pa.Field(
        ge=0, le=400, nullable=True, description="Wind speed at 10 m, km/h."
    )

    @pa.dataframe_check(name="observed_in_partition")
    def observed_in_partition(cls, df: pd.DataFrame) -> Series[bool]:
        observed_day = df["observed_at"].dt.tz_convert("UTC").dt.tz_localize(None).dt.normalize()
        return observed_day == df["partition_date"].dt.normalize()

    class Config:
        unique = ["city", "observed_at"]


class FeaturesWeather(CleanedWeather):
    temp_rolling_3h: Series[float] = pa.Field(
        ge=-90,
        le=60,
        description="Mean temperature of this and up to two previous hours of the city and day.",
    )
    temp_norm: Series[float] = pa.Field(
        ge=0,
        le=1,
        description="Min-max normalised temperature within the city and day (0 where all are equal).",
    )
    is_precipitating: Series[bool] = pa.Field(
        description="Whether precipitation_mm > 0 (false when unknown)."
    )


class MetricsWeather(PartitionedModel):
    city: Series[str] = pa.Field(str_length={"min_value": 1}, description="City name.")
    hours_observed: Series[Int] = pa.Field(
        ge=1, le=24, description="Hours with an observation that day."
    )
    temp_min: Series[float] = pa.Field(ge=-90, le=60, description="Lowest temperature, °C.")
    temp_max: Series[float] = pa.Field(ge=-90, le=60, description="Highest temperature, °C.")
    temp_mean: Series[float] = pa.Field(ge=-90, le=60, description="Mean temperature, °C.")
    precipitation_total: Series[float] = pa.Field(
        ge=0, description="Precipitation of the day, mm (0 when none is known)."
    )
    wind_speed_max: Series[float] = pa.Field(
        ge=0, le=400, nullable=True, description="Highest wind speed, km/h."
    )

    @pa.dataframe_check(name="temp_order")
    def temp_order(cls, df: pd.DataFrame) -> Series[bool]:
        return (df["temp_min"] <= df["temp_mean"] + 1e-9) & (
            df["temp_mean"] <= df["temp_max"] + 1e-9
        )

    class Config:
        unique = ["partition_date", "city"]


class MetricsIngestion(PartitionedModel):
    source: Series[str] = pa.Field(
        str_length={"min_value": 1}, description="The source (sources.yaml)."
    )
    records_fetched: Series[Int] = pa.Field(
        ge=0, description="Records the raw asset fetched for the day."
    )
    records_valid: Series[Int] = pa.Field(ge=0, description="Of those, rows in cleaned/.")
    records_quarantined: Series[Int] = pa.Field(ge=0, description="Of those, rows in quarantine.")
    requests: Series[Int] = pa.Field(
        ge=0, nullable=True, description="HTTP attempts (a file source: one per file read)."
    )
    retries: Series[Int] = pa.Field(
        ge=0, nullable=True, description="Attempts beyond the first of each request."
    )
    failed_requests: Series[Int] = pa.Field(
        ge=0,
        nullable=True,
        description="Attempts that failed (non-2xx, timeout, connection error, bad body).",
    )
    duration_s: Series[float] = pa.Field(
        ge=0, nullable=True, description="Wall time of the source's raw asset, seconds."
    )

    @pa.dataframe_check(name="records_conserved")
    def records_conserved(cls, df: pd.DataFrame) -> Series[bool]:
        return df["records_fetched"] == df["records_valid"] + df["records_quarantined"]

    class Config:
        unique = ["partition_date", "source"]


class QuarantineRecords(PartitionedModel):
    source: Series[str] = pa.Field(description="The source the record came from.")
    dataset: Series[str] = pa.Field(description="The dataset it was meant for.")
    record: Series[str] = pa.Field(description="The record as fetched (JSON).")
    errors: Series[str] = pa.Field(
        description="Why it is invalid: a JSON list of {column, check, message}."
    )
    run_id: Series[str] = pa.Field(description="The run that quarantined it.")
    quarantined_at: Series[UtcTimestamp] = pa.Field(description="When it was quarantined.")


class QuarantineHistory(PartitionedModel):
    """Every record that has been quarantined, and whether a replay released it."""

    source: Series[str] = pa.Field(description="The source the record came from.")
    dataset: Series[str] = pa.Field(description="The dataset it was meant for.")
    record: Series[str] = pa.Field(description="The record as fetched (JSON).")
    errors: Series[str] = pa.Field(
        description="Why it was quarantined: a JSON list of {column, check, message}."
    )
    status: Series[str] = pa.Field(
        isin=["quarantined", "replayed", "superseded"],
        description="quarantined, replayed (now in cleaned/) or superseded (the source sent another).",
    )
    quarantined_run_id: Series[str] = pa.Field(description="The run that quarantined it.")
    quarantined_at: Series[UtcTimestamp] = pa.Field(description="When it was quarantined.")
    replay_run_id: Series[str] = pa.Field(
        nullable=True, description="The run that released it from quarantine, if any."
    )
    replayed_at: Series[UtcTimestamp] = pa.Field(
        nullable=True, description="When it was released, if it was."
    )

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

# Pandera imports its pandas backends (and hypothesis, about 1.5 s) on the first validation in a
# process; registering them when the models load moves that to the code location's start-up,
# out of every run's first check.
pa.DataFrameSchema.register_default_backends(pd.DataFrame)
