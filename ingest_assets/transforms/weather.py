"""Weather: features → metrics, as plain functions on DataFrames."""

from __future__ import annotations

import pandas as pd

from ingest_assets.transforms.steps import pipeline, step

CLEANED_COLUMNS = [
    "partition_date", "city", "latitude", "longitude", "observed_at", "temperature_c",
    "relative_humidity", "precipitation_mm", "wind_speed_kmh",
]  # fmt: skip
METRICS_COLUMNS = (
    "partition_date", "city", "observed_at", "temperature_c", "precipitation_mm", "wind_speed_kmh",
)  # fmt: skip


def _day(df: pd.DataFrame) -> pd.Series:
    return df["observed_at"].dt.tz_convert("UTC").dt.date


@step
def add_rolling_temperature(df: pd.DataFrame) -> pd.DataFrame:
    """Mean of this and up to two previous observations of the same city and day."""
    ordered = df.sort_values(["city", "observed_at"], kind="stable")
    rolling = (
        ordered.groupby([ordered["city"], _day(ordered)])["temperature_c"]
        .rolling(3, min_periods=1)
        .mean()
        .reset_index(level=[0, 1], drop=True)
    )
    return ordered.assign(temp_rolling_3h=rolling.reindex(ordered.index).astype(float))


@step
def add_temperature_norm(df: pd.DataFrame) -> pd.DataFrame:
    grouped = df.groupby([df["city"], _day(df)])["temperature_c"]
    low, high = grouped.transform("min"), grouped.transform("max")
    span = high - low
    return df.assign(temp_norm=((df["temperature_c"] - low) / span.where(span > 0)).fillna(0.0))


@step
def add_precipitation_flag(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(is_precipitating=(df["precipitation_mm"].fillna(0) > 0).astype(bool))


build_features = pipeline(add_rolling_temperature, add_temperature_norm, add_precipitation_flag)


@step
def build_metrics(features: pd.DataFrame) -> pd.DataFrame:
    """One row per partition_date × city."""
    grouped = features.groupby(["partition_date", "city"])
    metrics = grouped.agg(
        hours_observed=("observed_at", "size"),
        temp_min=("temperature_c", "min"),
        temp_max=("temperature_c", "max"),
        temp_mean=("temperature_c", "mean"),
        precipitation_total=("precipitation_mm", lambda s: float(s.sum(min_count=0))),
        wind_speed_max=("wind_speed_kmh", "max"),
    ).reset_index()
    return metrics.assign(
        hours_observed=metrics["hours_observed"].astype("Int64"),
        precipitation_total=metrics["precipitation_total"].astype(float),
        wind_speed_max=metrics["wind_speed_max"].astype(float),
    )
