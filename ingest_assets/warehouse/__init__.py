"""Warehouse IO managers and the one function that picks one from ``INGEST_WAREHOUSE_URL``."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

DEFAULT_HOME = "./.ingest"


def ingest_home() -> Path:
    return Path(os.environ.get("INGEST_HOME") or DEFAULT_HOME)


def warehouse_url() -> str:
    """The configured warehouse URL, defaulting to ``warehouse.duckdb`` in ``INGEST_HOME``."""
    url = os.environ.get("INGEST_WAREHOUSE_URL")
    if url:
        return url
    return f"duckdb:///{ingest_home() / 'warehouse.duckdb'}"


def duckdb_path(url: str) -> str:
    """SQLAlchemy's rule: ``duckdb:///rel.duckdb`` is relative, ``duckdb:////abs.duckdb`` absolute."""
    prefix = "duckdb:///"
    if not url.startswith(prefix):
        raise ValueError(f"not a DuckDB URL: {url!r} (expected {prefix}<path>)")
    path = url[len(prefix) :]
    if not path:
        raise ValueError("a DuckDB URL needs a file path: duckdb:///warehouse.duckdb")
    return path


def warehouse_kind(url: str) -> str:
    scheme = url.split(":", 1)[0].lower()
    if scheme == "duckdb":
        return "duckdb"
    if scheme.startswith("postgres"):
        return "postgresql"
    raise ValueError(
        "INGEST_WAREHOUSE_URL must start with duckdb:/// or postgresql:// "
        f"(got a URL with scheme {scheme!r})"
    )


def build_io_manager(url: str | None = None) -> dg.ConfigurableIOManager:
    """The IO manager for a warehouse URL: DuckDB file or PostgreSQL database."""
    url = url or warehouse_url()
    kind = warehouse_kind(url)
    if kind == "duckdb":
        from ingest_assets.warehouse.duckdb_io import DuckDBPartitionedIOManager

        return DuckDBPartitionedIOManager(path=duckdb_path(url))
    from ingest_assets.warehouse.postgres_io import PostgresPartitionedIOManager

    if os.environ.get("INGEST_WAREHOUSE_URL") == url:
        # Keep the password out of Dagster's stored config: resolve it at run time.
        return PostgresPartitionedIOManager(url=dg.EnvVar("INGEST_WAREHOUSE_URL"))
    return PostgresPartitionedIOManager(url=url)
