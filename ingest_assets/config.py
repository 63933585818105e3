"""Typed configuration: ``sources.yaml`` parsed into models once, at definitions load time.

A bad file fails loading with a message that names the file, the source and the field.
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

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_SOURCES_FILE = PACKAGE_DIR / "sources.yaml"
DEFAULT_LANDING_DIR = PACKAGE_DIR / "sample_landing"
DATASETS = ("products", "weather")
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


class Defaults(StrictModel):
    retry: RetrySettings = RetrySettings()
    http: HttpSettings = HttpSettings()


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

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        if value not in DATASETS:
            raise ValueError(f"unknown dataset {value!r}; known: {', '.join(DATASETS)}")
        return value

    @property
    def options(self) -> dict[str, Any]:
        """The connector-specific fields of this source's block."""
        return dict(self.model_extra or {})


class SourcesFile(StrictModel):
    path: str
    sources: tuple[SourceConfig, ...]

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


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice (PyYAML silently keeps the last one)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise ConfigError(
                f"duplicate key {key!r} (line {key_node.start_mark.line + 1}): "
                "each source and field may appear once"
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


_TEMPLATE_REF = re.compile(r"(?<!\$)\{([A-Za-z_][A-Za-z0-9_]*)\}")


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


def _format_error(path: Path, source: str | None, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(block)"
        where = f"source {source!r}, field {field!r}" if source else f"field {field!r}"
        lines.append(f"{path}: {where}: {err['msg']}")
    return "\n".join(lines)


def load_sources(path: str | Path | None = None) -> SourcesFile:
    """Read and validate a sources file, including each connector's own options."""
    from ingest_assets.connectors.registry import get_connector_class

    path = Path(path) if path else sources_file_path()
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: the sources file does not exist") from exc
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("sources"), dict) or not raw["sources"]:
        raise ConfigError(f"{path}: expected a mapping with a non-empty 'sources' mapping")
    unknown_top = set(raw) - {"defaults", "sources"}
    if unknown_top:
        raise ConfigError(f"{path}: unknown top-level keys: {', '.join(sorted(unknown_top))}")
    try:
        defaults = Defaults.model_validate(raw.get("defaults") or {})
    except ValidationError as exc:
        raise ConfigError(
            _format_error(path, None, exc).replace("field '", "field 'defaults.")
        ) from exc

    sources = []
    for name, block in raw["sources"].items():
        if not isinstance(block, dict):
            raise ConfigError(f"{path}: source {name!r}: expected a mapping of fields")
        if "name" in block:
            raise ConfigError(
                f"{path}: source {name!r}, field 'name': the key of the block is the name"
            )
        merged = {
            **block,
            "name": name,
            "retry": {**defaults.retry.model_dump(), **(block.get("retry") or {})},
            "http": {**defaults.http.model_dump(), **(block.get("http") or {})},
        }
        try:
            source = SourceConfig.model_validate(merged)
        except ValidationError as exc:
            raise ConfigError(_format_error(path, name, exc)) from exc
        try:
            connector_class = get_connector_class(source.connector)
        except KeyError as exc:
            raise ConfigError(f"{path}: source {name!r}, field 'connector': {exc.args[0]}") from exc
        try:
            connector_class.Options.model_validate(source.options)
        except ValidationError as exc:
            raise ConfigError(_format_error(path, name, exc)) from exc
        sources.append(source)
    return SourcesFile(path=str(path), sources=tuple(sources))
