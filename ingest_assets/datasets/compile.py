"""A dataset declaration compiled, once at load, into what every layer needs.

``CompiledDataset`` holds the Pandera schemas of ``cleaned``, ``features`` and ``metrics`` (the
one rule book: the split, the asset checks, drift and the column metadata read them), the key,
the fields with their types, and the feature and metric steps. Rules become Pandera's built-in
checks (``greater_than(0)``, ``in_range(0, 5)``, ``str_length(1, None)``, ``isin([...])``), so
check names and quarantine messages read as Pandera writes them. Named SQL ``checks`` become
row checks of that name (a null result passes, as in a SQL ``CHECK``); each feature whose SQL has
no window function also gets ``<column>_formula``: the stored value equals its expression.
No dagster here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow as pyarrow

from ingest_assets.datasets import sql
from ingest_assets.datasets.declaration import (
    SYSTEM_COLUMNS,
    ColumnDeclaration,
    DatasetDeclaration,
    FieldDeclaration,
    Rules,
    StepDeclaration,
    rules_problem,
)

PARTITION = "partition_date"
_SYSTEM_TYPES = {
    "partition_date": ("timestamp_naive", False, "The day (UTC) the rows belong to: the asset's partition."),
    "source": ("text", False, "The source (sources.yaml) the record came from."),
    "_run_id": ("text", False, "The Dagster run that wrote the row."),
    "_ingested_at": ("timestamp", False, "When the record was fetched."),
    "_source_ref": (
        "text",
        True,
        "Where the record came from: <archive object>#<index in the page>, or #L<line> of a file.",
    ),
}  # fmt: skip
_SQL_TYPES = {
    "text": "VARCHAR",
    "integer": "BIGINT",
    "number": "DOUBLE",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "timestamp": "TIMESTAMPTZ",
    "timestamp_naive": "TIMESTAMP",
    "json": "JSON",
}
_INTEGER_SQL = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT")
_INTEGER_SQL += ("UINTEGER", "UBIGINT", "UHUGEINT")


class CompileError(ValueError):
    """A declaration that cannot compile: ``at`` is the path of the word at fault."""

    def __init__(self, at: Sequence[str], message: str) -> None:
        super().__init__(message)
        self.at = tuple(at)
        self.message = message


@dataclass(frozen=True)
class ColumnType:
    """A column's declared type as the tables hold it."""

    type: str
    nullable: bool = True
    scale: int | None = None
    precision: int | None = None

    @property
    def sql(self) -> str:
        if self.type == "decimal":
            return f"DECIMAL({self.precision or 38}, {self.scale})"
        return _SQL_TYPES[self.type]

    @property
    def pandera(self) -> Any:
        if self.type in ("text", "json"):
            return str
        if self.type == "integer":
            return pd.Int64Dtype()
        if self.type == "number":
            return "float64"
        if self.type == "boolean":
            return pd.BooleanDtype() if self.nullable else bool
        if self.type == "timestamp":
            return pd.DatetimeTZDtype("ns", "UTC")
        if self.type == "timestamp_naive":
            return "datetime64[ns]"
        return self.arrow_dtype

    @property
    def arrow_dtype(self) -> pd.ArrowDtype:
        """date and decimal are Arrow-backed in frames: the type survives an empty or all-null
        chunk, so the table a first (empty) chunk creates has the right column type."""
        if self.type == "date":
            return pd.ArrowDtype(pyarrow.date32())
        return pd.ArrowDtype(pyarrow.decimal128(38, self.scale or 0))

    def conform(self, series: pd.Series) -> Any:
        """A column read back from a warehouse as the values the steps and checks expect."""
        if self.type in ("date", "decimal"):
            if series.dtype == self.arrow_dtype:
                return series.array
            return self.to_pandas(pyarrow.array(series, from_pandas=True))
        if self.type == "boolean":
            wanted = "boolean" if self.nullable else "bool"
            return series.array if str(series.dtype) == wanted else series.astype(wanted).array
        if self.type == "integer" and str(series.dtype) != "Int64":
            return series.astype("Int64").array
        return series.array

    def to_pandas(self, values: pyarrow.ChunkedArray | pyarrow.Array) -> Any:
        """A column of DuckDB's result as the pandas values the tables take."""
        if self.type in ("date", "decimal"):
            arrow_type = self.arrow_dtype.pyarrow_dtype
            if isinstance(values, pyarrow.ChunkedArray):
                values = values.combine_chunks()
            return pd.arrays.ArrowExtensionArray(values.cast(arrow_type))
        if self.type in ("text", "json"):
            return values.to_numpy(zero_copy_only=False)
        series = values.to_pandas()
        if self.type == "integer":
            return series.astype("Int64").array
        if self.type == "number":
            return series.astype("float64").to_numpy()
        if self.type == "boolean":
            boolean = series.astype("boolean")
            return boolean.array if self.nullable else boolean.fillna(False).astype(bool).to_numpy()
        if self.type == "timestamp":
            return pd.to_datetime(series, utc=True).astype("datetime64[ns, UTC]").array
        return pd.to_datetime(series).astype("datetime64[ns]").to_numpy()

    def of_pandas(self, series: pd.Series) -> Any:
        """A Python step's column as the values the tables take (a clear error if it cannot)."""
        if self.type in ("text", "json"):
            return series.astype(object).where(series.notna(), None).to_numpy()
        return self.to_pandas(pyarrow.array(series, from_pandas=True))


def inferred_type(duck: str) -> ColumnType:
    """Our type of a DuckDB result type."""
    duck = duck.upper()
    if duck in _INTEGER_SQL:
        return ColumnType("integer")
    if duck in ("DOUBLE", "FLOAT", "REAL"):
        return ColumnType("number")
    if duck.startswith("DECIMAL"):
        precision, scale = (int(p) for p in duck[duck.index("(") + 1 : -1].split(","))
        return ColumnType("decimal", scale=scale, precision=precision)
    if duck == "BOOLEAN":
        return ColumnType("boolean")
    if duck == "DATE":
        return ColumnType("date")
    if duck.startswith("TIMESTAMP"):
        return ColumnType("timestamp")
    if duck == "VARCHAR":
        return ColumnType("text")
    return ColumnType("json")


def rule_checks(rules: Rules, lower: bool = False, upper: bool = False) -> list[pa.Check]:
    """The declared rules as Pandera's built-in checks, in a fixed order."""
    checks: list[pa.Check] = []
    if rules.gt is not None:
        checks.append(pa.Check.gt(rules.gt))
    if rules.ge is not None:
        checks.append(pa.Check.ge(rules.ge))
    if rules.lt is not None:
        checks.append(pa.Check.lt(rules.lt))
    if rules.le is not None:
        checks.append(pa.Check.le(rules.le))
    if rules.between is not None:
        checks.append(pa.Check.in_range(*rules.between))
    if rules.isin is not None:
        checks.append(pa.Check.isin(list(rules.isin)))
    if rules.regex is not None:
        checks.append(pa.Check.str_matches(f"^(?:{rules.regex})$"))
    if rules.min_length is not None or rules.max_length is not None:
        checks.append(pa.Check.str_length(min_value=rules.min_length, max_value=rules.max_length))
    if lower:
        checks.append(pa.Check(lambda s: s == s.str.lower(), name="lower_case"))
    if upper:
        checks.append(pa.Check(lambda s: s == s.str.upper(), name="upper_case"))
    return checks


def _trimmed(text: pd.Series) -> pd.Series:
    return text.isna() | (text == text.str.strip())


@dataclass(frozen=True)
class DatasetField:
    """One field of the cleaned table, as declared."""

    name: str
    column_type: ColumnType
    description: str
    lower: bool
    upper: bool

    @property
    def type(self) -> str:
        return self.column_type.type

    @property
    def nullable(self) -> bool:
        return self.column_type.nullable


def _sql_row_check(
    name: str, expression: str, columns: Sequence[str], types: Mapping[str, str]
) -> pa.Check:
    """A named SQL rule over each row; a null result passes, as in a SQL ``CHECK``."""
    con = sql.connect()
    try:
        query = sql.features_query(con, {"__ok": expression}, [])
    finally:
        con.close()
    sql.bind(query, types)

    def holds(frame: pd.DataFrame) -> pd.Series:
        result = sql.run(f"SELECT {sql.ROW}, __ok FROM ({query})", sql.as_arrow(frame, columns))
        ok = result.column("__ok").to_numpy(zero_copy_only=False)
        return pd.Series(ok != False, index=frame.index)  # noqa: E712 - null passes

    # The name is what quarantine reasons and check results show; the SQL is its description.
    return pa.Check(holds, name=name, description=expression)


@dataclass
class SqlStep:
    """Declared columns as SQL over the input rows (features) or groups (metrics)."""

    query: str
    output: dict[str, ColumnType]
    reads: list[str]
    order_by_row: bool

    def run(self, frame: pd.DataFrame) -> dict[str, Any]:
        casts = [
            f"CAST({sql.quote(n)} AS {t.sql}) AS {sql.quote(n)}" for n, t in self.output.items()
        ]
        final = f"SELECT {', '.join(casts)}" + (f", {sql.ROW}" if self.order_by_row else "")
        inputs = sql.as_arrow(frame, self.reads)
        if not self.order_by_row:
            # Aggregates read their rows in one order whatever order the warehouse returned
            # them in (a float sum depends on it in the last bit): a day, re-run or part of a
            # backfill range, gives the same metrics.
            inputs = inputs.sort_by([(c, "ascending") for c in self.reads])
        result = sql.run(f"{final} FROM ({self.query})", inputs, self.order_by_row)
        return {name: t.to_pandas(result.column(name)) for name, t in self.output.items()}


@dataclass
class PythonStep:
    function: Callable[[pd.DataFrame], pd.DataFrame]
    output: dict[str, ColumnType]
    where: str

    def run(self, frame: pd.DataFrame) -> pd.DataFrame:
        result = self.function(frame.copy())
        if not isinstance(result, pd.DataFrame):
            raise TypeError(f"{self.where} returned {type(result).__name__}, not a DataFrame")
        missing = [c for c in self.output if c not in result.columns]
        if missing:
            raise ValueError(f"{self.where} did not return the declared columns {missing}")
        return result


@dataclass
class CompiledDataset:
    """Everything a layer needs to know of one dataset (see the module docstring)."""

    name: str
    description: str
    origin: str
    key: list[str]
    fields: list[DatasetField]
    cleaned_schema: pa.DataFrameSchema
    features_schema: pa.DataFrameSchema
    metrics_schema: pa.DataFrameSchema | None
    features_group_by: list[str]
    metrics_group_by: list[str]
    features_step: SqlStep | PythonStep | None
    metrics_step: SqlStep | PythonStep | None
    metrics_reads: list[str] | None
    cleaned_types: dict[str, ColumnType] = field(default_factory=dict)
    metrics_types: dict[str, ColumnType] = field(default_factory=dict)

    def types(self, layer: str) -> dict[str, ColumnType]:
        """The declared type of each column of a layer's table."""
        if layer == "cleaned":
            return dict(self.cleaned_types)
        if layer == "features":
            return self.features_types
        return dict(self.metrics_types)

    def conform_table(self, frame: pd.DataFrame, layer: str) -> pd.DataFrame:
        """A table read back from a warehouse in the dtypes its schema checks."""
        return self.conform(frame, self.types(layer))

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def cleaned_columns(self) -> list[str]:
        return list(self.cleaned_schema.columns)

    @property
    def unique(self) -> list[str]:
        """The key within a partition: the cleaned and features tables' primary key."""
        return [PARTITION, *self.key]

    @property
    def sort_by(self) -> list[str]:
        return [PARTITION, *self.key]

    @property
    def json_fields(self) -> list[str]:
        return [f.name for f in self.fields if f.type == "json"]

    def json_columns(self, layer: str) -> list[str]:
        schema = self.schema(layer)
        types = {**self.cleaned_types, **self._step_types(layer)}
        return [
            c
            for c in (schema.columns if schema else [])
            if types.get(c) and types[c].type == "json"
        ]

    def _step_types(self, layer: str) -> dict[str, ColumnType]:
        step = self.features_step if layer == "features" else self.metrics_step
        return dict(step.output) if step is not None and layer in ("features", "metrics") else {}

    def schema(self, layer: str) -> pa.DataFrameSchema | None:
        return {
            "cleaned": self.cleaned_schema,
            "features": self.features_schema,
            "metrics": self.metrics_schema,
        }.get(layer)

    def primary_key(self, layer: str) -> list[str]:
        return list(self.metrics_group_by) if layer == "metrics" else self.unique

    def features(self, cleaned: pd.DataFrame) -> pd.DataFrame:
        """The cleaned rows of whole ``features_group_by`` groups, with the feature columns."""
        cleaned = self.conform(cleaned, self.cleaned_types)
        step = self.features_step
        if step is None:
            return cleaned
        if isinstance(step, PythonStep):
            result = step.run(cleaned)
            return result.assign(**{n: t.of_pandas(result[n]) for n, t in step.output.items()})
        if cleaned.empty:
            return cleaned.assign(**{n: _empty(t) for n, t in step.output.items()})
        return cleaned.assign(**step.run(cleaned))

    def metrics(self, features: pd.DataFrame) -> pd.DataFrame:
        """One row per ``metrics_group_by`` group of the features rows."""
        step = self.metrics_step
        if step is None or self.metrics_schema is None:
            raise ValueError(f"dataset {self.name!r} declares no metrics")
        features = self.conform(features, self.features_types)
        group_types = {g: self.features_types[g] for g in self.metrics_group_by}
        if isinstance(step, PythonStep):
            result = step.run(features)
            typed = {n: t.of_pandas(result[n]) for n, t in {**group_types, **step.output}.items()}
            return pd.DataFrame(typed, columns=list(self.metrics_schema.columns))
        if features.empty:
            return pd.DataFrame(
                {n: _empty(t) for n, t in {**group_types, **step.output}.items()},
                columns=list(self.metrics_schema.columns),
            )
        return pd.DataFrame(step.run(features), columns=list(self.metrics_schema.columns))

    @staticmethod
    def conform(frame: pd.DataFrame, types: Mapping[str, ColumnType]) -> pd.DataFrame:
        """The frame's columns in the dtypes the steps and checks expect (a frame read back
        from a warehouse gives dates, decimals and booleans as it stores them)."""
        changed = {}
        for name, column_type in types.items():
            if name in frame.columns and column_type.type in (
                "date",
                "decimal",
                "boolean",
                "integer",
            ):
                conformed = column_type.conform(frame[name])
                if conformed is not frame[name].array:
                    changed[name] = conformed
        return frame.assign(**changed) if changed else frame

    @property
    def features_types(self) -> dict[str, ColumnType]:
        return {**self.cleaned_types, **self._step_types("features")}


def _empty(column_type: ColumnType) -> pd.Series:
    if column_type.type in ("text", "json"):
        return pd.Series([], dtype=object)
    return pd.Series([], dtype=column_type.pandera)


def _field_type(decl: FieldDeclaration) -> ColumnType:
    return ColumnType(decl.type, decl.nullable, decl.scale, decl.precision)


def _import(reference: str, at: Sequence[str]) -> Callable[[pd.DataFrame], pd.DataFrame]:
    module_name, _, attribute = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CompileError(at, f"cannot import {module_name!r}: {exc}") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise CompileError(at, f"{module_name!r} has no function {attribute!r}")
    return function


def _sql_types(types: Mapping[str, ColumnType]) -> dict[str, str]:
    return {name: t.sql for name, t in types.items()}


def _column_type(decl: ColumnDeclaration, inferred: str | None, at: Sequence[str]) -> ColumnType:
    if decl.type is not None:
        column_type = ColumnType(decl.type, True, decl.scale, decl.precision)
        if decl.type == "decimal" and decl.scale is None:
            raise CompileError([*at, "scale"], "a decimal needs one (digits after the point)")
    elif inferred is not None:
        column_type = inferred_type(inferred)
    else:
        raise CompileError([*at, "type"], "a python step's column needs its type")
    nullable = bool(decl.nullable)
    column_type = ColumnType(column_type.type, nullable, column_type.scale, column_type.precision)
    problem = rules_problem(decl, column_type.type)
    if problem:
        raise CompileError([*at, problem.split(":", 1)[0]], problem.split(": ", 1)[1])
    return column_type


def _known_columns(
    names: Sequence[str], known: Sequence[str], at: Sequence[str], what: str
) -> None:
    for i, name in enumerate(names):
        if name not in known:
            raise CompileError(
                [*at, str(i)], f"{name!r} is not a {what} (one of {', '.join(known)})"
            )


def _bind_columns(
    step: StepDeclaration,
    at: Sequence[str],
    input_types: Mapping[str, ColumnType],
    build: Callable[[Any, dict[str, str]], str],
) -> dict[str, str]:
    """Each column bound in order (so an error names its column); their DuckDB types."""
    done: dict[str, str] = {}
    duck: dict[str, str] = {}
    con = sql.connect()
    try:
        for name, column in step.columns.items():
            if name in input_types:
                raise CompileError(
                    [*at, "columns", name], "is a column already; choose another name"
                )
            try:
                query = build(con, {**done, name: column.sql or ""})
                described = sql.bind(query, _sql_types(input_types))
            except sql.SqlError as exc:
                raise CompileError([*at, "columns", name], f"{exc} (in {column.sql!r})") from None
            done[name] = column.sql or ""
            duck[name] = described[name]
    finally:
        con.close()
    return duck


def compile_dataset(name: str, decl: DatasetDeclaration, origin: str) -> CompiledDataset:
    """Compile one declaration; a ``CompileError`` names the path of the word at fault."""
    base = ["datasets", name]
    for i, key in enumerate(decl.key):
        if key not in decl.fields and key != "source":
            known = ", ".join(["source", *decl.fields])
            raise CompileError([*base, "key", str(i)], f"{key!r} is not a field (one of {known})")
    for field_name in decl.fields:
        if field_name in SYSTEM_COLUMNS or field_name.startswith("__"):
            raise CompileError(
                [*base, "fields", field_name], "is a column the pipeline sets; choose another name"
            )
    fields = [
        DatasetField(n, _field_type(d), d.description, d.lower, d.upper)
        for n, d in decl.fields.items()
    ]
    cleaned_types: dict[str, ColumnType] = {
        "partition_date": ColumnType("timestamp_naive", False),
        "source": ColumnType("text", False),
        **{f.name: f.column_type for f in fields},
        "_run_id": ColumnType("text", False),
        "_ingested_at": ColumnType("timestamp", False),
        "_source_ref": ColumnType("text", True),
    }
    columns: dict[str, pa.Column] = {}
    for column_name, column_type in cleaned_types.items():
        if column_name in _SYSTEM_TYPES:
            description = _SYSTEM_TYPES[column_name][2]
            checks = [pa.Check.str_length(min_value=1)] if column_name == "source" else []
        else:
            fdecl = decl.fields[column_name]
            description = fdecl.description
            checks = rule_checks(fdecl, fdecl.lower, fdecl.upper)
            if fdecl.type == "text":
                checks.append(pa.Check(_trimmed, name="trimmed"))
        columns[column_name] = pa.Column(
            column_type.pandera,
            checks=checks,
            nullable=column_type.nullable,
            description=description or None,
            coerce=False,
            # Provenance came later than the tables: a table written before it still checks.
            required=column_name != "_source_ref",
        )
    row_checks = _named_checks(decl.checks, [*base, "checks"], cleaned_types)
    unique = [PARTITION, *decl.key]
    cleaned = pa.DataFrameSchema(
        columns,
        checks=row_checks,
        unique=unique,
        name=f"cleaned.{name}",
        description=decl.description or None,
    )

    features_step: SqlStep | PythonStep | None = None
    features_types = dict(cleaned_types)
    features_group_by = [PARTITION]
    feature_columns = dict(columns)
    formula_checks: list[pa.Check] = []
    if decl.features is not None:
        at = [*base, "features"]
        fdecl_step = decl.features
        features_group_by = list(fdecl_step.group_by or [PARTITION])
        _known_columns(features_group_by, list(cleaned_types), [*at, "group_by"], "cleaned column")
        if fdecl_step.python:
            function = _import(fdecl_step.python, [*at, "python"])
            output = {
                n: _column_type(c, None, [*at, "columns", n]) for n, c in fdecl_step.columns.items()
            }
            features_step = PythonStep(function, output, fdecl_step.python)
        else:
            duck = _bind_columns(
                fdecl_step,
                at,
                cleaned_types,
                lambda con, cols: sql.features_query(con, cols, features_group_by),
            )
            output = {
                n: _column_type(c, duck[n], [*at, "columns", n])
                for n, c in fdecl_step.columns.items()
            }
            con = sql.connect()
            try:
                query = sql.features_query(
                    con, {n: c.sql or "" for n, c in fdecl_step.columns.items()}, features_group_by
                )
            finally:
                con.close()
            reads = sorted(
                {
                    ref
                    for c in fdecl_step.columns.values()
                    for ref in sql.expression_facts(c.sql or "")[0]
                    if ref in cleaned_types
                }
                | set(features_group_by)
            )
            features_step = SqlStep(query, output, [c for c in cleaned_types if c in reads], True)
            formula_checks = _formula_checks(fdecl_step, {**cleaned_types, **output})
        for n, t in output.items():
            cdecl = fdecl_step.columns[n]
            feature_columns[n] = pa.Column(
                t.pandera,
                checks=rule_checks(cdecl),
                nullable=t.nullable,
                description=cdecl.description or cdecl.sql or None,
                coerce=False,
            )
            features_types[n] = t
        row_checks_features = _named_checks(fdecl_step.checks, [*at, "checks"], features_types)
    else:
        row_checks_features = []
    features_schema = pa.DataFrameSchema(
        feature_columns,
        checks=[*row_checks, *formula_checks, *row_checks_features],
        unique=unique,
        name=f"features.{name}",
    )

    metrics_step: SqlStep | PythonStep | None = None
    metrics_schema = None
    metrics_group_by: list[str] = []
    metrics_reads: list[str] | None = None
    metric_types: dict[str, ColumnType] = {}
    if decl.metrics is not None:
        at = [*base, "metrics"]
        mdecl = decl.metrics
        metrics_group_by = list(mdecl.group_by or [PARTITION])
        _known_columns(metrics_group_by, list(features_types), [*at, "group_by"], "features column")
        scope = [PARTITION] if PARTITION in metrics_group_by else []
        if mdecl.python:
            function = _import(mdecl.python, [*at, "python"])
            output = {
                n: _column_type(c, None, [*at, "columns", n]) for n, c in mdecl.columns.items()
            }
            metrics_step = PythonStep(function, output, mdecl.python)
        else:
            duck = _bind_columns(
                mdecl,
                at,
                features_types,
                lambda con, cols: sql.metrics_query(con, metrics_group_by, cols, scope),
            )
            output = {
                n: _column_type(c, duck[n], [*at, "columns", n]) for n, c in mdecl.columns.items()
            }
            con = sql.connect()
            try:
                query = sql.metrics_query(
                    con, metrics_group_by, {n: c.sql or "" for n, c in mdecl.columns.items()}, scope
                )
                query = f"SELECT * FROM ({query}) ORDER BY " + ", ".join(
                    sql.quote(g) for g in metrics_group_by
                )
            finally:
                con.close()
            reads = {
                ref
                for c in mdecl.columns.values()
                for ref in sql.expression_facts(c.sql or "")[0]
                if ref in features_types
            } | set(metrics_group_by)
            metrics_reads = [c for c in features_types if c in reads]
            group_types = {g: features_types[g] for g in metrics_group_by}
            metrics_step = SqlStep(query, {**group_types, **output}, metrics_reads, False)
        metric_columns = {
            g: pa.Column(
                features_types[g].pandera,
                checks=list(feature_columns[g].checks),
                nullable=features_types[g].nullable,
                description=feature_columns[g].description,
                coerce=False,
            )
            for g in metrics_group_by
        }
        metric_types = {g: features_types[g] for g in metrics_group_by}
        for n, t in output.items():
            if n in metrics_group_by:
                continue
            cdecl = mdecl.columns[n]
            metric_columns[n] = pa.Column(
                t.pandera,
                checks=rule_checks(cdecl),
                nullable=t.nullable,
                description=cdecl.description or cdecl.sql or None,
                coerce=False,
            )
            metric_types[n] = t
        metrics_schema = pa.DataFrameSchema(
            metric_columns,
            checks=_named_checks(mdecl.checks, [*at, "checks"], metric_types),
            unique=metrics_group_by,
            name=f"metrics.{name}",
        )

    return CompiledDataset(
        name=name,
        description=decl.description,
        origin=origin,
        key=list(decl.key),
        fields=fields,
        cleaned_schema=cleaned,
        features_schema=features_schema,
        metrics_schema=metrics_schema,
        features_group_by=features_group_by,
        metrics_group_by=metrics_group_by,
        features_step=features_step,
        metrics_step=metrics_step,
        metrics_reads=metrics_reads,
        cleaned_types=cleaned_types,
        metrics_types=metric_types,
    )


def _named_checks(
    checks: Mapping[str, str], at: Sequence[str], types: Mapping[str, ColumnType]
) -> list[pa.Check]:
    compiled = []
    for check_name, expression in checks.items():
        try:
            columns, _ = sql.expression_facts(expression)
            reads = [c for c in types if c in columns]
            compiled.append(_sql_row_check(check_name, expression, reads, _sql_types(types)))
        except sql.SqlError as exc:
            raise CompileError([*at, check_name], f"{exc} (in {expression!r})") from None
    return compiled


def _formula_checks(step: StepDeclaration, types: Mapping[str, ColumnType]) -> list[pa.Check]:
    """``<column>_formula`` for each feature without a window: its value equals its SQL."""
    checks = []
    for name, column in step.columns.items():
        columns, windowed = sql.expression_facts(column.sql or "")
        if windowed:
            continue
        reads = [c for c in types if c in columns]
        column_type = types[name]
        checks.append(_formula_check(name, column.sql or "", reads, column_type, types))
    return checks


def _formula_check(
    name: str,
    expression: str,
    reads: Sequence[str],
    column_type: ColumnType,
    types: Mapping[str, ColumnType],
) -> pa.Check:
    query = f"SELECT {sql.ROW}, CAST(({expression}) AS {column_type.sql}) AS __v FROM {sql.INPUT}"
    sql.bind(query, _sql_types({**{c: types[c] for c in reads}, sql.ROW: ColumnType("integer")}))

    def holds(frame: pd.DataFrame) -> pd.Series:
        result = sql.run(query, sql.as_arrow(frame, reads))
        expected = pd.Series(column_type.to_pandas(result.column("__v")), index=frame.index)
        stored = frame[name]
        both_null = expected.isna().to_numpy() & stored.isna().to_numpy()
        if column_type.type == "number":
            close = np.isclose(
                stored.to_numpy(dtype=float, na_value=np.nan),
                expected.to_numpy(dtype=float, na_value=np.nan),
                rtol=1e-9,
                atol=1e-9,
            )
            return pd.Series(close | both_null, index=frame.index)
        same = (stored.astype(object) == expected.astype(object)).fillna(False).to_numpy(bool)
        return pd.Series(same | both_null, index=frame.index)

    return pa.Check(holds, name=f"{name}_formula", description=f"{name} = {expression}")
