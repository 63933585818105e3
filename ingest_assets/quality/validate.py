"""The record-level split and the value rules, read from the dataset's compiled schema.

``split_records`` splits one source's raw rows into valid and quarantined rows (the column-wise
split of ``records.split``); the scalar coercers below state the same value rules for one value
at a time (schema drift asks whether a text value would read as a number). No dagster here.
"""

from __future__ import annotations

import decimal
import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd

from ingest_assets.records.encode import NUMBER_PATTERN
from ingest_assets.records.split import (
    QUARANTINE_COLUMNS,
    SYSTEM_COLUMNS,
    DatasetSplit,
    SplitResult,
    schema_failures,
)

if TYPE_CHECKING:
    from ingest_assets.datasets import CompiledDataset

__all__ = [
    "PARSE_ERROR",
    "QUARANTINE_COLUMNS",
    "SYSTEM_COLUMNS",
    "CoercionError",
    "SplitResult",
    "schema_failures",
    "split_records",
    "to_float",
    "to_text",
    "to_whole",
]

PARSE_ERROR = "_parse_error"
_NUMBER = re.compile(NUMBER_PATTERN)


class CoercionError(ValueError):
    pass


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def to_text(value: Any) -> str | None:
    """Trimmed text; empty after trimming is null."""
    if _is_missing(value):
        return None
    if isinstance(value, dict | list):
        raise CoercionError(f"expected text, got a JSON {type(value).__name__}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def to_float(value: Any) -> float | None:
    """A number as JSON writes one (plus a leading ``+`` and blanks): no ``1_5``, no ``１２``."""
    if _is_missing(value):
        return None
    if isinstance(value, bool | dict | list):
        raise CoercionError(f"expected a number, got {value!r}")
    if isinstance(value, str):
        if not value.strip():
            return None
        if not _NUMBER.match(value):
            raise CoercionError(f"expected a number, got {value!r}")
    number = float(value)
    if math.isinf(number) or math.isnan(number):
        raise CoercionError(f"expected a finite number, got {value!r}")
    return number


def to_whole(value: Any) -> int | None:
    """A whole number, exactly: ``5`` and ``5.0`` are, ``5.5`` is not; ``9007199254740993`` is
    itself (a float would round it), past 64 bits is an error."""
    number = to_float(value)
    if number is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        exact: decimal.Decimal | float = decimal.Decimal(value)
    elif isinstance(value, str):
        exact = decimal.Decimal(value.strip())
    else:
        exact = number
    if exact != math.floor(exact):
        raise CoercionError(f"expected a whole number, got {value!r}")
    if not -(2**63) <= exact < 2**63:
        raise CoercionError(f"whole number out of the 64-bit range: {value!r}")
    return int(exact)


def split_records(
    raw: pd.DataFrame,
    *,
    source: str,
    dataset: CompiledDataset,
    mapping: Mapping[str, str],
    run_id: str,
    quarantined_at: pd.Timestamp,
) -> SplitResult:
    """Split one source's raw rows into cleaned rows and quarantine rows.

    Rows are put in the source's order first (``_seq`` within each day): which of two records
    with one key is the "earlier" (kept) one must not depend on the order a warehouse returns
    rows in.
    """
    if "_seq" in raw.columns:
        raw = raw.sort_values(["partition_date", "_seq"], kind="stable")
    return DatasetSplit(dataset, run_id, quarantined_at).split(raw, source, mapping)
