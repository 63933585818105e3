"""A Pandera model run over a table chunk by chunk: bounded memory, the verdict of one frame.

Each chunk is validated with the model (``lazy=True``). The model's ``unique`` key is also held
across chunks: a row repeating the key of a row in an earlier chunk fails
``multiple_fields_uniqueness``, as Pandera reports a repeat within one frame. What is kept is a
count per ``column: check``, the number of failing rows and a sample of failure cases with the
failing row's key, so memory holds one chunk plus a hash per row. No dagster here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pandera.errors
import pandera.pandas as pa
import pyarrow

from ingest_assets.records.split import KeyRegistry

SAMPLE_CASES = 10
UNIQUENESS = "multiple_fields_uniqueness"


@dataclass
class SchemaRun:
    """The failures of one model over the chunks given to ``validate``, in order."""

    schema: pa.DataFrameSchema
    rows: int = 0
    failing_rows: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    # (column, check, failing value, the failing row's key)
    sample: list[tuple[str, str, Any, str]] = field(default_factory=list)
    keys: KeyRegistry = field(default_factory=KeyRegistry)
    # The schema without the str type test of some columns (see _schema_for), by columns.
    _variants: dict[frozenset[str], pa.DataFrameSchema] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, model: type[pa.DataFrameModel]) -> SchemaRun:
        return cls(model.to_schema())

    @property
    def key(self) -> list[str]:
        return list(self.schema.unique or [])

    @property
    def passed(self) -> bool:
        return not self.counts

    def validate(self, chunk: pd.DataFrame) -> None:
        chunk = chunk.reset_index(drop=True)
        cases = [self._schema_cases(chunk), self._repeated_keys(chunk)]
        found = [c for c in cases if c is not None and len(c)]
        if found:
            self._record(pd.concat(found, ignore_index=True), chunk)
        self.rows += len(chunk)

    def validate_all(self, chunks: Iterable[pd.DataFrame]) -> SchemaRun:
        for chunk in chunks:
            self.validate(chunk)
        return self

    @property
    def by_check(self) -> dict[str, int]:
        return dict(self.counts.most_common())

    def _schema_cases(self, chunk: pd.DataFrame) -> pd.DataFrame | None:
        try:
            self._schema_for(chunk).validate(chunk, lazy=True)
        except pandera.errors.SchemaErrors as exc:
            return exc.failure_cases
        return None

    def _schema_for(self, chunk: pd.DataFrame) -> pa.DataFrameSchema:
        """The schema, without the ``str`` type test of columns whose dtype is text already.

        Pandera tests ``str`` a value at a time (``isinstance`` through ``Series.map``: a fifth
        of a large check). A column of a text dtype (Arrow or pandas strings) holds only
        strings and nulls by construction, which is what that test accepts, so it is skipped
        there and kept for every other column (e.g. an object column of mixed values).
        """
        text = frozenset(
            name
            for name, column in self.schema.columns.items()
            if name in chunk.columns
            and str(column.dtype) == "str"
            and _holds_only_text(chunk[name].dtype)
        )
        if not text:
            return self.schema
        if text not in self._variants:
            self._variants[text] = self.schema.update_columns({n: {"dtype": None} for n in text})
        return self._variants[text]

    def _repeated_keys(self, chunk: pd.DataFrame) -> pd.DataFrame | None:
        """Rows whose key a row of an earlier chunk has (a repeat within the chunk is Pandera's)."""
        key = [k for k in self.key if k in chunk.columns]
        if not key or len(key) != len(self.key):
            return None
        repeated = self.keys.repeats(chunk[key])
        rows = chunk.index[repeated]
        if not len(rows):
            return None
        return pd.DataFrame(
            {
                "schema_context": "DataFrameSchema",
                "column": key[0],
                "check": UNIQUENESS,
                "failure_case": chunk.loc[rows, key[0]].astype(str).to_numpy(),
                "index": rows.to_numpy(),
            }
        )

    def _record(self, failure_cases: pd.DataFrame, chunk: pd.DataFrame) -> None:
        # A frame-wide check reports each failing row once per column: count it once per row.
        frame_wide = (failure_cases["schema_context"] == "DataFrameSchema") | failure_cases[
            "column"
        ].isna()
        cases = failure_cases.assign(
            column=failure_cases["column"].astype(str).where(~frame_wide, "(frame)"),
            check=failure_cases["check"].astype(str),
        )
        cases = cases[~(frame_wide & cases.duplicated(["column", "check", "index"]))]
        for (column, check), n in cases.groupby(["column", "check"]).size().items():
            self.counts[f"{column}: {check}"] += int(n)
        self.failing_rows += int(cases["index"].dropna().nunique())
        room = SAMPLE_CASES - len(self.sample)
        for case in cases.head(max(room, 0)).itertuples():
            self.sample.append(
                (case.column, case.check, case.failure_case, row_keys(chunk, self.key, case.index))
            )


def row_keys(df: pd.DataFrame, key: Sequence[str], index: Any) -> str:
    """``k=v, ...`` of the row at ``index`` (its position), or ``(whole frame)``."""
    if pd.isna(index) or int(index) not in df.index:
        return "(whole frame)"
    row = df.loc[int(index)]
    key = [k for k in key if k in df.columns]
    return ", ".join(f"{k}={row[k]}" for k in key) if key else str(index)


def _holds_only_text(dtype: Any) -> bool:
    """Whether a column of this dtype can only hold strings (and nulls)."""
    if isinstance(dtype, pd.ArrowDtype):
        return pyarrow.types.is_string(dtype.pyarrow_dtype) or pyarrow.types.is_large_string(
            dtype.pyarrow_dtype
        )
    return isinstance(dtype, pd.StringDtype)
