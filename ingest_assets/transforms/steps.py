"""Composable processing steps and the timing/logging decorator they share.

A step takes a DataFrame and returns a new one; it never mutates its input. ``pipeline``
composes steps in order. ``@step`` logs rows in/out and duration, and records them in the
active ``StepLog`` so an asset can publish them as metadata.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import wraps
from typing import Any

import pandas as pd

log = logging.getLogger("ingest_assets.steps")
Step = Callable[[pd.DataFrame], pd.DataFrame]


@dataclass
class StepTiming:
    name: str
    rows_in: int
    rows_out: int
    seconds: float


@dataclass
class StepLog:
    timings: list[StepTiming] = field(default_factory=list)

    def as_metadata(self) -> dict[str, Any]:
        return {
            t.name: {"rows_in": t.rows_in, "rows_out": t.rows_out, "seconds": round(t.seconds, 4)}
            for t in self.timings
        }


_active: contextvars.ContextVar[StepLog | None] = contextvars.ContextVar("step_log", default=None)


@contextmanager
def recording() -> Iterator[StepLog]:
    """Collect the timings of every step run inside the block."""
    step_log = StepLog()
    token = _active.set(step_log)
    try:
        yield step_log
    finally:
        _active.reset(token)


def _rows(value: Any) -> int:
    return len(value) if hasattr(value, "__len__") else -1


def step(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Time and log a processing step without touching its logic."""

    @wraps(fn)
    def wrapper(df: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        result = fn(df, *args, **kwargs)
        elapsed = time.perf_counter() - start
        timing = StepTiming(fn.__name__, _rows(df), _rows(result), elapsed)
        log.info("%s: %d → %d rows in %.3fs", timing.name, timing.rows_in, timing.rows_out, elapsed)
        step_log = _active.get()
        if step_log is not None:
            step_log.timings.append(timing)
        return result

    return wrapper


def pipeline(*steps: Step) -> Step:
    """Compose steps left to right: ``pipeline(a, b)(df) == b(a(df))``."""

    def run(df: pd.DataFrame) -> pd.DataFrame:
        for one in steps:
            df = one(df)
        return df

    run.__name__ = " → ".join(getattr(s, "__name__", "step") for s in steps)
    return run
