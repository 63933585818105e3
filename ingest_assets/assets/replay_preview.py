"""A replay's preview: what ``replay_quarantine`` would release, before it writes anything.

The job ``replay_quarantine_preview`` (same partitions and ``source`` config as the replay)
splits the stored raw partitions again with today's declarations and mappings, exactly as the
replay's split does (every source of each dataset, in order, so duplicates are judged as the
replay judges them), keeps only what would be quarantined, and compares it with the quarantine
as stored: per dataset and check, how many quarantined rows would now be accepted and how many
would stay, with examples of each, as the op's metadata (tables in the UI). Nothing is written.
"""

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

import dagster as dg
import pandas as pd

from ingest_assets.assets.common import daily_partitions, now_utc
from ingest_assets.assets.datasets import split_chunks
from ingest_assets.assets.replay import replay_config_class
from ingest_assets.config import SourceConfig
from ingest_assets.datasets import Catalog
from ingest_assets.records.split import DatasetSplit
from ingest_assets.warehouse.common import TableRef

PREVIEW_JOB = "replay_quarantine_preview"
EXAMPLES = 5
_KEY = ["partition_date", "source", "record"]


def _checks(errors: str) -> list[str]:
    return sorted({f"{e.get('column') or '(record)'}: {e['check']}" for e in json.loads(errors)})


def preview_dataset(
    warehouse: Any,
    catalog: Catalog,
    dataset: str,
    sources: Sequence[SourceConfig],
    bounds: tuple,
    run_id: str,
) -> dict[str, Any]:
    """Today's verdict on the quarantined rows of one dataset in the window."""
    split = DatasetSplit(catalog[dataset], run_id, now_utc())
    again = [
        result.quarantined[_KEY + ["errors"]]
        for source in sources
        for result in split_chunks(warehouse, split, source, bounds)
    ]
    stored = pd.concat(
        [
            chunk[chunk["dataset"] == dataset]
            for chunk in warehouse.read_batches(
                TableRef("quarantine", "records"),
                bounds,
                [*_KEY, "dataset", "errors"],
                order_by=["partition_date", "source"],
            )
        ]
        or [pd.DataFrame(columns=[*_KEY, "dataset", "errors"])],
        ignore_index=True,
    )
    now = pd.concat(again or [pd.DataFrame(columns=[*_KEY, "errors"])], ignore_index=True)
    for frame in (stored, now):
        frame["partition_date"] = pd.to_datetime(frame["partition_date"]).dt.date.astype(str)
    still = stored.merge(now[_KEY].drop_duplicates(), on=_KEY, how="left", indicator=True)
    accepted = still[still["_merge"] == "left_only"]
    staying = still[still["_merge"] == "both"]
    newly = now.merge(stored[_KEY].drop_duplicates(), on=_KEY, how="left", indicator=True)
    newly = newly[newly["_merge"] == "left_only"]
    by_check: dict[str, Counter] = {"accepted": Counter(), "stay": Counter()}
    for label, frame in (("accepted", accepted), ("stay", staying)):
        for errors in frame["errors"]:
            by_check[label].update(_checks(errors))
    return {
        "dataset": dataset,
        "quarantined": len(stored),
        "would_accept": len(accepted),
        "would_stay": len(staying),
        "newly_quarantined": len(newly),
        "by_check": {
            check: {"accept": by_check["accepted"][check], "stay": by_check["stay"][check]}
            for check in sorted(set(by_check["accepted"]) | set(by_check["stay"]))
        },
        "accepted_examples": accepted[["source", "record", "errors"]].head(EXAMPLES),
        "staying_examples": staying[["source", "record", "errors"]].head(EXAMPLES),
    }


def _table(rows: list[dict[str, Any]], columns: Sequence[str]) -> dg.TableMetadataValue:
    return dg.MetadataValue.table(
        records=[dg.TableRecord({c: str(r[c])[:200] for c in columns}) for r in rows],
        schema=dg.TableSchema(columns=[dg.TableColumn(c, "string") for c in columns]),
    )


def build_preview_job(sources: Sequence[SourceConfig], catalog: Catalog) -> dg.JobDefinition:
    """The dry run of ``replay_quarantine``: counts and examples, nothing written."""
    ReplayConfig = replay_config_class(sources)

    @dg.op(name="preview_replay", out=dg.Out(dg.Nothing), required_resource_keys={"io_manager"})
    def preview_replay(context: dg.OpExecutionContext, config: ReplayConfig) -> dg.Output:  # type: ignore[valid-type]
        """Split the stored raw partitions with today's rules; compare with the quarantine."""
        window = context.partition_time_window
        bounds = (window.start.date(), window.end.date())
        scope = config.source.value if config.source else None
        chosen = [s for s in sources if scope in (None, s.name)]
        datasets = list(dict.fromkeys(s.dataset for s in chosen))
        reports = [
            preview_dataset(
                context.resources.io_manager,
                catalog,
                dataset,
                [s for s in sources if s.dataset == dataset],
                bounds,
                context.run.run_id,
            )
            for dataset in datasets
        ]
        check_rows = [
            {
                "dataset": r["dataset"],
                "check": check,
                "would_accept": n["accept"],
                "would_stay": n["stay"],
            }
            for r in reports
            for check, n in r["by_check"].items()
        ]
        examples = [
            {"dataset": r["dataset"], "verdict": verdict, **row}
            for r in reports
            for verdict, frame in (
                ("accept", r["accepted_examples"]),
                ("stay", r["staying_examples"]),
            )
            for row in frame.to_dict("records")
        ]
        for r in reports:
            context.log.info(
                f"{r['dataset']}: of {r['quarantined']} quarantined rows, today's rules would "
                f"accept {r['would_accept']} and keep {r['would_stay']}"
                + (
                    f"; {r['newly_quarantined']} valid rows would be quarantined"
                    if r["newly_quarantined"]
                    else ""
                )
            )
        summary = {
            r["dataset"]: {
                k: r[k] for k in ("quarantined", "would_accept", "would_stay", "newly_quarantined")
            }
            for r in reports
        }
        return dg.Output(
            None,
            metadata={
                "scope": scope or "all sources",
                "summary": dg.MetadataValue.json(summary),
                "would_accept": sum(r["would_accept"] for r in reports),
                "would_stay": sum(r["would_stay"] for r in reports),
                "by_check": _table(check_rows, ["dataset", "check", "would_accept", "would_stay"]),
                "examples": _table(examples, ["dataset", "verdict", "source", "record", "errors"]),
            },
        )

    @dg.job(
        name=PREVIEW_JOB,
        partitions_def=daily_partitions,
        description=(
            "Dry run of replay_quarantine: per dataset and check, how many quarantined rows "
            "today's rules and mappings would accept or keep, with examples. Writes nothing."
        ),
        tags={"purpose": "replay-preview"},
    )
    def replay_quarantine_preview() -> None:
        preview_replay()

    return replay_quarantine_preview
