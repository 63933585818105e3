"""Composable processing steps and the timing/logging decorator they share.

A step takes a DataFrame and returns a new one; it never mutates its input. ``pipeline``
composes steps in order. ``@step`` logs rows in/out and duration, and records them in the
active ``StepLog`` so an asset can publish them as metadata.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
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
        """Rows and seconds per step, summed over the chunks it ran on."""
        summed: dict[str, dict[str, Any]] = {}
        for t in self.timings:
            total = summed.setdefault(t.name, {"rows_in": 0, "rows_out": 0, "seconds": 0.0})
            total["rows_in"] += t.rows_in
            total["rows_out"] += t.rows_out
            total["seconds"] += t.seconds
        return {
            name: {**total, "seconds": round(total["seconds"], 4)} for name, total in summed.items()
        }


_active: contextvars.ContextVar[StepLog | None] = contextvars.ContextVar("step_log", default=None)


@contextmanager
def recording(step_log: StepLog | None = None) -> Iterator[StepLog]:
    """Collect the timings of every step run inside the block (into ``step_log``, if given)."""
    step_log = StepLog() if step_log is None else step_log
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


def group_chunks(chunks: Iterable[pd.DataFrame], by: Sequence[str]) -> Iterator[pd.DataFrame]:
    """Chunks of a frame ordered by ``by``, re-cut so that no group of ``by`` spans two.

    A step that computes within groups (min-max, z-score, rolling means) then runs on each chunk
    as on the whole frame; a chunk holds at least one whole group.
    """
    carry: pd.DataFrame | None = None
    for chunk in chunks:
        if carry is not None and len(carry):
            chunk = pd.concat([carry, chunk], ignore_index=True)
        if chunk.empty:
            continue
        keys = chunk[list(by)]
        in_last_group = (keys == keys.iloc[-1]).all(axis=1).to_numpy()
        cut = int(in_last_group.argmax())  # the last group's rows are the chunk's tail
        if cut:
            yield chunk.iloc[:cut].reset_index(drop=True)
        carry = chunk.iloc[cut:]
    if carry is not None and len(carry):
        yield carry.reset_index(drop=True)


def pipeline(*steps: Step) -> Step:
    """Compose steps left to right: ``pipeline(a, b)(df) == b(a(df))``."""

    def run(df: pd.DataFrame) -> pd.DataFrame:
        for one in steps:
            df = one(df)
        return df

    run.__name__ = " → ".join(getattr(s, "__name__", "step") for s in steps)
    return run
