"""Asset checks: every table of DESIGN.md is checked, every check is partition-aware.

| asset | check | severity |
| --- | --- | --- |
| ``cleaned/<dataset>`` | ``pandera_schema``: the cleaned Pandera model | ERROR, **blocking** |
| ``features/*``, ``metrics/*`` | ``pandera_schema`` | ERROR, not blocking |
| ``quarantine/<dataset>`` | ``pandera_schema``; ``conservation_<source>``: raw = valid + quarantined | ERROR |
| ``quarantine/<dataset>`` | ``quarantine_rate_<source>``: more than half of a day's records quarantined | WARN |
| ``metrics/ingestion_<dataset>`` | ``pandera_schema`` (its ``records_conserved`` rule counts what was written) | ERROR |
| ``quarantine/history`` | ``pandera_schema`` | ERROR |
| ``raw/<source>`` | ``schema_drift``: new, missing or retyped fields, as the raw step measured them | WARN |
| ``raw/<source>`` | ``row_count_anomaly``: fewer than half the rows of the trailing days' median | WARN |

Freshness of ``raw/<source>`` is a ``FreshnessPolicy`` on the asset (``freshness_policy``): it
warns after ``freshness_warn_hours`` (sources.yaml) without a new materialization.

Schema checks validate ``lazy=True`` and put the failure count per ``column: check``, the failing
rows and a sample of failure cases (a table, with the rows' keys) into the check's metadata (the
pudl pattern: schema → check factory). A failing blocking check stops everything downstream of
``cleaned/`` in the same run; the other checks only report. The ``pandera_schema`` checks of
``cleaned/`` and ``features/`` run inside the steps that write them (``assets.schema_checks``).
"""

import datetime as dt
import json
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import dagster as dg
import pandas as pd
import pandera.pandas as pa

from ingest_assets.assets.common import daily_partitions, partition_bounds, partition_days
from ingest_assets.assets.datasets import (
    QUARANTINE_TABLE,
    count_by_day_source,
    quarantine_key,
    top_reasons,
)
from ingest_assets.assets.ingestion import latest_fetch_stats
from ingest_assets.assets.metadata import table_schema
from ingest_assets.assets.schema_checks import (
    IN_STEP_LAYERS,
    sample_table,
    schema_check_spec,
    validate_frame,
)
from ingest_assets.config import SourceConfig
from ingest_assets.datasets import Catalog, CompiledDataset
from ingest_assets.quality.drift import DriftReport, declared_fields
from ingest_assets.warehouse.common import TableRef

SAMPLE_ROWS = 10
# A day with more than this share of its records quarantined is worth a look.
MAX_QUARANTINE_SHARE = 0.5
# A day with fewer rows than this share of the trailing days' median is an anomaly.
MIN_ROW_COUNT_RATIO = 0.5
TRAILING_DAYS = 7


def schema_check(
    key: Sequence[str],
    schema: pa.DataFrameSchema,
    conform: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
) -> dg.AssetChecksDefinition:
    """One check named ``pandera_schema`` validating the asset's partition (or range) with its
    model, as its own step: the table comes in as the asset's frame (the small tables: metrics,
    quarantine). The tables of ``IN_STEP_LAYERS`` are checked inside their asset's step instead."""
    spec = schema_check_spec(key, schema)

    @dg.asset_check(
        asset=spec.asset_key,
        name=spec.name,
        description=spec.description,
        blocking=spec.blocking,
        partitions_def=spec.partitions_def,
        metadata=spec.metadata,
    )
    def _check(frame: pd.DataFrame) -> dg.AssetCheckResult:
        return validate_frame(schema, conform(frame) if conform else frame)

    return _check


def schema_checks(asset_keys: set[dg.AssetKey], catalog: Catalog) -> list[dg.AssetChecksDefinition]:
    """``pandera_schema`` on every asset whose table has a schema and is not checked in-step."""
    checks = []
    for key in sorted(asset_keys, key=lambda k: k.path):
        schema = table_schema(key, catalog)
        if schema is None or key.path[0] in IN_STEP_LAYERS:
            continue
        layer, name = key.path
        conform = None
        if name in catalog and catalog[name].schema(layer) is schema:
            dataset = catalog[name]
            conform = lambda frame, d=dataset, layer=layer: d.conform_table(frame, layer)  # noqa: E731
        checks.append(schema_check(key.path, schema, conform))
    return checks


def _per_day(frame: pd.DataFrame, days: Sequence[pd.Timestamp]) -> list[int]:
    counts = pd.to_datetime(frame["partition_date"]).value_counts()
    return [int(counts.get(day, 0)) for day in days]


def _days(context: dg.AssetCheckExecutionContext) -> list[pd.Timestamp]:
    return [pd.Timestamp(day) for day in partition_days(context)]


def conservation_check(source: SourceConfig) -> dg.AssetChecksDefinition:
    """raw = valid + quarantined for one source, per partition date."""

    @dg.asset_check(
        asset=quarantine_key(source.dataset),
        name=f"conservation_{source.name}",
        description=(
            f"Nothing of {source.name} is lost or doubled: each day, its raw records = its rows in "
            f"cleaned/{source.dataset} + its rows in quarantine/{source.dataset}."
        ),
        partitions_def=daily_partitions,
        # Counted by the warehouse: nothing is read out to be counted.
        additional_deps=[
            dg.AssetKey(["raw", source.name]),
            dg.AssetKey(["cleaned", source.dataset]),
        ],
        required_resource_keys={"io_manager"},
    )
    def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        days = [day.date().isoformat() for day in _days(context)]
        warehouse = context.resources.io_manager
        bounds = partition_bounds(context)
        raw = count_by_day_source(warehouse, [TableRef("raw", source.name)], bounds)
        valid = count_by_day_source(warehouse, [TableRef("cleaned", source.dataset)], bounds)
        quarantined = count_by_day_source(
            warehouse,
            [TableRef.from_asset_key(QUARANTINE_TABLE.split("."))],
            bounds,
            source.dataset,
        )
        key = source.name
        counts = {
            day: {
                "raw": raw.get((day, key), 0),
                "valid": valid.get((day, key), 0),
                "quarantined": quarantined.get((day, key), 0),
            }
            for day in days
        }
        broken = {day: c for day, c in counts.items() if c["raw"] != c["valid"] + c["quarantined"]}
        totals = {k: sum(c[k] for c in counts.values()) for k in ("raw", "valid", "quarantined")}
        description = (
            f"{source.name}: {totals['raw']} raw = {totals['valid']} valid + {totals['quarantined']} quarantined"
            if not broken
            else f"{source.name}: records lost or doubled on {', '.join(broken)}: "
            + "; ".join(
                f"{c['raw']} raw ≠ {c['valid']} valid + {c['quarantined']} quarantined"
                for c in broken.values()
            )
        )
        return dg.AssetCheckResult(
            passed=not broken,
            severity=dg.AssetCheckSeverity.ERROR,
            description=description,
            metadata={**totals, "per_day": dg.MetadataValue.json(counts)},
        )

    return _check


def quarantine_rate_check(source: SourceConfig) -> dg.AssetChecksDefinition:
    """Warn when most of a day's records of one source were quarantined, and say why."""

    @dg.asset_check(
        asset=quarantine_key(source.dataset),
        name=f"quarantine_rate_{source.name}",
        description=(
            f"At most {MAX_QUARANTINE_SHARE:.0%} of a day's {source.name} records are quarantined; "
            "the metadata lists the most frequent reasons."
        ),
        partitions_def=daily_partitions,
        additional_deps=[dg.AssetKey(["raw", source.name])],
        required_resource_keys={"io_manager"},
    )
    def _check(
        context: dg.AssetCheckExecutionContext, quarantined: pd.DataFrame
    ) -> dg.AssetCheckResult:
        days = _days(context)
        raw = count_by_day_source(
            context.resources.io_manager, [TableRef("raw", source.name)], partition_bounds(context)
        )
        totals = [raw.get((day.date().isoformat(), source.name), 0) for day in days]
        mine = quarantined[quarantined["source"] == source.name]
        rates = {}
        for day, total, bad in zip(days, totals, _per_day(mine, days), strict=True):
            rates[day.date().isoformat()] = {
                "raw": total,
                "quarantined": bad,
                "share": round(bad / total, 4) if total else 0.0,
            }
        high = [day for day, r in rates.items() if r["share"] > MAX_QUARANTINE_SHARE]
        reasons = top_reasons(mine)
        total = sum(r["raw"] for r in rates.values())
        description = f"{len(mine)} of {total} {source.name} records quarantined"
        if reasons:
            description += " — " + ", ".join(f"{reason} ×{n}" for reason, n in reasons.items())
        sample = sample_table(
            ["record", "errors"],
            (
                (r.record, "; ".join(e["message"] for e in json.loads(r.errors)))
                for r in mine.head(SAMPLE_ROWS).itertuples()
            ),
        )
        return dg.AssetCheckResult(
            passed=not high,
            severity=dg.AssetCheckSeverity.WARN,
            description=description,
            metadata={
                "quarantined": len(mine),
                "raw": total,
                "share": round(len(mine) / total, 4) if total else 0.0,
                "top_reasons": dg.MetadataValue.json(reasons),
                "per_day": dg.MetadataValue.json(rates),
                "sample": sample,
            },
        )

    return _check


def drift_check(source: SourceConfig, dataset: CompiledDataset) -> dg.AssetChecksDefinition:
    """Fields observed in a partition's records against the fields the source declares."""

    @dg.asset_check(
        asset=dg.AssetKey(["raw", source.name]),
        name="schema_drift",
        description=(
            f"The records of {source.name} carry the fields declared for it"
            + (" in sources.yaml" if source.fields is not None else " (the mapped fields)")
            + ", with their types: new, missing or retyped fields warn."
        ),
        partitions_def=daily_partitions,
    )
    def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        reports = {
            day.isoformat(): measured_drift(context.instance, source, dataset, day.isoformat())
            for day in partition_days(context)
        }
        drifted = {day: report for day, report in reports.items() if report.drifted}
        shown = next(iter(drifted.values()), None) or next(iter(reports.values()))
        description = (
            "; ".join(f"{day}: {r.describe()}" for day, r in drifted.items()) or shown.describe()
        )
        if shown.missing_required:
            description += f" — required {', '.join(shown.missing_required)} missing: those records are quarantined"
        return dg.AssetCheckResult(
            passed=not drifted,
            severity=dg.AssetCheckSeverity.WARN,
            description=description,
            metadata={
                "records": sum(r.records for r in reports.values()),
                "new_fields": dg.MetadataValue.json(shown.new_fields),
                "missing_fields": dg.MetadataValue.json(shown.missing_fields),
                "missing_required_fields": dg.MetadataValue.json(shown.missing_required),
                "type_changes": dg.MetadataValue.json(shown.type_changes),
                "observed_fields": dg.MetadataValue.json(shown.observed),
                "declared_fields": dg.MetadataValue.json(shown.declared),
                "per_day": dg.MetadataValue.json({day: r.summary() for day, r in reports.items()}),
            },
        )

    return _check


def measured_drift(
    instance: dg.DagsterInstance, source: SourceConfig, dataset: CompiledDataset, day: str
) -> DriftReport:
    """The drift the raw step measured for a day (from its latest materialization)."""
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(["raw", source.name]), asset_partitions=[day]),
        limit=1,
    )
    materialization = result.records[0].asset_materialization if result.records else None
    value = materialization.metadata.get("drift_reports") if materialization else None
    measured = (getattr(value, "data", None) or {}).get(day)
    if measured:
        return DriftReport(**measured)
    declared, complete = declared_fields(source, dataset)
    return DriftReport(records=0, declared=declared, complete_declaration=complete)


def _fetched(instance: dg.DagsterInstance, source: SourceConfig, day: dt.date) -> int | None:
    """Records fetched for a day, from the raw asset's latest ``fetch_stats`` (None: never)."""
    stats = latest_fetch_stats(instance, source, day.isoformat())
    return None if stats is None else int(stats.get("records_fetched", 0))


def row_count_verdict(
    instance: dg.DagsterInstance, source: SourceConfig, day: dt.date
) -> dict[str, Any]:
    """A day's row count, the trailing days' counts and median, and their ratio."""
    rows = _fetched(instance, source, day)
    trailing = {}
    for back in range(1, TRAILING_DAYS + 1):
        earlier = day - dt.timedelta(days=back)
        count = _fetched(instance, source, earlier)
        if count is not None:
            trailing[earlier.isoformat()] = count
    median = statistics.median(trailing.values()) if trailing else None
    ratio = round(rows / median, 4) if rows is not None and median else None
    if rows is None:
        text = "no fetch stats for this day in this Dagster instance"
    elif median is None:
        text = f"{rows} rows; no earlier days fetched yet: nothing to compare with"
    else:
        text = f"{rows} rows, {ratio:.0%} of the trailing median {median:g}"
    return {
        "rows": rows,
        "trailing_median": median,
        "ratio": ratio,
        "trailing": trailing,
        "text": text,
    }


def row_count_check(source: SourceConfig) -> dg.AssetChecksDefinition:
    """A day's row count against the median of the trailing days' (from the fetch stats)."""

    @dg.asset_check(
        asset=dg.AssetKey(["raw", source.name]),
        name="row_count_anomaly",
        description=(
            f"A day of {source.name} has at least {MIN_ROW_COUNT_RATIO:.0%} of the median row count "
            f"of the {TRAILING_DAYS} days before it (those that were fetched)."
        ),
        partitions_def=daily_partitions,
    )
    def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        days = {
            d.isoformat(): row_count_verdict(context.instance, source, d)
            for d in partition_days(context)
        }
        low = {
            d: v
            for d, v in days.items()
            if v["ratio"] is not None and v["ratio"] < MIN_ROW_COUNT_RATIO
        }
        shown = next(iter(low.values()), None) or next(iter(days.values()))
        description = "; ".join(f"{d}: {v['text']}" for d, v in low.items()) or shown["text"]
        return dg.AssetCheckResult(
            passed=not low,
            severity=dg.AssetCheckSeverity.WARN,
            description=description,
            metadata={
                "rows": shown["rows"],
                "trailing_median": shown["trailing_median"],
                "ratio": shown["ratio"],
                "per_day": dg.MetadataValue.json(
                    {
                        d: {k: v[k] for k in ("rows", "trailing_median", "ratio", "trailing")}
                        for d, v in days.items()
                    }
                ),
            },
        )

    return _check


def freshness_policy(source: SourceConfig) -> dg.FreshnessPolicy:
    """raw/<source> warns when not materialized for ``freshness_warn_hours``, fails at twice that.

    A freshness *policy* (evaluated by Dagster's freshness daemon, shown as the asset's freshness
    in the UI) rather than ``build_time_partition_freshness_checks``, which Dagster 1.13
    supersedes: those checks run inside every job that selects the raw assets, so a backfill or
    the demo of an old partition would report "overdue" each time. Freshness is a property of
    *now*, not of the partition being materialized.
    """
    hours = source.freshness_warn_hours
    return dg.FreshnessPolicy.time_window(
        warn_window=dt.timedelta(hours=hours), fail_window=dt.timedelta(hours=2 * hours)
    )


def build_quality_checks(
    sources: Sequence[SourceConfig], asset_keys: set[dg.AssetKey], catalog: Catalog
) -> list[dg.AssetChecksDefinition]:
    """Every check of this module for the configured sources."""
    checks = schema_checks(asset_keys, catalog)
    for source in sources:
        checks += [drift_check(source, catalog[source.dataset]), row_count_check(source)]
        if quarantine_key(source.dataset) in asset_keys:
            checks += [conservation_check(source), quarantine_rate_check(source)]
    return checks
