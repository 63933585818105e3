"""The automation condition of every asset downstream of raw/: each day follows its parents.

``AutomationCondition.eager()`` only looks at the latest partition and waits as long as any
parent is missing, so a late or corrected file for an older day never reaches ``cleaned/``.
``day_follows_parents`` is composed from the same building blocks, per partition:

- **requested** when a parent partition of the day was updated after the day was last requested
  (a late file, a corrected file, a re-fetch or a replay of a parent), once per update;
- only within a **look-back window** of the latest complete days (``INGEST_AUTOMATION_LOOKBACK_DAYS``,
  default 30), so a change to a very old day is a deliberate backfill, not a surprise;
- **not while** a parent, or the day itself, is being materialized (the update that finishes
  is then seen and the day requested once, afterwards);
- **a day with missing parents waits**, but only until they are overdue: a parent is overdue
  once ``INGEST_AUTOMATION_GRACE_DAYS`` (default 1) more whole days have ended after the day
  (with the default, 06-01 waits for a missing file until 06-03 00:00 UTC). The day then runs
  with the parents it has; a missing parent that lands later is an update like any other and
  runs the day again.
"""

from __future__ import annotations

import datetime as dt
import os

import dagster as dg

LOOKBACK_ENV = "INGEST_AUTOMATION_LOOKBACK_DAYS"
GRACE_ENV = "INGEST_AUTOMATION_GRACE_DAYS"
DEFAULT_LOOKBACK_DAYS = 30
DEFAULT_GRACE_DAYS = 1


def _days_from_env(name: str, default: int, minimum: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        days = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number of days, not {raw!r}") from None
    if days < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {days}")
    return days


def lookback_days() -> int:
    return _days_from_env(LOOKBACK_ENV, DEFAULT_LOOKBACK_DAYS, minimum=1)


def grace_days() -> int:
    return _days_from_env(GRACE_ENV, DEFAULT_GRACE_DAYS, minimum=0)


def day_follows_parents(
    lookback: int | None = None, grace: int | None = None
) -> dg.AutomationCondition:
    """The condition attached to every derived asset (``lookback``/``grace`` in whole days;
    unset: read from ``INGEST_AUTOMATION_LOOKBACK_DAYS`` / ``INGEST_AUTOMATION_GRACE_DAYS``)."""
    lookback = lookback_days() if lookback is None else lookback
    grace = grace_days() if grace is None else grace
    AC = dg.AutomationCondition

    in_window = AC.in_latest_time_window(dt.timedelta(days=lookback)).with_label(
        f"within the latest {lookback} days"
    )
    # A parent updated after the day was last requested. Only a request resets it, not the
    # day's own update: a parent updated while the day's run was already reading it runs the
    # day again. Both sides stay bare timed operands (no and/or inside the since), so when an
    # update and the reset fall on the same tick Dagster compares their timestamps and an
    # update made after the request still counts.
    parent_updated = (
        AC.any_deps_match(AC.newly_updated())
        .since(AC.newly_requested())
        .with_label("a parent updated since the day was last requested")
    )
    # ...unless every parent's latest data came from a run that materialized this asset too
    # (the whole pipeline for a day): that run has already followed it, unless the day failed
    # or never got written in it (a parent failed, its step was skipped).
    not_yet_followed = (
        AC.any_deps_match(~AC.missing() & ~AC.executed_with_root_target()).with_label(
            "a parent written by a run without this asset"
        )
        | AC.missing()
        | AC.execution_failed()
    ).with_label("not yet followed")
    parent_requested = AC.any_deps_match(AC.will_be_requested()).with_label(
        "a parent is requested on this tick"
    )
    condition = (
        in_window
        & ((parent_updated & not_yet_followed) | parent_requested)
        & ~AC.any_deps_in_progress()
        & ~AC.in_progress()
    )
    if grace > 0:
        not_overdue = AC.in_latest_time_window(dt.timedelta(days=grace)).with_label(
            f"within the latest {grace} day(s): missing parents are not overdue yet"
        )
        waiting = (AC.any_deps_missing() & not_overdue).with_label(
            "a parent is missing and not yet overdue"
        )
        condition = condition & ~waiting
    return condition.with_label("day_follows_parents")
