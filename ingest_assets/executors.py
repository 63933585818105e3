"""The executor chosen by ``INGEST_EXECUTOR`` (in_process, multiprocess or celery)."""

from __future__ import annotations

import os

import dagster as dg

from ingest_assets.warehouse import warehouse_kind, warehouse_url

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
EXECUTORS = ("in_process", "multiprocess", "celery")


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
        return dg.multiprocess_executor.configured({"max_concurrent": 4})
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
