"""Connectors turn a source's configuration into batches of records; they know no warehouse."""

from ingest_assets.connectors.base import (
    Connector,
    FetchContext,
    FetchError,
    FetchStats,
    FileParseError,
    PagingError,
    PermanentFetchError,
    collect,
    stream,
)
from ingest_assets.connectors.registry import get_connector_class, register, registered_kinds

__all__ = [
    "Connector",
    "FetchContext",
    "FetchError",
    "FetchStats",
    "FileParseError",
    "PagingError",
    "PermanentFetchError",
    "collect",
    "stream",
    "get_connector_class",
    "register",
    "registered_kinds",
]
