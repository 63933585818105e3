"""Products: clean → features → metrics, as plain functions on DataFrames."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ingest_assets.transforms.steps import pipeline, step

CLEANED_COLUMNS = [
    "partition_date", "source", "product_id", "sku", "title", "category", "brand",
    "price", "discount_pct", "rating", "stock", "_run_id", "_ingested_at",
]  # fmt: skip
PARTITION_GROUP = ["partition_date", "category"]
METRICS_COLUMNS = (*PARTITION_GROUP, "price", "final_price", "rating", "stock")


def normalize_products(df: pd.DataFrame) -> pd.DataFrame:
    """The cleaning rules beyond type coercion: categories are lower-case."""
    return df.assign(category=df["category"].str.lower())


def rating_bucket(rating: pd.Series) -> pd.Series:
    """``low`` < 3 ≤ ``medium`` < 4 ≤ ``high``; null where the rating is null."""
    buckets = np.select(
        [rating < 3, rating < 4, rating >= 4], ["low", "medium", "high"], default=""
    )
    return pd.Series(buckets, index=rating.index, dtype=object).where(rating.notna(), None)


@step
def add_final_price(df: pd.DataFrame) -> pd.DataFrame:
    price, discount = df["price"].astype(float), df["discount_pct"].astype(float)
    return df.assign(final_price=(price * (1 - discount / 100)).round(2))


@step
def add_price_scaling(df: pd.DataFrame) -> pd.DataFrame:
    grouped = df.groupby(PARTITION_GROUP)["price"]
    low, high = grouped.transform("min"), grouped.transform("max")
    mean, std = grouped.transform("mean"), grouped.transform("std", ddof=0)
    span = high - low
    return df.assign(
        price_norm=((df["price"] - low) / span.where(span > 0)).fillna(0.0).astype(float),
        price_zscore=((df["price"] - mean) / std.where(std > 0)).fillna(0.0).astype(float),
    )


@step
def add_flags(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(
        rating_bucket=rating_bucket(df["rating"]), in_stock=(df["stock"] > 0).astype(bool)
    )


build_features = pipeline(add_final_price, add_price_scaling, add_flags)


@step
def build_metrics(features: pd.DataFrame) -> pd.DataFrame:
    """One row per partition_date × category."""
    if features.empty:
        return _empty_metrics()
    grouped = features.groupby(PARTITION_GROUP)
    metrics = grouped.agg(
        product_count=("price", "size"),
        price_min=("price", "min"),
        price_max=("price", "max"),
        price_mean=("price", "mean"),
        price_median=("price", "median"),
        final_price_mean=("final_price", "mean"),
        rating_mean=("rating", "mean"),
        stock_total=("stock", "sum"),
    ).reset_index()
    per_day = metrics.groupby("partition_date")["product_count"].transform("sum")
    return metrics.assign(
        product_count=metrics["product_count"].astype("Int64"),
        stock_total=metrics["stock_total"].astype("Int64"),
        share=metrics["product_count"] / per_day,
    )


def _empty_metrics() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "partition_date": pd.Series(dtype="datetime64[ns]"),
            "category": pd.Series(dtype=object),
            "product_count": pd.Series(dtype="Int64"),
            **{
                c: pd.Series(dtype=float)
                for c in (
                    "price_min",
                    "price_max",
                    "price_mean",
                    "price_median",
                    "final_price_mean",
                    "rating_mean",
                )
            },
            "stock_total": pd.Series(dtype="Int64"),
            "share": pd.Series(dtype=float),
        }
    )
