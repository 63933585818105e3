"""A dataset declaration drafted from what a source sent: ``python -m ingest_assets scaffold``.

The records are profiled field by field (nested objects by dotted path) and printed as a
declaration to edit. Types and nullability are settings (what every sampled value reads as);
candidate keys are the fields unique and present in every sampled record; a nested or
unusually named field gets a ``mapping``. Ranges and small value sets are printed only as
comments: a rule copied from a sample holds for the sample by construction, so it proves
nothing; the rules a user means are theirs to write. No dagster here.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ingest_assets.datasets.declaration import DATASET_NAME, RESERVED_NAMES, SYSTEM_COLUMNS
from ingest_assets.records.encode import NUMBER_PATTERN

_NUMBER = re.compile(NUMBER_PATTERN)
_INTEGER = re.compile(r"^\s*[-+]?\d+\s*$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")
_INT64 = 2**63
# Nested objects are followed this deep; anything deeper is kept whole as json.
MAX_DEPTH = 4
SMALL_SET = 10


def _kind(value: Any) -> tuple[str, Any]:
    """What one present value reads as: (kind, comparable value); kinds widen in ``_merge``."""
    if isinstance(value, bool):
        return "boolean", value
    if isinstance(value, int):
        return ("integer", value) if -_INT64 <= value < _INT64 else ("text", str(value))
    if isinstance(value, float):
        return "number", value
    if isinstance(value, list | dict):
        return "json", None
    text = str(value).strip()
    if text.lower() in ("true", "false"):
        return "boolean", text.lower() == "true"
    if _INTEGER.match(text):
        whole = int(text)
        return ("integer", whole) if -_INT64 <= whole < _INT64 else ("text", text)
    if _NUMBER.match(text):
        places = len(text.partition(".")[2].split("e")[0].split("E")[0]) if "." in text else 0
        if "e" in text.lower():
            return "number", float(text)
        return f"decimal:{places}", float(text)
    # A date or timestamp that does not exist (2024-02-30) still says what the field holds.
    if _DATE.match(text):
        try:
            return "date", dt.date.fromisoformat(text)
        except ValueError:
            return "date", None
    if _TIMESTAMP.match(text):
        try:
            stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return "timestamp", None
        utc = stamp.astimezone(dt.UTC) if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)
        return "timestamp", utc
    return "text", text


def _merge(kinds: set[str]) -> tuple[str, int | None]:
    """The declared type that every kind seen fits, and a decimal's scale."""
    scales = [int(k.split(":")[1]) for k in kinds if k.startswith("decimal:")]
    plain = {k for k in kinds if not k.startswith("decimal:")}
    if scales:
        plain.add("decimal")
    if not plain:
        return "text", None
    if len(plain) == 1:
        (only,) = plain
        return (only, min(max(scales), 38)) if only == "decimal" else (only, None)
    if plain <= {"integer", "decimal"}:
        return "decimal", min(max(scales), 38)
    if plain <= {"integer", "number", "decimal"}:
        return "number", None
    if plain <= {"date", "timestamp"}:
        return "timestamp", None
    return "text", None


@dataclass
class FieldProfile:
    """What one field path held across the sampled records."""

    path: tuple[str, ...]
    present: int = 0
    kinds: set[str] = field(default_factory=set)
    values: list[Any] = field(default_factory=list)
    distinct: set[str] = field(default_factory=set)

    def add(self, value: Any) -> None:
        if value is None or (isinstance(value, str) and not value.strip()):
            return
        self.present += 1
        kind, comparable = _kind(value)
        self.kinds.add(kind)
        if comparable is not None:
            self.values.append(comparable)
        if len(self.distinct) <= 10_000:
            self.distinct.add(json.dumps(value, sort_keys=True, default=str))

    @property
    def type(self) -> tuple[str, int | None]:
        return _merge(self.kinds)


def _walk(record: Mapping[str, Any], prefix: tuple[str, ...], out: dict) -> None:
    for name, value in record.items():
        path = (*prefix, str(name))
        if isinstance(value, dict) and len(path) < MAX_DEPTH:
            _walk(value, path, out)
        else:
            out[path] = value


def profile(
    records: Iterable[Mapping[str, Any]],
) -> tuple[int, dict[tuple[str, ...], FieldProfile]]:
    """(records seen, a profile per field path, in first-seen order)."""
    profiles: dict[tuple[str, ...], FieldProfile] = {}
    count = 0
    for record in records:
        if not isinstance(record, Mapping) or "_parse_error" in record:
            continue
        count += 1
        flat: dict[tuple[str, ...], Any] = {}
        _walk(record, (), flat)
        for path, value in flat.items():
            profiles.setdefault(path, FieldProfile(path)).add(value)
    return count, profiles


def snake(text: str) -> str:
    """``discountPercentage`` → ``discount_percentage``; anything else than [a-z0-9] → ``_``."""
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", text)
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def field_names(paths: Iterable[tuple[str, ...]]) -> dict[tuple[str, ...], str]:
    """A valid, unique dataset field name for each path."""
    names: dict[tuple[str, ...], str] = {}
    taken: set[str] = set()
    for path in paths:
        name = "_".join(p for p in (snake(part) for part in path) if p) or "field"
        if name[0].isdigit():
            name = f"f_{name}"
        if name in SYSTEM_COLUMNS:
            name = f"{name}_field"
        unique, n = name, 2
        while unique in taken:
            unique, n = f"{name}_{n}", n + 1
        taken.add(unique)
        names[path] = unique
    return names


def _shown(value: Any) -> str:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, float):
        return repr(value)
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else str(value)


def _observed(p: FieldProfile, count: int, type_: str) -> str:
    notes = []
    if p.present < count:
        notes.append(f"missing or null in {count - p.present} of {count}")
    values = p.values
    if values and type_ in ("integer", "number", "decimal", "date", "timestamp"):
        with contextlib.suppress(TypeError):
            notes.append(f"seen {_shown(min(values))} .. {_shown(max(values))}")
    elif type_ == "text" and 0 < len(p.distinct) <= SMALL_SET < count:
        shown = sorted({_shown(v) for v in values})
        notes.append("seen " + ", ".join(shown))
    elif type_ == "text" and values:
        lengths = [len(str(v)) for v in values]
        notes.append(f"length {min(lengths)} .. {max(lengths)}")
    return "; ".join(notes)


def _quoted(text: str) -> str:
    plain = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]*", text) and text.lower() not in (
        "true", "false", "null", "yes", "no", "on", "off",
    )  # fmt: skip
    return text if plain else json.dumps(text, ensure_ascii=False)


@dataclass
class Scaffold:
    """A drafted declaration and the mapping a source needs for it."""

    name: str
    records: int
    fields: list[tuple[str, str, int | None, bool, str]]  # name, type, scale, nullable, note
    mapping: dict[str, str]
    keys: list[str]

    def text(self, origin: str, source: Mapping[str, Any] | None = None) -> str:
        width = max([len(f[0]) for f in self.fields] + [8])
        lines = [
            f"# Drafted from {origin} ({self.records} records). Types and nullability are what",
            "# every sampled value reads as: check them. Comments say what the sample held; they",
            "# are not rules (a rule copied from a sample proves nothing): add the rules you mean.",
            "datasets:",
            f"  {self.name}:",
            '    description: ""',
        ]
        if self.keys:
            note = "unique and present in every sampled record: " + ", ".join(self.keys)
            lines.append(f"    key: [{self.keys[0]}]  # {note}")
        else:
            first = self.fields[0][0] if self.fields else "id"
            lines.append(f"    key: [{first}]  # no field is unique in the sample: choose a key")
        lines.append("    fields:")
        for name, type_, scale, nullable, note in self.fields:
            settings = [f"type: {type_}"]
            if scale is not None:
                settings.append(f"scale: {scale}")
            if nullable:
                settings.append("nullable: true")
            entry = f"      {name}:{' ' * (width - len(name))} {{{', '.join(settings)}}}"
            lines.append(entry + (f"  # {note}" if note else ""))
        if source is not None:
            lines += ["sources:", f"  {source['name']}:"]
            lines += [f"    {k}: {_quoted(str(v))}" for k, v in source.items() if k != "name"]
            lines.append(f"    dataset: {self.name}")
            if self.mapping:
                lines.append("    mapping:")
                for name, path in self.mapping.items():
                    lines.append(f"      {name}: {_quoted(path)}")
        elif self.mapping:
            lines.append("# The source block needs this mapping (dataset field: source field):")
            lines.append("#   mapping:")
            for name, path in self.mapping.items():
                lines.append(f"#     {name}: {_quoted(path)}")
        return "\n".join(lines) + "\n"


def scaffold(name: str, records: Iterable[Mapping[str, Any]]) -> Scaffold:
    """Profile the records and draft the declaration of dataset ``name``."""
    if not DATASET_NAME.match(name) or name in RESERVED_NAMES:
        raise ValueError(
            f"{name!r} is not a dataset name (lower case letters, digits and _; "
            f"not {', '.join(RESERVED_NAMES)})"
        )
    count, profiles = profile(records)
    if not count:
        raise ValueError("no records to profile (every record was empty or unparseable)")
    names = field_names(profiles)
    fields, mapping, keys = [], {}, []
    for path, p in profiles.items():
        field_name = names[path]
        type_, scale = p.type
        if p.present == 0:
            type_ = "text"
        fields.append((field_name, type_, scale, p.present < count, _observed(p, count, type_)))
        source_name = ".".join(path)
        if field_name != source_name:
            mapping[field_name] = source_name
        if (
            p.present == count
            and len(p.distinct) == count
            and type_ in ("text", "integer", "date", "timestamp")
        ):
            keys.append(field_name)
    keys.sort(key=lambda k: (not re.search(r"(^|_)(id|key|sku|number)($|_)", k), 0))
    return Scaffold(name, count, fields, mapping, keys)
