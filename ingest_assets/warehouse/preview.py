"""A few rows of a stored table, as a ``MetadataValue.table`` for the materialization in the UI.

Only for assets whose definition metadata asks for it (``preview_rows: N``). What could carry a
credential stays out: columns named like one (``password``, ``token``, ...) are left out, and in
text cells (a quarantined record's JSON) the values of such keys are masked. Long text is cut.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import dagster as dg
import pandas as pd

PREVIEW_KEY = "preview"
MAX_TEXT = 80
MAX_ROWS = 20
_SECRET_NAME = re.compile(
    r"pass(word|wd)?|secret|token|api_?key|auth|credential|cookie|session|private", re.IGNORECASE
)
# "password": "..." / 'token': '...' / api_key=... inside a text cell.
_SECRET_VALUE = re.compile(
    r"""(?P<key>["']?[\w-]*(?:pass(?:word|wd)?|secret|token|api_?key|auth\w*|credential|cookie)[\w-]*["']?\s*[:=]\s*)"""
    r"""(?P<value>"[^"]*"|'[^']*'|[^,}\s&]+)""",
    re.IGNORECASE,
)
MASK = "***"


def mask_secrets(text: str) -> str:
    return _SECRET_VALUE.sub(lambda m: f"{m['key']}{MASK}", text)


def _cell(value: Any) -> str | int | float | bool | None:
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, pd.Timestamp):
        # A partition_date (a DATE in the warehouse) reads as a date, not as midnight.
        if value.tzinfo is None and value == value.normalize():
            return value.date().isoformat()
        return value.isoformat()
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        # Enough digits to read, not the float noise of a computed mean.
        return None if math.isnan(value) else round(float(value), 6)
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalars
        return _cell(value.item())
    text = mask_secrets(str(value))
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _type(dtype: Any) -> str:
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    return "string"


def table_preview(df: pd.DataFrame, rows: int) -> dg.TableMetadataValue:
    """The first ``rows`` rows of ``df`` with secret-named columns left out."""
    shown = [c for c in df.columns if not _SECRET_NAME.search(str(c))]
    head = df.head(max(0, min(rows, MAX_ROWS)))[shown]
    return dg.MetadataValue.table(
        records=[
            dg.TableRecord({str(c): _cell(v) for c, v in zip(shown, row, strict=True)})
            for row in head.itertuples(index=False, name=None)
        ],
        schema=dg.TableSchema(columns=[dg.TableColumn(str(c), _type(df[c].dtype)) for c in shown]),
    )


def preview_metadata(df: pd.DataFrame, definition_metadata: Mapping[str, Any]) -> dict[str, Any]:
    """``{"preview": <table>}`` when the asset opts in with ``preview_rows``, else nothing."""
    rows = definition_metadata.get("preview_rows") if definition_metadata else None
    rows = getattr(rows, "value", rows)
    if not rows:
        return {}
    return {PREVIEW_KEY: table_preview(df, int(rows))}
