"""The executor chosen by ``INGEST_EXECUTOR`` (in_process, multiprocess or celery)."""

from __future__ import annotations

import os

import dagster as dg

from ingest_assets.warehouse import warehouse_kind, warehouse_url

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
EXECUTORS = ("in_process", "multiprocess", "celery")
# Imported once by the multiprocess executor's fork server. Modules only: none of them builds
# the definitions (which may start the sandbox API) or opens a connection.
PRELOADED_MODULES = (
    "dagster",
    "pandas",
    "pyarrow",
    "pandera.pandas",
    "duckdb",
    "psycopg",
    "httpx",
    "sqlalchemy",
    "ingest_assets.config",
    "ingest_assets.connectors.sql",
    "ingest_assets.automation.alerts",
    "ingest_assets.assets.raw",
    "ingest_assets.assets.datasets",
    "ingest_assets.assets.checks",
    "ingest_assets.warehouse.postgres_io",
    "ingest_assets.warehouse.duckdb_io",
)


def executor_name() -> str:
    """in_process for DuckDB (one writer per file), multiprocess for PostgreSQL, unless set."""
    name = os.environ.get("INGEST_EXECUTOR")
    if name:
        if name not in EXECUTORS:
            raise ValueError(f"INGEST_EXECUTOR must be one of {', '.join(EXECUTORS)}, not {name!r}")
        return name
    return "in_process" if warehouse_kind(warehouse_url()) == "duckdb" else "multiprocess"


def celery_broker() -> str:
    return os.environ.get("INGEST_CELERY_BROKER") or DEFAULT_BROKER


def build_executor() -> dg.ExecutorDefinition:
    name = executor_name()
    if name == "in_process":
        return dg.in_process_executor
    if name == "multiprocess":
        return dg.multiprocess_executor.configured(
            {
                "max_concurrent": 4,
                # Each step runs in a process forked from a server that has already imported
                # the heavy libraries: a step starts in a fraction of a second instead of
                # paying seconds of imports (most of a small day's run time on 2 cores).
                "start_method": {"forkserver": {"preload_modules": list(PRELOADED_MODULES)}},
            }
        )
    from dagster_celery import celery_executor

    broker = celery_broker()
    return celery_executor.configured(
        {
            "broker": {"env": "INGEST_CELERY_BROKER"}
            if os.environ.get("INGEST_CELERY_BROKER")
            else broker,
            "backend": {"env": "INGEST_CELERY_BROKER"}
            if os.environ.get("INGEST_CELERY_BROKER")
            else broker,
        }
    )
