"""Pandera models of the tables every dataset shares: ingestion metrics and quarantine.

A dataset's own tables (``cleaned``, ``features``, ``metrics``) get their schemas from its
declaration (``ingest_assets.datasets``); these are the project's own tables, the same for
every dataset. The asset checks validate them with these models, ``lazy=True``. No dagster here.
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
    # Not required: quarantine rows written before provenance existed have no such column.
    source_ref: Series[str] | None = pa.Field(
        nullable=True,
        alias="_source_ref",
        description="Where the record came from (archive object and position, or file line).",
    )


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


# Pandera imports its pandas backends (and hypothesis, about 1.5 s) on the first validation in a
# process; registering them when the models load moves that to the code location's start-up,
# out of every run's first check.
pa.DataFrameSchema.register_default_backends(pd.DataFrame)
