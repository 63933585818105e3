"""Schema drift: the fields a source's records carry, compared with the fields it declares.

A source declares its fields in ``sources.yaml`` (``fields: {name: type}``, the names as they
arrive, before mapping). Without a declaration the expected fields are the ones the mapping
reads for the dataset's cleaned model; extra fields are then not drift.

Three kinds of drift, each measured over one partition's records:

- a **new field**: present in some record, not declared (only for sources that declare fields);
- a **missing field**: declared, present in no record (a missing *required* field also sends
  every record to quarantine: the cleaned model's ``not_nullable`` check);
- a **type change**: most non-null values of a declared field are not of its declared type.

Types are wire types (``string``, ``integer``, ``number``, ``boolean``, ``object``, ``array``,
``any``). CSV and XML carry text only, so a text value counts as a number, an integer or a
boolean when the record split would read it as one (``" 12.0 "`` is an integer, ``"5.5"`` is
not). Fields starting with ``_`` are the connector's own notes (parse errors) and never drift.
No dagster here.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ingest_assets.config import SourceConfig
from ingest_assets.quality.schemas import CLEANED_MODELS
from ingest_assets.quality.validate import SYSTEM_COLUMNS, CoercionError, to_float, to_whole
from ingest_assets.records.encode import FieldProfile, value_kind

_BOOLEAN_TEXT = {"true", "false"}


def _parses(value: Any, parse: Any) -> bool:
    try:
        parse(value)
    except CoercionError:
        return False
    return True


def conforms(declared: str, value: Any) -> bool:
    """Whether a non-missing value is of the declared type (text read as the split reads it)."""
    kind = value_kind(value)
    if declared in ("any", kind):
        return True
    if declared == "number" and kind == "integer":
        return True
    if kind != "string":
        return False
    if declared == "number":
        return _parses(value, to_float)
    if declared == "integer":
        return _parses(value, to_whole)
    if declared == "boolean":
        return str(value).strip().lower() in _BOOLEAN_TEXT
    return False


def declared_fields(source: SourceConfig) -> tuple[dict[str, str], bool]:
    """(field → type, whether the declaration is complete, so undeclared fields are drift)."""
    if source.fields is not None:
        return dict(source.fields), True
    model_fields = [
        c for c in CLEANED_MODELS[source.dataset].to_schema().columns if c not in SYSTEM_COLUMNS
    ]
    return {source.mapping.get(f, f): "any" for f in model_fields}, False


def required_fields(source: SourceConfig) -> set[str]:
    """Source fields the cleaned model needs a value for: without them a record is quarantined."""
    schema = CLEANED_MODELS[source.dataset].to_schema()
    return {
        source.mapping.get(name, name)
        for name, column in schema.columns.items()
        if name not in SYSTEM_COLUMNS and not column.nullable
    }


@dataclass
class DriftReport:
    records: int
    declared: dict[str, str]
    complete_declaration: bool
    observed: dict[str, dict[str, int]] = field(default_factory=dict)
    new_fields: list[str] = field(default_factory=list)
    missing_fields: list[str] = field(default_factory=list)
    missing_required: list[str] = field(default_factory=list)
    type_changes: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def drifted(self) -> bool:
        return bool(self.new_fields or self.missing_fields or self.type_changes)

    def summary(self) -> dict[str, Any]:
        """The short form, for a raw asset's materialization metadata."""
        return {
            "records": self.records,
            "new_fields": self.new_fields,
            "missing_fields": self.missing_fields,
            "type_changes": sorted(self.type_changes),
        }

    def describe(self) -> str:
        if not self.records:
            return "no records to compare"
        if not self.drifted:
            return f"{self.records} records match the {len(self.declared)} declared fields"
        parts = []
        if self.new_fields:
            parts.append(f"new: {', '.join(self.new_fields)}")
        if self.missing_fields:
            parts.append(f"missing: {', '.join(self.missing_fields)}")
        if self.type_changes:
            changes = (
                f"{name} ({c['declared']} → {c['observed_as']})"
                for name, c in self.type_changes.items()
            )
            parts.append(f"type changed: {', '.join(changes)}")
        return "; ".join(parts)


def detect_drift(
    records: Iterable[Mapping[str, Any]],
    declared: Mapping[str, str],
    complete_declaration: bool,
    required: Iterable[str] = (),
) -> DriftReport:
    """Compare the records of one partition with the declared fields."""
    kinds: dict[str, Counter[str]] = {}
    nonconforming: Counter[str] = Counter()
    examples: dict[str, Any] = {}
    count = 0
    for record in records:
        count += 1
        for name, value in record.items():
            if name.startswith("_"):
                continue
            kind = value_kind(value)
            kinds.setdefault(name, Counter())
            if kind is None:
                continue
            kinds[name][kind] += 1
            if name in declared and not conforms(declared[name], value):
                nonconforming[name] += 1
                examples.setdefault(name, value)

    report = DriftReport(
        records=count, declared=dict(declared), complete_declaration=complete_declaration
    )
    report.observed = {name: dict(counter) for name, counter in sorted(kinds.items())}
    if not count:
        return report
    if complete_declaration:
        report.new_fields = sorted(set(kinds) - set(declared))
    report.missing_fields = sorted(set(declared) - set(kinds))
    report.missing_required = sorted(set(report.missing_fields) & set(required))
    for name, bad in sorted(nonconforming.items()):
        seen = sum(kinds[name].values())
        if bad * 2 > seen:
            report.type_changes[name] = {
                "declared": declared[name],
                "observed_as": kinds[name].most_common(1)[0][0],
                "nonconforming": bad,
                "of": seen,
                "example": str(examples[name])[:80],
            }
    return report


_CONFORMING = {
    "string": lambda p: p.kinds.get("string", 0),
    "number": lambda p: p.kinds.get("integer", 0) + p.kinds.get("number", 0) + p.text_numbers,
    "integer": lambda p: p.kinds.get("integer", 0) + p.text_wholes,
    "boolean": lambda p: p.kinds.get("boolean", 0) + p.text_booleans,
    "object": lambda p: p.kinds.get("object", 0),
    "array": lambda p: p.kinds.get("array", 0),
}


def drift_from_profiles(
    source: SourceConfig, records: int, profiles: Mapping[str, FieldProfile]
) -> DriftReport:
    """Drift of one day from the field profiles the raw stage measured while encoding.

    The same verdicts as ``detect_drift``, without reading the records again.
    """
    declared, complete = declared_fields(source)
    report = DriftReport(records=records, declared=dict(declared), complete_declaration=complete)
    report.observed = {name: dict(p.kinds) for name, p in sorted(profiles.items())}
    if not records:
        return report
    seen_fields = set(profiles)
    if complete:
        report.new_fields = sorted(seen_fields - set(declared))
    report.missing_fields = sorted(set(declared) - seen_fields)
    report.missing_required = sorted(set(report.missing_fields) & required_fields(source))
    for name, kind in sorted(declared.items()):
        profile = profiles.get(name)
        if profile is None or kind == "any":
            continue
        seen = sum(profile.kinds.values())
        conforming = _CONFORMING[kind](profile) if kind in _CONFORMING else seen
        bad = seen - conforming
        if bad * 2 > seen:
            observed_as = max(profile.kinds.items(), key=lambda kv: kv[1])[0]
            report.type_changes[name] = {
                "declared": kind,
                "observed_as": observed_as,
                "nonconforming": bad,
                "of": seen,
                "example": profile.example or "",
            }
    return report


def source_drift(source: SourceConfig, records: Iterable[Mapping[str, Any]]) -> DriftReport:
    """Drift of one source's records (one partition) against its declaration."""
    declared, complete = declared_fields(source)
    return detect_drift(records, declared, complete, required_fields(source))


def records_by_day(raw: pd.DataFrame) -> dict[str, list[dict[str, Any]]]:
    """The original records (``_record``) of a raw frame, per partition date (ISO)."""
    days: dict[str, list[dict[str, Any]]] = {}
    if raw.empty:
        return days
    for day, text in zip(
        pd.to_datetime(raw["partition_date"]).dt.date, raw["_record"], strict=True
    ):
        days.setdefault(day.isoformat(), []).append(json.loads(text))
    return days


def drift_by_day(source: SourceConfig, raw: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """The drift summary of each day of a raw frame (for the raw asset's metadata)."""
    return {
        day: source_drift(source, records).summary() for day, records in records_by_day(raw).items()
    }
