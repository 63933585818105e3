"""The quarantine history: what entered quarantine, and what left it, when and by which run.

``quarantine.records`` holds what is quarantined *now* (it is re-derived from the raw records
with today's rules on every materialization, so raw = valid + quarantined always holds).
The history keeps, per partition and source, one row per record that has been quarantined:

- ``quarantined``: still in ``quarantine.records``;
- ``replayed``: today's rules accept it; it left quarantine for ``cleaned/`` in the run
  ``replay_run_id`` at ``replayed_at``;
- ``superseded``: it is no longer among the source's raw records (the source was fetched again
  and sent something else); ``replay_run_id`` / ``replayed_at`` say when that was noticed.

A record is identified by its partition, its source and its original JSON (``record``);
identical records are told apart by their order. Updating the history is idempotent: the same
quarantine and raw records leave it unchanged. No dagster here.
"""

from __future__ import annotations

import pandas as pd

QUARANTINED, REPLAYED, SUPERSEDED = "quarantined", "replayed", "superseded"
HISTORY_COLUMNS = [
    "partition_date", "source", "dataset", "record", "errors", "status",
    "quarantined_run_id", "quarantined_at", "replay_run_id", "replayed_at",
]  # fmt: skip
_IDENTITY = ["partition_date", "source", "record"]
_SLOT = [*_IDENTITY, "copy"]


def empty_history() -> pd.DataFrame:
    return typed(pd.DataFrame({c: [] for c in HISTORY_COLUMNS}))


def typed(frame: pd.DataFrame) -> pd.DataFrame:
    """The history's column types, whatever the frame was built from."""
    out = frame[HISTORY_COLUMNS].copy()
    out["partition_date"] = pd.to_datetime(out["partition_date"]).astype("datetime64[ns]")
    for column in ("quarantined_at", "replayed_at"):
        out[column] = pd.to_datetime(out[column], utc=True).astype("datetime64[ns, UTC]")
    for column in (
        "source",
        "dataset",
        "record",
        "errors",
        "status",
        "quarantined_run_id",
        "replay_run_id",
    ):
        out[column] = out[column].astype(object).where(out[column].notna(), None)
    return out.reset_index(drop=True)


def _numbered(frame: pd.DataFrame) -> pd.DataFrame:
    """Number identical records so the n-th copy on one side meets the n-th on the other."""
    return frame.assign(copy=frame.groupby(_IDENTITY, sort=False).cumcount())


def update_history(
    prior: pd.DataFrame,
    quarantined: pd.DataFrame,
    raw_records: pd.DataFrame,
    *,
    run_id: str,
    at: pd.Timestamp,
) -> pd.DataFrame:
    """The history after a re-derivation of the same partitions.

    ``prior``: the history of those partitions so far; ``quarantined``: ``quarantine.records``
    as just derived; ``raw_records``: ``partition_date, source, record`` of every raw record.
    """
    prior = typed(prior) if len(prior) else empty_history()
    closed = prior[prior["status"] != QUARANTINED]
    open_ = _numbered(prior[prior["status"] == QUARANTINED])
    now = _numbered(
        quarantined[
            ["partition_date", "source", "dataset", "record", "errors", "run_id", "quarantined_at"]
        ]
    )
    now["partition_date"] = pd.to_datetime(now["partition_date"]).astype("datetime64[ns]")
    open_["partition_date"] = pd.to_datetime(open_["partition_date"]).astype("datetime64[ns]")

    merged = open_.merge(now, on=_SLOT, how="outer", suffixes=("", "_now"), indicator=True)
    still = merged[merged["_merge"] == "both"].assign(
        dataset=lambda d: d["dataset_now"], errors=lambda d: d["errors_now"]
    )
    entered = merged[merged["_merge"] == "right_only"].assign(
        dataset=lambda d: d["dataset_now"],
        errors=lambda d: d["errors_now"],
        status=QUARANTINED,
        quarantined_run_id=lambda d: d["run_id"],
        quarantined_at=lambda d: d["quarantined_at_now"],
        replay_run_id=None,
        replayed_at=pd.NaT,
    )
    left = merged[merged["_merge"] == "left_only"]
    left = left.assign(
        status=_released_or_gone(left, raw_records, quarantined),
        replay_run_id=run_id,
        replayed_at=at,
    )
    parts = [typed(part) for part in (closed, still, entered, left) if len(part)]
    history = pd.concat(parts, ignore_index=True) if parts else empty_history()
    order = ["partition_date", "source", "status", "record", "quarantined_at"]
    return history.sort_values(order, kind="stable").reset_index(drop=True)


def _released_or_gone(
    left: pd.DataFrame, raw_records: pd.DataFrame, quarantined: pd.DataFrame
) -> list[str]:
    """``replayed`` while the raw records still hold a copy that is not quarantined."""
    if left.empty:
        return []
    raw = raw_records.assign(
        partition_date=pd.to_datetime(raw_records["partition_date"]).astype("datetime64[ns]")
    )
    held = raw.groupby(_IDENTITY).size()
    q = quarantined.assign(
        partition_date=pd.to_datetime(quarantined["partition_date"]).astype("datetime64[ns]")
    )
    held = held.sub(q.groupby(_IDENTITY).size(), fill_value=0)
    left = left.assign(left_copy=left.groupby(_IDENTITY, sort=False).cumcount())
    statuses = []
    for row in left.itertuples(index=False):
        available = held.get((row.partition_date, row.source, row.record), 0)
        statuses.append(REPLAYED if row.left_copy < available else SUPERSEDED)
    return statuses


def replayed_in(history: pd.DataFrame, run_id: str) -> pd.DataFrame:
    """The rows a run took out of quarantine into ``cleaned/``."""
    return history[(history["status"] == REPLAYED) & (history["replay_run_id"] == run_id)]
