"""The connector registry: built-in kinds plus plugins from the ``ingest_assets.connectors`` entry points."""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ingest_assets.connectors.base import Connector

ENTRY_POINT_GROUP = "ingest_assets.connectors"
_BUILTIN_MODULES = (
    "ingest_assets.connectors.rest",
    "ingest_assets.connectors.files",
    "ingest_assets.connectors.sql",
)
_REGISTRY: dict[str, type[Connector]] = {}
_loaded = False


def register(cls: type[Connector]) -> type[Connector]:
    """Class decorator: make a connector available under its ``kind``."""
    kind = getattr(cls, "kind", None)
    if not kind:
        raise TypeError(f"{cls.__name__} needs a 'kind' class attribute to be registered")
    existing = _REGISTRY.get(kind)
    if existing is not None and existing is not cls:
        raise ValueError(f"connector kind {kind!r} is already registered by {existing.__module__}")
    _REGISTRY[kind] = cls
    return cls


def _load() -> None:
    global _loaded
    if _loaded:
        return
    for module in _BUILTIN_MODULES:
        import_module(module)
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        cls = entry_point.load()
        if getattr(cls, "kind", None) != entry_point.name:
            raise ValueError(
                f"entry point {entry_point.name!r} in group {ENTRY_POINT_GROUP} loads "
                f"{cls.__name__}, whose kind is {getattr(cls, 'kind', None)!r}; they must match"
            )
        register(cls)
    _loaded = True


def reload_plugins() -> None:
    """Look at the entry points again (after installing a plugin in a running process)."""
    global _loaded
    _loaded = False
    _load()


def registered_kinds() -> list[str]:
    _load()
    return sorted(_REGISTRY)


def get_connector_class(kind: str) -> type[Connector]:
    _load()
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise KeyError(
            f"unknown connector kind {kind!r}; known kinds: {', '.join(sorted(_REGISTRY))} "
            f"(plugins register under the entry-point group {ENTRY_POINT_GROUP!r})"
        ) from None
