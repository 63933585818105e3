"""Per dataset: one split into cleaned/ + quarantine/ + metrics/ingestion_, then features/ and
metrics/.

``<dataset>_split`` is a multi-asset: it reads each source's raw partition in bounded chunks (in
the order of sources.yaml, then ``_seq``), splits every record once (``records.split``) and
writes the valid rows to ``cleaned/<dataset>`` and the others, with their reasons, to
``quarantine/<dataset>`` (the dataset's rows of the table ``quarantine.records``). Cleaned and
quarantine cannot disagree: they are one computation. It then counts what was written and
writes the dataset's rows of ``metrics.ingestion`` (``metrics/ingestion_<dataset>``).

A dataset depends only on its own sources: a late partner file never holds up the weather. A
source without a materialized raw partition for a day is left out of that day (and named in the
metadata); its rows follow when it lands (see the automation conditions).
"""

import json
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import dagster as dg
import pandas as pd

from ingest_assets.assets.common import (
    daily_partitions,
    derived_asset,
    derived_automation_condition,
    now_utc,
    partition_bounds,
    partition_days,
    timed,
)
from ingest_assets.assets.ingestion import ingestion_frame
from ingest_assets.assets.placement import where_it_ran
from ingest_assets.assets.schema_checks import ChunkCheck, schema_check_spec
from ingest_assets.config import SourceConfig
from ingest_assets.datasets import CompiledDataset
from ingest_assets.records.split import QUARANTINE_COLUMNS, DatasetSplit, SplitResult
from ingest_assets.transforms.steps import StepLog, group_chunks, recording, step
from ingest_assets.warehouse.base import READ_CHUNK_ROWS, FrameStream, PartitionedTableIOManager
from ingest_assets.warehouse.common import TableRef

INGESTION_KEY = ["partition_date", "source"]
QUARANTINE_TABLE = "quarantine.records"
# Rows of raw read per chunk of the split.
SPLIT_CHUNK_ROWS = READ_CHUNK_ROWS
INGESTION_TABLE = "metrics.ingestion"


def quarantine_key(dataset: str) -> dg.AssetKey:
    return dg.AssetKey(["quarantine", dataset])


def ingestion_key(dataset: str) -> dg.AssetKey:
    return dg.AssetKey(["metrics", f"ingestion_{dataset}"])


def split_op_name(dataset: str) -> str:
    return f"{dataset}_split"


def top_reasons(quarantined: pd.DataFrame, limit: int = 5) -> dict[str, int]:
    """The most frequent ``column: check`` reasons among quarantined rows."""
    counts: Counter[str] = Counter()
    for text in quarantined["errors"]:
        for error in json.loads(text):
            counts[f"{error.get('column') or '(record)'}: {error['check']}"] += 1
    return dict(counts.most_common(limit))


def split_chunks(
    warehouse: PartitionedTableIOManager,
    split: DatasetSplit,
    source: SourceConfig,
    bounds: tuple,
) -> Iterator[SplitResult]:
    """One source's raw partition window, split chunk by chunk in the source's order."""
    mark = warehouse.placeholder
    existing = {
        name
        for (name,) in warehouse.fetch_all(
            "SELECT column_name FROM information_schema.columns "
            f"WHERE table_schema = {mark} AND table_name = {mark}",
            ["raw", source.name],
        )
    }
    chunks = warehouse.read_batches(
        TableRef("raw", source.name),
        bounds,
        split.raw_columns(source.mapping, existing or None),
        order_by=["partition_date", "_seq"],
        chunk_rows=SPLIT_CHUNK_ROWS,
    )
    table = TableRef("raw", source.name)

    def records(rows: pd.DataFrame) -> list[str]:
        found: dict[tuple[object, int], str] = {}
        for day, seqs in rows.groupby(rows["partition_date"].dt.date)["_seq"]:
            texts = warehouse.read_records(table, day, seqs.tolist())
            found.update({(day, seq): text for seq, text in texts.items()})
        days = rows["partition_date"].dt.date
        return [found[(d, int(q))] for d, q in zip(days, rows["_seq"], strict=True)]

    for chunk in chunks:
        yield split.split(chunk, source.name, source.mapping, records)


def missing_raw_days(
    instance: dg.DagsterInstance, source: SourceConfig, days: Sequence[str]
) -> list[str]:
    """The days of the window whose raw partition of ``source`` was never materialized."""
    done = instance.get_materialized_partitions(dg.AssetKey(["raw", source.name]))
    return [day for day in days if day not in done]


def _table_metadata(dataset: CompiledDataset, layer: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"primary_key": dataset.primary_key(layer)}
    json_columns = dataset.json_columns(layer)
    if json_columns:
        metadata["json_columns"] = json_columns
    return metadata


def build_split_asset(
    compiled: CompiledDataset, sources: Sequence[SourceConfig]
) -> dg.AssetsDefinition:
    """``cleaned/<dataset>``, ``quarantine/<dataset>`` and ``metrics/ingestion_<dataset>``."""
    dataset = compiled.name
    names = ", ".join(s.name for s in sources)
    raw_keys = [dg.AssetKey(["raw", s.name]) for s in sources]

    @dg.multi_asset(
        name=split_op_name(dataset),
        deps=raw_keys,
        partitions_def=daily_partitions,
        outs={
            _output_name(["cleaned", dataset]): dg.AssetOut(
                key=["cleaned", dataset],
                description=(
                    f"Valid {dataset} records of {names}: typed, trimmed and checked against the "
                    "cleaned schema. Invalid records go to quarantine/ with their reasons."
                ),
                group_name=dataset,
                kinds={"python", "pandas"},
                metadata=_table_metadata(compiled, "cleaned"),
                automation_condition=derived_automation_condition(),
            ),
            _output_name(quarantine_key(dataset).path): dg.AssetOut(
                key=quarantine_key(dataset),
                description=(
                    f"The {dataset} records of {names} that failed validation, one row each, "
                    "with the reasons as JSON (column, check, message); stored in "
                    f"{QUARANTINE_TABLE}. Nothing is dropped: raw = valid + quarantined."
                ),
                group_name="quality",
                kinds={"python", "pandas"},
                metadata={
                    "json_columns": ["record", "errors"],
                    "table": QUARANTINE_TABLE,
                    "scope": dg.MetadataValue.json({"dataset": dataset}),
                },
                automation_condition=derived_automation_condition(),
            ),
            _output_name(ingestion_key(dataset).path): dg.AssetOut(
                key=ingestion_key(dataset),
                description=(
                    f"Per day and {dataset} source: records fetched, valid and quarantined "
                    "(counted in the warehouse after the split wrote them), HTTP attempts, retries "
                    f"and failed attempts, and the raw asset's wall time; stored in {INGESTION_TABLE}."
                ),
                group_name="quality",
                kinds={"python", "pandas"},
                metadata={
                    "primary_key": INGESTION_KEY,
                    "table": INGESTION_TABLE,
                    "scope": dg.MetadataValue.json({"dataset": dataset}),
                },
                automation_condition=derived_automation_condition(),
            ),
        },
        check_specs=[schema_check_spec(["cleaned", dataset], compiled.cleaned_schema)],
        backfill_policy=dg.BackfillPolicy.single_run(),
        required_resource_keys={"io_manager"},
    )
    def _split(context: dg.AssetExecutionContext) -> Iterator[dg.Output]:
        started = pd.Timestamp.now()
        warehouse: PartitionedTableIOManager = context.resources.io_manager
        at = now_utc()
        bounds = partition_bounds(context)
        days = [d.isoformat() for d in partition_days(context)]
        split = DatasetSplit(compiled, context.run.run_id, at)
        cleaned_check = ChunkCheck(["cleaned", dataset], compiled.cleaned_schema)
        quarantined: list[pd.DataFrame] = []
        per_source: dict[str, dict[str, int]] = {}
        missing = {
            s.name: absent
            for s in sources
            if (absent := missing_raw_days(context.instance, s, days))
        }
        if missing:
            context.log.warning(f"{dataset}: no raw partition yet for {missing}")
        empty = DatasetSplit(compiled, "", at).split(_empty_raw(), "", {})

        def valid_chunks() -> Iterator[pd.DataFrame]:
            # The cleaned rows go to the warehouse chunk by chunk as the split makes them: a
            # day of millions of records is never held whole.
            yield empty.valid
            for source in sources:
                counts = per_source.setdefault(source.name, {"valid": 0, "quarantined": 0})
                for result in split_chunks(warehouse, split, source, bounds):
                    quarantined.append(result.quarantined)
                    counts["valid"] += len(result.valid)
                    counts["quarantined"] += len(result.quarantined)
                    yield result.valid

        common = {"missing_sources": dg.MetadataValue.json(missing), **where_it_ran()}

        def cleaned_metadata() -> dict[str, Any]:
            elapsed = round((pd.Timestamp.now() - started).total_seconds(), 3)
            return {
                "records_quarantined": sum(c["quarantined"] for c in per_source.values()),
                "per_source": dg.MetadataValue.json(
                    {
                        name: {"raw": c["valid"] + c["quarantined"], **c}
                        for name, c in per_source.items()
                    }
                ),
                "duration_s": elapsed,
                **common,
            }

        yield dg.Output(
            FrameStream(cleaned_check.watch(valid_chunks()), cleaned_metadata),
            output_name=_output_name(["cleaned", dataset]),
        )
        # Every chunk was validated on its way to the warehouse: the blocking verdict.
        yield cleaned_check.result()
        bad = pd.concat([empty.quarantined, *quarantined], ignore_index=True)[QUARANTINE_COLUMNS]
        bad["dataset"] = dataset
        yield dg.Output(
            bad,
            output_name=_output_name(quarantine_key(dataset).path),
            metadata={
                "dagster/row_count": len(bad),
                "per_source": dg.MetadataValue.json(
                    {name: c["quarantined"] for name, c in per_source.items()}
                ),
                "top_reasons": dg.MetadataValue.json(top_reasons(bad)),
                **common,
            },
        )
        del bad
        # Counted from what the two outputs above wrote, not from what the split meant to write.
        written = {
            "raw": count_by_day_source(
                warehouse, [TableRef("raw", s.name) for s in sources], bounds
            ),
            "cleaned": count_by_day_source(warehouse, [TableRef("cleaned", dataset)], bounds),
            "quarantine": count_by_day_source(
                warehouse, [TableRef.from_asset_key(QUARANTINE_TABLE.split("."))], bounds, dataset
            ),
        }
        ingestion = ingestion_frame(context.instance, sources, days, written, dataset)
        yield dg.Output(
            ingestion,
            output_name=_output_name(ingestion_key(dataset).path),
            metadata={"dagster/row_count": len(ingestion), **common},
        )

    return _split


def count_by_day_source(
    warehouse: PartitionedTableIOManager,
    tables: Sequence[TableRef],
    bounds: tuple,
    dataset: str | None = None,
) -> dict[tuple[str, str], int]:
    """Rows per (day ISO, source) in the tables (a raw table's source is its name)."""
    counts: Counter[tuple[str, str]] = Counter()
    for table in tables:
        is_raw = table.schema == "raw"
        columns = ["partition_date"] if is_raw else ["partition_date", "source"]
        scope = {"dataset": dataset} if dataset else None
        try:
            groups = warehouse.count_rows(table, bounds, columns, scope)
        except Exception as exc:
            if "does not exist" in str(exc):
                continue
            raise
        for day, *source, n in groups:
            counts[(_iso_day(day), table.table if is_raw else source[0])] += int(n)
    return dict(counts)


def _iso_day(day: Any) -> str:
    return pd.Timestamp(day).strftime("%Y-%m-%d")


def _empty_raw() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "partition_date": pd.Series(dtype="datetime64[ns]"),
            "_ingested_at": pd.Series(dtype="datetime64[ns, UTC]"),
            "_seq": pd.Series(dtype="int64"),
            "_record": pd.Series(dtype=object),
        }
    )


def _output_name(path: Sequence[str]) -> str:
    return "__".join(path)


def build_dataset_assets(
    compiled: CompiledDataset, sources: Sequence[SourceConfig]
) -> list[dg.AssetsDefinition]:
    """The split, features/ and metrics/ assets for one dataset fed by ``sources``."""
    dataset = compiled.name
    group_by = list(compiled.features_group_by)
    features_step = step(compiled.features)
    features_step.__name__ = f"{dataset}_features"

    @derived_asset(
        key=["features", dataset],
        deps=[dg.AssetKey(["cleaned", dataset])],
        description=f"Engineered features of cleaned {dataset}.",
        group_name=dataset,
        metadata=_table_metadata(compiled, "features"),
        check_specs=[schema_check_spec(["features", dataset], compiled.features_schema)],
        required_resource_keys={"io_manager"},
    )
    def _features(context: dg.AssetExecutionContext) -> Iterator[dg.Output | dg.AssetCheckResult]:
        """The cleaned partition read in chunks of whole groups (``features.group_by``), each
        chunk's features validated and written as it is made: a day is never held whole."""
        warehouse: PartitionedTableIOManager = context.resources.io_manager
        bounds = partition_bounds(context)
        cleaned = TableRef("cleaned", dataset)
        steps_run = StepLog()
        started = time.perf_counter()

        def features(frame: pd.DataFrame) -> pd.DataFrame:
            # Recorded call by call: the IO manager may ask for the next chunk from a worker
            # thread (another context) while it stores this one.
            with recording(steps_run):
                return features_step(frame)

        def chunks() -> Iterator[pd.DataFrame]:
            # An empty window first: the table and its columns exist even for a day of no rows.
            yield features(warehouse.read(cleaned, (bounds[0], bounds[0]), None))
            batches = warehouse.read_batches(
                cleaned, bounds, None, order_by=[*group_by, *compiled.sort_by]
            )
            for chunk in group_chunks(batches, group_by):
                yield features(chunk)

        def metadata() -> dict[str, Any]:
            return {
                "steps": dg.MetadataValue.json(steps_run.as_metadata()),
                "duration_s": round(time.perf_counter() - started, 3),
            }

        check = ChunkCheck(["features", dataset], compiled.features_schema)
        yield dg.Output(FrameStream(check.watch(chunks()), metadata))
        yield check.result()

    assets = [build_split_asset(compiled, sources), _features]
    if compiled.metrics_schema is None:
        return assets
    reads = {"columns": list(compiled.metrics_reads)} if compiled.metrics_reads else {}

    @derived_asset(
        key=["metrics", dataset],
        ins={"features": dg.AssetIn(key=["features", dataset], metadata=reads)},
        description=f"Daily metrics of {dataset}: one row per {', '.join(compiled.metrics_group_by)}.",
        group_name=dataset,
        metadata=_table_metadata(compiled, "metrics"),
    )
    @timed
    def _metrics(
        context: dg.AssetExecutionContext, features: pd.DataFrame
    ) -> dg.Output[pd.DataFrame]:
        metrics = compiled.metrics(features)
        return dg.Output(metrics, metadata={"dagster/row_count": len(metrics)})

    return [*assets, _metrics]
