"""Typed configuration: ``sources.yaml`` parsed into models once, at definitions load time.

A bad file fails loading with a message that names the file, the source and the field. The
file is read by ``ingest_assets.loading`` (above this module and the connector registry); this
module only defines the models and the template rules, and imports nothing of the project but
the datasets it receives compiled.
Values may reference environment variables as ``${NAME}`` or ``${NAME:-default}``; they are
kept as written here and resolved only when a connector runs, so secrets never reach Dagster's
metadata.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ingest_assets.datasets import Catalog, CompiledDataset

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_SOURCES_FILE = PACKAGE_DIR / "sources.yaml"
DEFAULT_LANDING_DIR = PACKAGE_DIR / "sample_landing"
FieldType = Literal["string", "integer", "number", "boolean", "object", "array", "any"]

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SOURCE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class ConfigError(ValueError):
    """The sources file is not valid; the message says where and why."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetrySettings(StrictModel):
    """Dagster's step retry policy for a raw asset (whole-step retries)."""

    max_retries: int = Field(3, ge=0, le=20)
    delay_s: float = Field(2.0, ge=0)
    backoff: Literal["exponential", "linear"] = "exponential"
    jitter: Literal["full", "plus_minus", "none"] = "plus_minus"


class HttpSettings(StrictModel):
    """Request-level resilience: timeouts, retries with backoff, rate limit, circuit breaker."""

    timeout_s: float = Field(30.0, gt=0)
    max_attempts: int = Field(5, ge=1, le=20)
    backoff_base_s: float = Field(0.5, ge=0)
    backoff_max_s: float = Field(30.0, ge=0)
    retry_after_max_s: float = Field(60.0, ge=0)
    rate_limit_per_s: float = Field(10.0, gt=0)
    burst: int = Field(5, ge=1)
    max_concurrency: int = Field(4, ge=1, le=64)
    breaker_failure_threshold: int = Field(8, ge=1)
    breaker_reset_s: float = Field(15.0, ge=0)
    headers: dict[str, str] = Field(default_factory=dict)


class ArchiveSettings(StrictModel):
    """What a raw asset keeps of what it fetched (DESIGN.md "Raw archive")."""

    enabled: bool = True
    # Archived days older than this are dropped by the archive_retention job; None keeps all.
    keep_days: int | None = Field(None, ge=0)


class Defaults(StrictModel):
    retry: RetrySettings = RetrySettings()
    http: HttpSettings = HttpSettings()
    archive: ArchiveSettings = ArchiveSettings()


class SourceConfig(BaseModel):
    """The fields every source has; the connector's own options are checked by its model."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    connector: str
    dataset: str
    description: str = ""
    mapping: dict[str, str] = Field(default_factory=dict)
    retry: RetrySettings = RetrySettings()
    http: HttpSettings = HttpSettings()
    archive: ArchiveSettings = ArchiveSettings()
    schedule: str | None = None
    sensor: bool = False
    owners: list[str] = Field(default_factory=list)
    # The fields a record is expected to carry, as they arrive (before mapping); drift is
    # measured against them. Unset: only the mapped fields are expected, extra ones are fine.
    fields: dict[str, FieldType] | None = None
    # raw/<name> not materialized for this long: its freshness warns (fails at twice as long).
    freshness_warn_hours: float = Field(26.0, ge=1)

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, value: str) -> str:
        if not _SOURCE_NAME.match(value):
            raise ValueError("must be lower_snake_case (it becomes a table name)")
        return value

    @property
    def options(self) -> dict[str, Any]:
        """The connector-specific fields of this source's block."""
        return dict(self.model_extra or {})


class SourcesFile(BaseModel):
    """A sources file: its sources, in order, and every dataset they may feed (compiled)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    path: str
    sources: tuple[SourceConfig, ...]
    catalog: Catalog

    def dataset(self, name: str) -> CompiledDataset:
        return self.catalog[name]

    @property
    def datasets(self) -> list[CompiledDataset]:
        """The datasets some source feeds, in catalog order."""
        fed = {s.dataset for s in self.sources}
        return [d for d in self.catalog if d.name in fed]

    def by_name(self, name: str) -> SourceConfig:
        for source in self.sources:
            if source.name == name:
                return source
        raise KeyError(name)

    def for_dataset(self, dataset: str) -> list[SourceConfig]:
        return [s for s in self.sources if s.dataset == dataset]


def resolve_env(value: Any, env: Mapping[str, str] | None = None) -> Any:
    """Substitute ``${NAME}`` / ``${NAME:-default}`` in strings, recursively; missing → error."""
    env = os.environ if env is None else env
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if env.get(name):
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"environment variable {name} is not set")

        return _ENV_REF.sub(substitute, value)
    if isinstance(value, Mapping):
        return {k: resolve_env(v, env) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [resolve_env(v, env) for v in value]
    return value


_TEMPLATE_REF = re.compile(r"(?<!\$)\{([A-Za-z_][A-Za-z0-9_]*)\}")
# The names every configured string may use: what ``FetchContext.template_values`` gives (a
# test keeps the two equal). A ``fan_out`` item's fields come on top, per request.
TEMPLATE_NAMES = ("date", "landing_dir")


def render_template(text: str, values: Mapping[str, Any]) -> str:
    """Fill ``{name}`` references (``{date}``, ``{landing_dir}``, fan-out fields).

    ``${ENV}`` references are left for ``resolve_env``; an unknown name is an error.
    """

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise ConfigError(
                f"unknown template name {{{name}}} in {text!r}; known: {', '.join(sorted(values))}"
            )
        return str(values[name])

    return _TEMPLATE_REF.sub(substitute, text)


def sources_file_path() -> Path:
    return Path(os.environ.get("INGEST_SOURCES_FILE") or DEFAULT_SOURCES_FILE)


def landing_dir() -> Path:
    return Path(os.environ.get("INGEST_LANDING_DIR") or DEFAULT_LANDING_DIR)


def _walk_strings(value: Any, where: str) -> list[tuple[str, str]]:
    """Every string in a block of options, with its dotted field name (list items by index)."""
    if isinstance(value, str):
        return [(where, value)]
    if isinstance(value, Mapping):
        return [
            p
            for k, v in value.items()
            for p in _walk_strings(v, f"{where}.{k}" if where else str(k))
        ]
    if isinstance(value, list | tuple):
        return [p for i, v in enumerate(value) for p in _walk_strings(v, f"{where}.{i}")]
    return []


def _fan_out_names(options: Mapping[str, Any]) -> set[str]:
    """The fields every ``fan_out`` item has: a template may use them on every request."""
    items = options.get("fan_out")
    if not isinstance(items, list) or not items or not all(isinstance(i, Mapping) for i in items):
        return set()
    return set.intersection(*(set(item) for item in items))


def _shown(url: str) -> str:
    """A URL fit for an error message: no credentials, no query string."""
    url = re.split(r"[?#]", url, maxsplit=1)[0]
    if "@" not in url:
        return url
    # Everything before the last "@" may be credentials, however malformed the rest is.
    head, _, tail = url.rpartition("@")
    scheme = _URL_SCHEME.match(head)
    return f"{scheme.group(0) if scheme else ''}***@{tail}"


_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def _url_problem(field: str, written: str) -> str | None:
    """Why a URL field can never work (no ``scheme://``), or None.

    Environment references are resolved with the environment of the load (defaults included);
    a URL from a variable that is not set yet is checked when the connector runs.
    """
    try:
        url = resolve_env(written)
    except ConfigError:
        return None
    names = [m.group(1) for m in _ENV_REF.finditer(written) if os.environ.get(m.group(1))]
    origin = f" (from {', '.join(names)})" if names else ""
    match = _URL_SCHEME.match(url)
    if match is None:
        return (
            f"{_shown(url)!r}{origin} has no scheme: write it as scheme://host/..., "
            "e.g. https://api.example.com"
        )
    if field.rsplit(".", 1)[-1] == "base_url" and match.group(1).lower() not in ("http", "https"):
        return f"{_shown(url)!r}{origin} must start with http:// or https://"
    return None


def source_problems(source: SourceConfig, dataset: CompiledDataset) -> list[tuple[str, str]]:
    """(field, problem) for what loads fine but can never work when the source runs.

    Unknown ``{name}`` templates, mapping targets that are not fields of the dataset, a cron
    Dagster does not accept, URLs without a scheme.
    """
    from dagster._utils.schedules import is_valid_cron_string

    problems: list[tuple[str, str]] = []
    known = {*TEMPLATE_NAMES, *_fan_out_names(source.options)}
    for field, text in _walk_strings(source.options, ""):
        if field == "fan_out" or field.startswith("fan_out."):
            continue
        unknown = sorted({m.group(1) for m in _TEMPLATE_REF.finditer(text)} - known)
        if unknown:
            names = ", ".join(f"{{{n}}}" for n in unknown)
            allowed = ", ".join(f"{{{n}}}" for n in sorted(known))
            problems.append((field, f"unknown template name {names}; known: {allowed}"))
    for field, text in _walk_strings(source.options, ""):
        last = field.rsplit(".", 1)[-1]
        if last == "url" or last.endswith("_url"):
            problem = _url_problem(field, text)
            if problem:
                problems.append((field, problem))
    targets = dataset.field_names
    for target in source.mapping:
        if target not in targets:
            fields = ", ".join(targets)
            problem = f"{target!r} is not a field of the {source.dataset} dataset ({fields})"
            problems.append((f"mapping.{target}", problem))
    if source.schedule is not None and not is_valid_cron_string(source.schedule):
        example = "'15 0 * * *' (00:15 UTC every day)"
        problem = f"{source.schedule!r} is not a cron schedule of five fields, e.g. {example}"
        problems.append(("schedule", problem))
    return problems
