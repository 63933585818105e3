"""Connectors turn a source's configuration into batches of records; they know no warehouse."""

from ingest_assets.connectors.base import Connector, FetchContext, FetchStats, collect
from ingest_assets.connectors.registry import get_connector_class, register, registered_kinds

__all__ = [
    "Connector",
    "FetchContext",
    "FetchStats",
    "collect",
    "get_connector_class",
    "register",
    "registered_kinds",
]
