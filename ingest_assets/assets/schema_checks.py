"""The ``pandera_schema`` checks: a Pandera schema over an asset's partition, as check results.

The tables of ``IN_STEP_LAYERS`` (``cleaned/``, ``features/``: one row per record, millions a
day) are checked inside the step that writes them: ``ChunkCheck`` validates each chunk on its
way to the IO manager (``SchemaRun``: bounded memory, the model's key held across chunks), and
the step yields the verdict right after the output is stored (an ``AssetCheckSpec`` of the
asset, Dagster's in-step check). So a day is validated without being read back from the
warehouse. A blocking in-step check that fails fails the step once its outputs are stored, and
nothing downstream runs, as with a separate blocking check. Re-checking a stored partition means
materializing the asset again. The smaller tables (metrics, quarantine) are checked by separate
asset checks that load the asset (``assets.checks``).
"""

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import dagster as dg
import pandas as pd
import pandera.pandas as pa

from ingest_assets.assets.common import daily_partitions
from ingest_assets.quality.chunked import SchemaRun
from ingest_assets.warehouse.preview import mask_secrets

CHECK_NAME = "pandera_schema"
# Layers whose tables are one row per record: checked in the step, on the chunks it writes.
IN_STEP_LAYERS = ("cleaned", "features")


def sample_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> dg.TableMetadataValue:
    """Rows as a table in the UI (text cells, cut at 120 characters, secret values masked)."""

    def cell(value: Any) -> str | None:
        return None if value is None else mask_secrets(str(value))[:120]

    return dg.MetadataValue.table(
        records=[
            dg.TableRecord({name: cell(v) for name, v in zip(header, row, strict=True)})
            for row in rows
        ],
        schema=dg.TableSchema(columns=[dg.TableColumn(name, "string") for name in header]),
    )


def check_result(
    name: str, run: SchemaRun, asset_key: dg.AssetKey | None = None
) -> dg.AssetCheckResult:
    """A model's run over a table (see ``SchemaRun``) as a check result; failures are metadata.

    ``asset_key`` names the asset when the result comes from the asset's own step."""
    target: dict[str, Any] = (
        {"asset_key": asset_key, "check_name": CHECK_NAME} if asset_key is not None else {}
    )
    if run.passed:
        return dg.AssetCheckResult(
            **target,
            passed=True,
            description=f"{run.rows} rows satisfy {name}",
            metadata={"rows_checked": run.rows, "failing_rows": 0, "failures": 0},
        )
    by_check = run.by_check
    return dg.AssetCheckResult(
        **target,
        passed=False,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"{run.failing_rows} of {run.rows} rows break {name}: "
        + ", ".join(list(by_check)[:5]),
        metadata={
            "rows_checked": run.rows,
            "failing_rows": run.failing_rows,
            "failures": sum(by_check.values()),
            "failures_by_check": dg.MetadataValue.json(by_check),
            "sample": sample_table(["column", "check", "value", "row"], run.sample),
        },
    )


def validate_frame(schema: pa.DataFrameSchema, df: pd.DataFrame) -> dg.AssetCheckResult:
    """Run a Pandera schema lazily over a frame; failures become metadata, never exceptions."""
    return check_result(str(schema.name), SchemaRun(schema).validate_all([df]))


def schema_rules(schema: pa.DataFrameSchema) -> dict[str, Any]:
    """The rules of a schema in words, shown with the check definition in the UI."""
    rules: dict[str, Any] = {}
    for name, column in schema.columns.items():
        parts = [str(column.dtype), "nullable" if column.nullable else "required"]
        parts += [check.error or check.name for check in column.checks]
        rules[name] = ", ".join(parts)
    if schema.checks:
        rules["(rows)"] = ", ".join(check.name for check in schema.checks)
    if schema.unique:
        rules["(unique)"] = ", ".join(schema.unique)
    return rules


def schema_check_spec(key: Sequence[str], schema: pa.DataFrameSchema) -> dg.AssetCheckSpec:
    """The ``pandera_schema`` check of an asset: its name, words, rules and blocking (on
    ``cleaned/``, whose invalid rows must not reach anything downstream)."""
    asset = dg.AssetKey(list(key))
    blocking = key[0] == "cleaned"
    description = f"Every row of {'/'.join(key)} satisfies the Pandera schema {schema.name}" + (
        " (blocking: a failure stops everything downstream in the run)." if blocking else "."
    )
    return dg.AssetCheckSpec(
        CHECK_NAME,
        asset=asset,
        description=description,
        blocking=blocking,
        partitions_def=daily_partitions,
        metadata={"schema": str(schema.name), "rules": dg.MetadataValue.json(schema_rules(schema))},
    )


class ChunkCheck:
    """The in-step ``pandera_schema`` check of one asset of ``IN_STEP_LAYERS``.

    ``watch`` passes the asset's chunks through, validating each (an empty chunk, which only
    creates the table, has no rows to check); ``result`` is the verdict over every row written.
    """

    def __init__(self, key: Sequence[str], schema: pa.DataFrameSchema) -> None:
        self.key = dg.AssetKey(list(key))
        self.schema = schema
        self.run = SchemaRun(schema)

    def watch(self, chunks: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for chunk in chunks:
            if len(chunk):
                self.run.validate(chunk)
            yield chunk

    def result(self) -> dg.AssetCheckResult:
        return check_result(str(self.schema.name), self.run, self.key)
