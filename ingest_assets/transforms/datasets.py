"""Each dataset's processing steps, named once so assets and replay use the same ones."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from ingest_assets.transforms import products, weather


@dataclass(frozen=True)
class DatasetSteps:
    clean: Callable[[pd.DataFrame], pd.DataFrame] | None
    features: Callable[[pd.DataFrame], pd.DataFrame]
    metrics: Callable[[pd.DataFrame], pd.DataFrame]
    sort_by: tuple[str, ...]
    # The groups ``features`` computes within: it may run on chunks holding whole groups.
    group_by: tuple[str, ...]
    # The features columns ``metrics`` reads: the metrics step loads only these.
    metrics_columns: tuple[str, ...]


DATASETS: dict[str, DatasetSteps] = {
    "products": DatasetSteps(
        clean=products.normalize_products,
        features=products.build_features,
        metrics=products.build_metrics,
        sort_by=("partition_date", "source", "product_id"),
        group_by=tuple(products.PARTITION_GROUP),
        metrics_columns=products.METRICS_COLUMNS,
    ),
    "weather": DatasetSteps(
        clean=None,
        features=weather.build_features,
        metrics=weather.build_metrics,
        sort_by=("partition_date", "city", "observed_at"),
        # Features group by city and the observation's day, which is the partition's day.
        group_by=("partition_date", "city"),
        metrics_columns=weather.METRICS_COLUMNS,
    ),
}
