"""Reading a sources file: its YAML, its datasets (compiled) and its sources (validated).

This sits above ``config`` (the models, a leaf) and the connector registry: configuration flows
one way, file → models → connectors, with no import back. A bad file fails with the file (and
line), the source or dataset, the field and the reason.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from ingest_assets.config import (
    ConfigError,
    Defaults,
    SourceConfig,
    SourcesFile,
    source_problems,
    sources_file_path,
)
from ingest_assets.connectors.registry import get_connector_class
from ingest_assets.datasets import DeclarationError, YamlText, catalog_for

TOP_LEVEL_KEYS = ("extends", "defaults", "sources", "datasets")


def _format_error(path: Path, source: str | None, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(block)"
        where = f"source {source!r}, field {field!r}" if source else f"field {field!r}"
        lines.append(f"{path}: {where}: {err['msg']}")
    return "\n".join(lines)


def _base_of(path: Path, raw: dict, seen: tuple[Path, ...]) -> SourcesFile | None:
    """The sources file ``extends:`` names (relative to this one), loaded first."""
    extends = raw.get("extends")
    if extends is None:
        return None
    if not isinstance(extends, str) or not extends.strip():
        raise ConfigError(f"{path}: extends: expected the path of another sources file")
    base = (path.parent / extends).resolve()
    if base in seen:
        raise ConfigError(f"{path}: extends: {extends!r} extends this file again (a circle)")
    return load_sources(base, (*seen, base))


def load_sources(path: str | Path | None = None, _seen: tuple[Path, ...] = ()) -> SourcesFile:
    """Read and validate a sources file, its datasets and each connector's own options.

    ``extends: other.yaml`` takes that file's sources and datasets first (this file's
    ``defaults`` apply to its own sources only); a source name may appear once in all."""
    path = Path(path) if path else sources_file_path()
    try:
        text = YamlText.read(path)
    except DeclarationError as exc:
        raise ConfigError(str(exc).replace(f"{path.name}:", f"{path}:", 1)) from None
    raw = text.data
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with a non-empty 'sources' mapping")
    base = _base_of(path, raw, (*_seen, path.resolve()))
    own_sources = raw.get("sources")
    if not isinstance(own_sources, dict) or not (own_sources or base):
        raise ConfigError(f"{path}: expected a mapping with a non-empty 'sources' mapping")
    unknown_top = set(raw) - set(TOP_LEVEL_KEYS)
    if unknown_top:
        raise ConfigError(
            f"{path}: unknown top-level keys: {', '.join(sorted(unknown_top))} "
            f"(one of {', '.join(TOP_LEVEL_KEYS)})"
        )
    try:
        catalog = catalog_for(text, base.catalog if base else None)
    except DeclarationError as exc:
        raise ConfigError(str(exc)) from None
    try:
        defaults = Defaults.model_validate(raw.get("defaults") or {})
    except ValidationError as exc:
        raise ConfigError(
            _format_error(path, None, exc).replace("field '", "field 'defaults.")
        ) from exc

    sources = list(base.sources) if base else []
    for name, block in raw["sources"].items():
        where = f"{path}:{text.line_of(['sources', name]) or '?'}"
        if any(s.name == name for s in sources):
            raise ConfigError(f"{where}: source {name!r}: defined already in {base.path}")
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
            "archive": {**defaults.archive.model_dump(), **(block.get("archive") or {})},
        }
        try:
            source = SourceConfig.model_validate(merged)
        except ValidationError as exc:
            raise ConfigError(_format_error(path, name, exc)) from exc
        if source.dataset not in catalog:
            raise ConfigError(
                f"{where}: source {name!r}, field 'dataset': unknown dataset {source.dataset!r}; "
                f"known: {', '.join(catalog.names)} (declare it under datasets:)"
            )
        try:
            connector_class = get_connector_class(source.connector)
        except KeyError as exc:
            raise ConfigError(f"{path}: source {name!r}, field 'connector': {exc.args[0]}") from exc
        try:
            connector_class.Options.model_validate(source.options)
        except ValidationError as exc:
            raise ConfigError(_format_error(path, name, exc)) from exc
        problems = source_problems(source, catalog[source.dataset])
        if problems:
            raise ConfigError(
                "\n".join(f"{path}: source {name!r}, field {f!r}: {p}" for f, p in problems)
            )
        sources.append(source)
    return SourcesFile(path=str(path), sources=tuple(sources), catalog=catalog)
