"""Schema drift: the fields a source's records carry, compared with the fields it declares.

A source declares its fields in ``sources.yaml`` (``fields: {name: type}``, the names as they
arrive, before mapping). Without a declaration the expected fields are the ones the mapping
reads for the dataset's cleaned model; extra fields are then not drift.

Three kinds of drift, each measured over one partition's records:

- a **new field**: present in some record, not declared (only for sources that declare fields);
- a **missing field**: declared, present in no record (a missing *required* field also sends
  every record to quarantine: the cleaned model's ``not_nullable`` check);
- a **type change**: most non-null values of a declared field are not of its declared type.

The dataset's fields come compiled (``datasets``); a field mapped by a dotted path is expected
as its first part (``user`` for ``user.login``).

Types are wire types (``string``, ``integer``, ``number``, ``boolean``, ``object``, ``array``,
``any``). CSV and XML carry text only, so a text value counts as a number, an integer or a
boolean when the record split would read it as one (``" 12.0 "`` is an integer, ``"5.5"`` is
not). Fields starting with ``_`` are the connector's own notes (parse errors) and never drift.
The raw stage profiles each field while it encodes the records (``records.encode``); the
verdict is taken from those profiles, once. No dagster here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ingest_assets.config import SourceConfig
from ingest_assets.records.encode import FieldProfile, RawEncoder

if TYPE_CHECKING:
    from ingest_assets.datasets import CompiledDataset


def _source_field(source: SourceConfig, name: str) -> str:
    return source.mapping.get(name, name).split(".", 1)[0]


def declared_fields(source: SourceConfig, dataset: CompiledDataset) -> tuple[dict[str, str], bool]:
    """(field → type, whether the declaration is complete, so undeclared fields are drift)."""
    if source.fields is not None:
        return dict(source.fields), True
    return {_source_field(source, f): "any" for f in dataset.field_names}, False


def required_fields(source: SourceConfig, dataset: CompiledDataset) -> set[str]:
    """Source fields the dataset needs a value for: without them a record is quarantined."""
    return {_source_field(source, f.name) for f in dataset.fields if not f.nullable}


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


_CONFORMING = {
    "string": lambda p: p.kinds.get("string", 0),
    "number": lambda p: p.kinds.get("integer", 0) + p.kinds.get("number", 0) + p.text_numbers,
    "integer": lambda p: p.kinds.get("integer", 0) + p.text_wholes,
    "boolean": lambda p: p.kinds.get("boolean", 0) + p.text_booleans,
    "object": lambda p: p.kinds.get("object", 0),
    "array": lambda p: p.kinds.get("array", 0),
}


def compare(
    records: int,
    profiles: Mapping[str, FieldProfile],
    declared: Mapping[str, str],
    complete_declaration: bool,
    required: Iterable[str] = (),
) -> DriftReport:
    """The drift of one partition: its records' field profiles against the declared fields."""
    report = DriftReport(
        records=records, declared=dict(declared), complete_declaration=complete_declaration
    )
    report.observed = {name: dict(p.kinds) for name, p in sorted(profiles.items())}
    if not records:
        return report
    seen_fields = set(profiles)
    if complete_declaration:
        report.new_fields = sorted(seen_fields - set(declared))
    report.missing_fields = sorted(set(declared) - seen_fields)
    report.missing_required = sorted(set(report.missing_fields) & set(required))
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


def drift_from_profiles(
    source: SourceConfig,
    dataset: CompiledDataset,
    records: int,
    profiles: Mapping[str, FieldProfile],
) -> DriftReport:
    """Drift of one day from the field profiles the raw stage measured while encoding."""
    declared, complete = declared_fields(source, dataset)
    return compare(records, profiles, declared, complete, required_fields(source, dataset))


def detect_drift(
    records: Iterable[Mapping[str, Any]],
    declared: Mapping[str, str],
    complete_declaration: bool,
    required: Iterable[str] = (),
) -> DriftReport:
    """Compare records held in memory with the declared fields, profiled as the raw stage
    profiles them."""
    records = list(records)
    encoder = RawEncoder()
    if records:
        encoder.encode(records)
    return compare(len(records), encoder.profiles, declared, complete_declaration, required)


def source_drift(
    source: SourceConfig, dataset: CompiledDataset, records: Iterable[Mapping[str, Any]]
) -> DriftReport:
    """Drift of one source's records (one partition) against its declaration."""
    declared, complete = declared_fields(source, dataset)
    return detect_drift(records, declared, complete, required_fields(source, dataset))
