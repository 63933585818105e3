"""What every asset shares: the daily partitions and reading a partition window."""

import datetime as dt
import time
from collections.abc import Callable
from functools import wraps
from typing import Any

import dagster as dg
import pandas as pd

from ingest_assets.automation.conditions import day_follows_parents

START_DATE = "2024-01-01"
daily_partitions = dg.DailyPartitionsDefinition(start_date=START_DATE, timezone="UTC")


def partition_days(context: dg.AssetExecutionContext) -> list[dt.date]:
    """Every date in the run's partition window (one day, or a backfill range)."""
    window = context.partition_time_window
    days, day = [], window.start.date()
    while day < window.end.date():
        days.append(day)
        day += dt.timedelta(days=1)
    return days


def partition_bounds(context: dg.AssetExecutionContext) -> tuple[dt.date, dt.date]:
    """The run's partition window as ``[first day, day after the last)``, as the warehouse
    filters it."""
    window = context.partition_time_window
    return window.start.date(), window.end.date()


def now_utc() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC").floor("us")


def retry_policy(max_retries: int, delay_s: float, backoff: str, jitter: str) -> dg.RetryPolicy:
    return dg.RetryPolicy(
        max_retries=max_retries,
        delay=delay_s,
        backoff=dg.Backoff.EXPONENTIAL if backoff == "exponential" else dg.Backoff.LINEAR,
        jitter={"full": dg.Jitter.FULL, "plus_minus": dg.Jitter.PLUS_MINUS}.get(jitter),
    )


def timed(fn: Callable[..., dg.Output]) -> Callable[..., dg.Output]:
    """Add the asset body's wall time as ``duration_s`` to its output metadata.

    ``functools.wraps`` keeps the signature, so Dagster still sees the context and the inputs.
    """

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> dg.Output:
        started = time.perf_counter()
        output = fn(*args, **kwargs)
        duration = round(time.perf_counter() - started, 3)
        return output.with_metadata({**output.metadata, "duration_s": duration})

    return wrapper


def derived_automation_condition() -> dg.AutomationCondition:
    """When a partition downstream of raw/ is requested automatically."""
    return day_follows_parents()


def derived_asset(**kwargs: Any) -> Callable[..., dg.AssetsDefinition]:
    """``dg.asset`` with what every asset downstream of raw/ shares.

    Daily partitions, a backfill range in one run, and ``day_follows_parents`` automation:
    every day in the look-back window follows its parents' updates (late, corrected, replayed
    data), waiting for missing parents only until they are overdue.
    """
    shared: dict[str, Any] = {
        "kinds": {"python", "pandas"},
        "partitions_def": daily_partitions,
        "backfill_policy": dg.BackfillPolicy.single_run(),
        "automation_condition": derived_automation_condition(),
    }
    return dg.asset(**{**shared, **kwargs})
