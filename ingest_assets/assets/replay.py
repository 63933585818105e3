"""Quarantine replay: re-validate quarantined records with today's rules and mappings.

How it works, and why this way
------------------------------
``cleaned/<dataset>`` and ``quarantine/<dataset>`` (the dataset's rows of the table
``quarantine.records``) are never edited in place: both are outputs of the dataset's one split
(``<dataset>_split``, ``records.split``) of ``raw/<source>`` (which keeps every record's JSON in
``_record``), and the IO manager replaces whole partitions. So "replaying" a
partition means deriving it again with the rules and mappings of today's code:

    raw/* (not fetched again) ──> quarantine/* + cleaned/* ──> features/* ──> metrics/*
                                               └──> quarantine/history (what left quarantine)

The job ``replay_quarantine`` materializes everything downstream of ``raw/`` for the partition
(or range) it is launched for, without fetching anything. Records that today's rules accept move
from quarantine into ``cleaned/``; the others stay, with today's reasons. Because both tables
come from the same raw rows in the same run, raw = valid + quarantined holds by construction
(the ``conservation_<source>`` checks verify it), so a record is never lost nor present twice.
A second replay, or a normal re-run of the pipeline for that day, derives the same rows again:
idempotent, and nothing is "resurrected" twice. Every dataset of a partition is re-derived, not
only the chosen source's: a dataset's split covers all of its sources, and keeping its
quarantine and ``cleaned/*`` from different rule versions would break conservation.

What moved is recorded in ``quarantine/history`` (``quality.history``): one row per record ever
quarantined in a partition, with ``status`` ``quarantined``, ``replayed`` (with ``replay_run_id``
and ``replayed_at``) or ``superseded`` (the source sent something else since). The history is
updated by every derivation (a scheduled re-run after a rule fix also releases records, and says
so), comparing the history as stored with the new quarantine; it is the one asset that reads its
own stored partitions, through the same IO manager that writes them.

Launching a replay
------------------
In the UI: the job ``replay_quarantine``, a partition (or a range, as one backfill run) and,
optionally, the config ``source`` (a list of the configured sources): the source whose replay
the run reports. From a shell, with ``replay.yaml`` holding
``ops: {quarantine__history: {config: {source: partner_feed}}}``::

    dagster job execute -m ingest_assets.definitions -j replay_quarantine -c replay.yaml \
      --tags '{"dagster/partition": "2024-06-01"}'

    # a range, in one run:
    --tags '{"dagster/asset_partition_range_start": "2024-06-01",
             "dagster/asset_partition_range_end": "2024-06-30"}'
"""

import enum
from collections.abc import Sequence
from typing import Any

import dagster as dg
import pandas as pd
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from ingest_assets.assets.common import daily_partitions, derived_asset, now_utc, partition_bounds
from ingest_assets.assets.datasets import quarantine_key
from ingest_assets.config import SourceConfig
from ingest_assets.quality.history import (
    QUARANTINED,
    SUPERSEDED,
    empty_history,
    replayed_in,
    update_history,
)
from ingest_assets.warehouse.common import TableRef, WarehouseError

REPLAY_JOB = "replay_quarantine"
HISTORY_KEY = dg.AssetKey(["quarantine", "history"])
HISTORY_OP = "quarantine__history"
SAMPLE_ROWS = 10


def stored_partitions(context: dg.AssetExecutionContext) -> pd.DataFrame | None:
    """The asset's rows for the run's partitions as the warehouse holds them before this run."""
    with dg.build_input_context(
        asset_key=context.asset_key,
        asset_partition_key_range=context.partition_key_range,
        asset_partitions_def=daily_partitions,
    ) as input_context:
        try:
            return context.resources.io_manager.load_input(input_context)
        except WarehouseError as exc:
            if "does not exist" in str(exc):
                return None
            raise


def replay_config_class(sources: Sequence[SourceConfig]) -> type[dg.Config]:
    """The replay's config: an optional source, one of the configured ones (a list in the UI)."""
    source_name = enum.Enum("SourceName", {s.name: s.name for s in sources})

    class ReplayConfig(dg.Config):
        source: source_name | None = None  # type: ignore[valid-type]

    return ReplayConfig


def _moved_sample(moved: pd.DataFrame) -> str:
    lines = ["| source | record | was quarantined for |", "|---|---|---|"]
    for row in moved.head(SAMPLE_ROWS).itertuples():
        record = str(row.record).replace("|", "\\|")[:120]
        lines.append(f"| {row.source} | {record} | {str(row.errors).replace('|', '/')[:160]} |")
    return "\n".join(lines)


def build_history_asset(sources: Sequence[SourceConfig]) -> dg.AssetsDefinition:
    """quarantine/history: the ledger of what entered and what left quarantine."""
    datasets = list(dict.fromkeys(s.dataset for s in sources))
    ins = {f"quarantined_{d}": dg.AssetIn(key=quarantine_key(d)) for d in datasets}
    ReplayConfig = replay_config_class(sources)

    @derived_asset(
        key=HISTORY_KEY,
        ins=ins,
        # Released records are in cleaned/ only once cleaned/ is written (and its blocking check
        # passed): the history waits for it.
        deps=[
            *sorted({dg.AssetKey(["cleaned", d]) for d in datasets}, key=str),
            *(dg.AssetKey(["raw", s.name]) for s in sources),
        ],
        description=(
            "Every record that has been quarantined, per partition: still quarantined, replayed "
            "into cleaned/ (by which run, when) or superseded by a new fetch. Updated by every "
            "derivation; the job replay_quarantine re-derives partitions with today's rules."
        ),
        group_name="quality",
        required_resource_keys={"io_manager"},
        metadata={"json_columns": ["record", "errors"]},
    )
    def quarantine_history(
        context: dg.AssetExecutionContext,
        config: ReplayConfig,  # type: ignore[valid-type]
        **quarantined_by_dataset: pd.DataFrame,
    ) -> dg.Output[pd.DataFrame]:
        run_id = context.run.run_id
        quarantined = pd.concat(list(quarantined_by_dataset.values()), ignore_index=True)
        prior = stored_partitions(context)
        prior = empty_history() if prior is None else prior
        history = update_history(
            prior,
            quarantined,
            raw_copies(context, sources, prior),
            run_id=run_id,
            at=now_utc(),
        )
        scope = config.source.value if config.source else None
        moved = replayed_in(history, run_id)
        in_scope = history if scope is None else history[history["source"] == scope]
        moved_in_scope = moved if scope is None else moved[moved["source"] == scope]

        def by_source(frame: pd.DataFrame) -> dict[str, int]:
            counts = frame["source"].value_counts()
            return {s.name: int(counts.get(s.name, 0)) for s in sources if scope in (None, s.name)}

        superseded = in_scope[
            (in_scope["status"] == SUPERSEDED) & (in_scope["replay_run_id"] == run_id)
        ]
        still = in_scope[in_scope["status"] == QUARANTINED]
        context.log.info(
            f"{len(moved_in_scope)} records of {scope or 'all sources'} left quarantine for cleaned/ "
            f"in this run; {len(still)} stay quarantined"
        )
        metadata: dict[str, Any] = {
            "dagster/row_count": len(history),
            "scope": scope or "all sources",
            "replayed": len(moved_in_scope),
            "replayed_by_source": dg.MetadataValue.json(by_source(moved_in_scope)),
            "still_quarantined_by_source": dg.MetadataValue.json(by_source(still)),
            "superseded": len(superseded),
        }
        if len(moved_in_scope):
            metadata["replayed_sample"] = dg.MetadataValue.md(_moved_sample(moved_in_scope))
        return dg.Output(history, metadata=metadata)

    return quarantine_history


def raw_copies(
    context: dg.AssetExecutionContext, sources: Sequence[SourceConfig], prior: pd.DataFrame
) -> pd.DataFrame:
    """``partition_date, source, record`` of the raw records that were quarantined before.

    Only those matter to the history (was a record released, or is it gone?); the raw
    partitions are read in chunks and filtered, never held whole.
    """
    wanted = set(prior.loc[prior["status"] == QUARANTINED, "record"]) if len(prior) else set()
    bounds = partition_bounds(context)
    parts = [pd.DataFrame({"partition_date": [], "source": [], "record": []})]
    if wanted:
        for source in sources:
            chunks = context.resources.io_manager.read_batches(
                TableRef("raw", source.name), bounds, ["partition_date", "_record"], []
            )
            for chunk in chunks:
                hit = chunk[chunk["_record"].isin(wanted)]
                parts.append(
                    pd.DataFrame(
                        {
                            "partition_date": hit["partition_date"],
                            "source": source.name,
                            "record": hit["_record"],
                        }
                    )
                )
    return pd.concat(parts, ignore_index=True)


def build_replay_job(sources: Sequence[SourceConfig]) -> UnresolvedAssetJobDefinition:
    """Everything downstream of raw/, for a partition or a range, without fetching again."""
    raw = dg.AssetSelection.assets(*(dg.AssetKey(["raw", s.name]) for s in sources))
    return dg.define_asset_job(
        REPLAY_JOB,
        selection=raw.downstream() - raw,
        description=(
            "Re-validate quarantined records against today's rules and mappings: re-derive "
            "quarantine/<dataset>, cleaned/, features/, metrics/ and quarantine/history from the "
            "stored raw records of the chosen partitions (nothing is fetched). Config: source, "
            "the one to report on (optional)."
        ),
        tags={"purpose": "replay"},
    )


def replay_run_config(source: str | None = None) -> dict[str, Any]:
    """Run config of ``replay_quarantine`` reporting on one source (or all)."""
    return {"ops": {HISTORY_OP: {"config": {"source": source}}}}
