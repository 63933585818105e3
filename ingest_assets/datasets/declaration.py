"""The YAML form of a dataset (DESIGN.md "Datasets"), as strict Pydantic models.

Unknown keys are refused; a type or a rule that cannot apply says which word is at fault. The
JSON Schema of ``DatasetDeclaration`` (``python -m ingest_assets schema``) gives editors
completion for the ``datasets:`` section. No dagster, no pandas here.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

TYPES = ("text", "integer", "number", "decimal", "boolean", "date", "timestamp", "json")
ORDERED_TYPES = ("integer", "number", "decimal", "date", "timestamp")
DATASET_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
RESERVED_NAMES = ("records", "history", "ingestion")
# Columns every cleaned table has besides its fields (set by the pipeline, never mapped).
SYSTEM_COLUMNS = ("partition_date", "source", "_run_id", "_ingested_at", "_source_ref")
Number = int | float


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rules(Strict):
    """Value rules, each compiled to one of Pandera's built-in checks."""

    gt: Number | None = Field(None, description="Greater than.")
    ge: Number | None = Field(None, description="Greater than or equal to.")
    lt: Number | None = Field(None, description="Less than.")
    le: Number | None = Field(None, description="Less than or equal to.")
    between: tuple[Number, Number] | None = Field(None, description="[lo, hi], inclusive.")
    isin: list[Any] | None = Field(None, description="The allowed values.")
    regex: str | None = Field(None, description="A regular expression the whole value matches.")
    min_length: int | None = Field(None, ge=0, description="Length after trimming, at least.")
    max_length: int | None = Field(None, ge=0, description="Length after trimming, at most.")

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value


def _known_type(value: str | None) -> str | None:
    if value is not None and value not in TYPES:
        raise ValueError(f"unknown type {value!r} (one of {', '.join(TYPES)})")
    return value


def rules_problem(rules: Rules, type_: str | None) -> str | None:
    """Which rule cannot apply to a value of ``type_`` (None: all can, or the type is unknown)."""
    if type_ is None:
        return None
    text_rules = ("regex", "min_length", "max_length")
    ordered_rules = ("gt", "ge", "lt", "le", "between")
    for name in text_rules:
        if getattr(rules, name) is not None and type_ != "text":
            return f"{name}: applies to text, not to {type_}"
    for name in ordered_rules:
        if getattr(rules, name) is not None and type_ not in ORDERED_TYPES:
            return f"{name}: applies to integer, number, decimal, date or timestamp, not to {type_}"
    return None


class FieldDeclaration(Rules):
    """One field of the cleaned table."""

    type: str = Field(description="One of " + ", ".join(TYPES) + ".")
    description: str = ""
    nullable: bool = Field(False, description="Whether the field may be null (else required).")
    lower: bool = Field(False, description="Lower-case the text before the rules run.")
    upper: bool = Field(False, description="Upper-case the text before the rules run.")
    scale: int | None = Field(None, ge=0, le=38, description="decimal: digits after the point.")
    precision: int | None = Field(None, ge=1, le=38, description="decimal: digits in all.")

    _type_known = field_validator("type")(classmethod(lambda cls, v: _known_type(v)))

    @model_validator(mode="after")
    def _consistent(self) -> FieldDeclaration:
        problem = rules_problem(self, self.type)
        if problem:
            raise ValueError(problem)
        if (self.lower or self.upper) and self.type != "text":
            raise ValueError(f"lower/upper: applies to text, not to {self.type}")
        if self.lower and self.upper:
            raise ValueError("lower and upper: choose one")
        if self.type == "decimal":
            if self.scale is None:
                raise ValueError("scale: a decimal needs one (digits after the point)")
            if self.precision is not None and self.precision < self.scale:
                raise ValueError("precision: must be at least the scale")
        elif self.scale is not None or self.precision is not None:
            raise ValueError(f"scale/precision: applies to decimal, not to {self.type}")
        return self


class ColumnDeclaration(Rules):
    """A features or metrics column: a SQL expression, or the type of a Python step's column."""

    sql: str | None = Field(None, description="A DuckDB SQL expression.")
    type: str | None = Field(None, description="Inferred from the SQL when omitted.")
    description: str = ""
    nullable: bool = Field(False, description="Whether the column may be null (else required).")
    scale: int | None = Field(None, ge=0, le=38)
    precision: int | None = Field(None, ge=1, le=38)

    _type_known = field_validator("type")(classmethod(lambda cls, v: _known_type(v)))

    @model_validator(mode="after")
    def _consistent(self) -> ColumnDeclaration:
        problem = rules_problem(self, self.type)
        if problem:
            raise ValueError(problem)
        return self


def _column(value: Any) -> Any:
    return {"sql": value} if isinstance(value, str) else value


Column = Annotated[ColumnDeclaration, Field()]


class StepDeclaration(Strict):
    """``features:`` or ``metrics:``: SQL columns over whole groups, or a Python function."""

    group_by: list[str] = Field(
        default_factory=list,
        description="features: window functions stay inside these groups; metrics: one row each.",
    )
    columns: dict[str, Column] = Field(default_factory=dict)
    python: str | None = Field(
        None, description='"package.module:function": a DataFrame in, the same rows (features) out.'
    )
    checks: dict[str, str] = Field(
        default_factory=dict, description="Named row rules: SQL that is true for a valid row."
    )

    @model_validator(mode="before")
    @classmethod
    def _short_columns(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("columns"), dict):
            data = {**data, "columns": {k: _column(v) for k, v in data["columns"].items()}}
        return data

    @model_validator(mode="after")
    def _sql_or_python(self) -> StepDeclaration:
        for name, column in self.columns.items():
            if self.python is None and not column.sql:
                raise ValueError(f"columns.{name}: needs sql (or the step a python function)")
            if self.python is not None and column.sql:
                raise ValueError(f"columns.{name}: sql in a python step; give only its type")
            if self.python is not None and column.type is None:
                raise ValueError(f"columns.{name}.type: a python step's column needs its type")
        if self.python is not None and not re.match(r"^[\w.]+:\w+$", self.python):
            raise ValueError(f"python: {self.python!r} is not 'package.module:function'")
        return self


class DatasetDeclaration(Strict):
    """One dataset: its fields (the cleaned table), key, features and metrics."""

    description: str = ""
    key: list[str] = Field(
        min_length=1,
        description="Unique within a partition_date across the dataset's sources; may include "
        "source.",
    )
    fields: dict[str, FieldDeclaration] = Field(min_length=1)
    checks: dict[str, str] = Field(
        default_factory=dict, description="Named row rules on cleaned rows, as SQL."
    )
    features: StepDeclaration | None = None
    metrics: StepDeclaration | None = None


class DatasetsSection(Strict):
    """The ``datasets:`` section of a sources file (JSON Schema published for editors)."""

    datasets: dict[str, DatasetDeclaration] = Field(default_factory=dict)
