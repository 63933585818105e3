"""cleaned/<dataset> → features/<dataset> → metrics/<dataset>, and quarantine/records.

Every raw record goes through the same split (``quality.validate.split_records``): valid rows
become ``cleaned/<dataset>``, the rest ``quarantine/records`` with their reasons.
"""

import json
from collections import Counter
from collections.abc import Mapping, Sequence

import dagster as dg
import pandas as pd

from ingest_assets.assets.common import derived_asset, now_utc, timed
from ingest_assets.config import SourceConfig
from ingest_assets.quality.validate import QUARANTINE_COLUMNS, SplitResult, split_records
from ingest_assets.transforms.datasets import DATASETS
from ingest_assets.transforms.steps import recording

PRIMARY_KEYS = {
    ("cleaned", "products"): ["partition_date", "source", "product_id"],
    ("features", "products"): ["partition_date", "source", "product_id"],
    ("metrics", "products"): ["partition_date", "category"],
    ("cleaned", "weather"): ["city", "observed_at"],
    ("features", "weather"): ["city", "observed_at"],
    ("metrics", "weather"): ["partition_date", "city"],
    ("metrics", "ingestion"): ["partition_date", "source"],
}


def raw_input_name(source: SourceConfig) -> str:
    return f"raw_{source.name}"


def raw_ins(sources: Sequence[SourceConfig]) -> dict[str, dg.AssetIn]:
    return {raw_input_name(s): dg.AssetIn(key=["raw", s.name]) for s in sources}


def split_source(
    source: SourceConfig, raw: pd.DataFrame, run_id: str, at: pd.Timestamp
) -> SplitResult:
    """The one split every asset uses, so cleaned and quarantine always agree.

    Rows are put back in arrival order first: which of two records with one key is the
    "earlier" (kept) one must not depend on the order a warehouse returns rows in.
    """
    if "_seq" in raw.columns:
        raw = raw.sort_values(["partition_date", "_seq"], kind="stable").reset_index(drop=True)
    return split_records(
        raw,
        source=source.name,
        dataset=source.dataset,
        mapping=source.mapping,
        run_id=run_id,
        quarantined_at=at,
        clean=DATASETS[source.dataset].clean,
    )


def top_reasons(quarantined: pd.DataFrame, limit: int = 5) -> dict[str, int]:
    """The most frequent ``column: check`` reasons among quarantined rows."""
    counts: Counter[str] = Counter()
    for text in quarantined["errors"]:
        for error in json.loads(text):
            counts[f"{error.get('column') or '(record)'}: {error['check']}"] += 1
    return dict(counts.most_common(limit))


def _sorted(df: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    return df.sort_values(list(by), kind="stable").reset_index(drop=True) if len(df) else df


def build_dataset_assets(
    dataset: str, sources: Sequence[SourceConfig]
) -> list[dg.AssetsDefinition]:
    """cleaned/, features/ and metrics/ assets for one dataset fed by ``sources``."""
    steps = DATASETS[dataset]
    names = {raw_input_name(s): s for s in sources}

    @derived_asset(
        key=["cleaned", dataset],
        ins=raw_ins(sources),
        description=(
            f"Valid {dataset} records of {', '.join(s.name for s in sources)}: typed, trimmed and "
            "checked against the cleaned schema. Invalid records go to quarantine/records."
        ),
        group_name=dataset,
        metadata={"primary_key": PRIMARY_KEYS[("cleaned", dataset)]},
    )
    @timed
    def _cleaned(
        context: dg.AssetExecutionContext, **raws: pd.DataFrame
    ) -> dg.Output[pd.DataFrame]:
        at = now_utc()
        parts, per_source = [], {}
        for name, raw in raws.items():
            result = split_source(names[name], raw, context.run.run_id, at)
            parts.append(result.valid)
            per_source[names[name].name] = {"raw": len(raw), **result.counts}
        cleaned = _sorted(pd.concat(parts, ignore_index=True), steps.sort_by)
        return dg.Output(
            cleaned,
            metadata={
                "dagster/row_count": len(cleaned),
                "records_quarantined": sum(c["quarantined"] for c in per_source.values()),
                "per_source": dg.MetadataValue.json(per_source),
            },
        )

    @derived_asset(
        key=["features", dataset],
        ins={"cleaned": dg.AssetIn(key=["cleaned", dataset])},
        description=f"Engineered features of cleaned {dataset}.",
        group_name=dataset,
        metadata={"primary_key": PRIMARY_KEYS[("features", dataset)]},
    )
    @timed
    def _features(
        context: dg.AssetExecutionContext, cleaned: pd.DataFrame
    ) -> dg.Output[pd.DataFrame]:
        with recording() as steps_run:
            features = _sorted(steps.features(cleaned), steps.sort_by)
        return dg.Output(
            features,
            metadata={
                "dagster/row_count": len(features),
                "steps": dg.MetadataValue.json(steps_run.as_metadata()),
            },
        )

    @derived_asset(
        key=["metrics", dataset],
        ins={"features": dg.AssetIn(key=["features", dataset])},
        description=f"Daily metrics of {dataset}.",
        group_name=dataset,
        metadata={"primary_key": PRIMARY_KEYS[("metrics", dataset)]},
    )
    @timed
    def _metrics(
        context: dg.AssetExecutionContext, features: pd.DataFrame
    ) -> dg.Output[pd.DataFrame]:
        metrics = steps.metrics(features)
        return dg.Output(metrics, metadata={"dagster/row_count": len(metrics)})

    return [_cleaned, _features, _metrics]


def build_quarantine_asset(sources: Sequence[SourceConfig]) -> dg.AssetsDefinition:
    """quarantine/records: every invalid record of every source, with its reasons."""
    names = {raw_input_name(s): s for s in sources}

    @derived_asset(
        key=["quarantine", "records"],
        ins=raw_ins(sources),
        description=(
            "Records that failed validation, one row each, with the reasons as JSON "
            "(column, check, message). Nothing is dropped: raw = valid + quarantined."
        ),
        group_name="quality",
        metadata={"json_columns": ["record", "errors"]},
    )
    @timed
    def quarantine_records(
        context: dg.AssetExecutionContext, **raws: pd.DataFrame
    ) -> dg.Output[pd.DataFrame]:
        at = now_utc()
        parts = [
            split_source(names[n], raw, context.run.run_id, at).quarantined
            for n, raw in raws.items()
        ]
        quarantined = pd.concat(parts, ignore_index=True)[QUARANTINE_COLUMNS]
        per_source: Mapping[str, int] = quarantined["source"].value_counts().to_dict()
        return dg.Output(
            quarantined,
            metadata={
                "dagster/row_count": len(quarantined),
                "per_source": dg.MetadataValue.json(
                    {s.name: int(per_source.get(s.name, 0)) for s in sources}
                ),
                "top_reasons": dg.MetadataValue.json(top_reasons(quarantined)),
            },
        )

    return quarantine_records
