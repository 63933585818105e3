"""The executor chosen by ``INGEST_EXECUTOR`` (in_process, multiprocess or celery), and the
refusals of what cannot work once Celery workers run on other machines.

Celery settings live here once, for both ends: the executor that sends the steps (in the run
worker) and the app the workers run (``ingest_assets.celery_app``).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg

from ingest_assets.warehouse import warehouse_kind, warehouse_url
from ingest_assets.warehouse.common import redact_url

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
DEPLOYMENTS = ("single_host", "distributed")
# Seconds after which a step whose worker vanished (killed, host or link down) is handed to
# another worker. Celery on Redis cannot tell a lost worker from a slow one, so this must exceed
# the longest step, or a step still running is started a second time elsewhere.
DEFAULT_VISIBILITY_TIMEOUT_S = 900
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


def visibility_timeout_s() -> int:
    value = os.environ.get("INGEST_CELERY_VISIBILITY_TIMEOUT_S", "").strip()
    if not value:
        return DEFAULT_VISIBILITY_TIMEOUT_S
    if not value.isdigit() or int(value) < 1:
        raise ValueError(
            f"INGEST_CELERY_VISIBILITY_TIMEOUT_S must be a whole number of seconds, not {value!r}"
        )
    return int(value)


def celery_settings() -> dict:
    """Celery settings of both the executor and the workers: nothing is lost with a worker."""
    timeout = visibility_timeout_s()
    return {
        # A step is acknowledged when it ends, not when a worker takes it: a worker killed
        # mid-step (or cut off) leaves the step in Redis, and another worker runs it again.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            # dagster-celery's own defaults, for publishing.
            "max_retries": 3,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
            "visibility_timeout": timeout,
            # Look for abandoned steps often, so one is re-run soon after its timeout.
            "unacked_restore_interval": max(1, min(10, timeout // 10)),
            "unacked_restore_throttle": 1,
            # A broker behind a dead link does not close the connection: without these a
            # worker or run worker would wait on it forever instead of reconnecting.
            "socket_timeout": 30,
            "socket_connect_timeout": 10,
            "socket_keepalive": True,
            "health_check_interval": 10,
        },
        "redis_socket_timeout": 30,
        "redis_socket_connect_timeout": 10,
        "redis_socket_keepalive": True,
        "redis_retry_on_timeout": True,
    }


def _from_env_or(value: str) -> str | dict:
    # The broker URL may hold a password: Dagster stores the variable's name, not its value.
    return {"env": "INGEST_CELERY_BROKER"} if os.environ.get("INGEST_CELERY_BROKER") else value


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
            "broker": _from_env_or(broker),
            "backend": _from_env_or(broker),
            "config_source": celery_settings(),
        }
    )


def celery_app_args() -> dict:
    """What ``dagster_celery.make_app`` takes to build the workers' app: the same broker,
    backend and settings as the executor above."""
    from dagster_celery.executor import CeleryExecutor

    broker = celery_broker()
    return CeleryExecutor.for_cli(
        broker=broker, backend=broker, config_source=celery_settings()
    ).app_args()


class DeploymentError(ValueError):
    """A configuration that cannot work with Celery workers on other machines."""


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def deployment() -> str:
    """``INGEST_DEPLOYMENT``, else inferred: ``distributed`` when Celery runs the steps through a
    broker off loopback (a worker can only reach a loopback broker from this machine)."""
    name = os.environ.get("INGEST_DEPLOYMENT", "").strip()
    if name:
        if name not in DEPLOYMENTS:
            raise ValueError(
                f"INGEST_DEPLOYMENT must be one of {', '.join(DEPLOYMENTS)}, not {name!r}"
            )
        return name
    if executor_name() != "celery":
        return "single_host"
    host = urlsplit(celery_broker()).hostname or "localhost"
    return "single_host" if _is_loopback(host) else "distributed"


def shared_dirs() -> list[Path]:
    """``INGEST_SHARED_DIRS``: folders mounted at the same path on every host (NFS, a volume)."""
    value = os.environ.get("INGEST_SHARED_DIRS", "")
    return [Path(p).resolve() for p in value.split(os.pathsep) if p.strip()]


def _local_path(location: str) -> Path | None:
    """The folder ``location`` names on this machine's disk; None for an object store URL."""
    parts = urlsplit(location)
    if parts.scheme == "file":
        return Path(parts.path)
    if "://" in location:
        return None
    return Path(location)


def _unshared(location: str) -> bool:
    path = _local_path(location)
    if path is None:
        return False
    path = path.resolve()
    return not any(path.is_relative_to(shared) for shared in shared_dirs())


def check_deployment(warehouse: str | None = None, archiving: bool = True) -> None:
    """Fail the load, saying why and what to use instead, when Celery workers run on other
    machines (see ``deployment``) and need something only this machine has.

    ``warehouse``: the warehouse URL (default: the environment's); ``archiving``: whether any
    source archives what it fetches.
    """
    if executor_name() != "celery" or deployment() != "distributed":
        return
    why = (
        "the steps run on Celery workers on other machines (INGEST_EXECUTOR=celery, broker "
        f"{redact_url(celery_broker())}, deployment distributed)"
    )
    problems = []
    url = warehouse or warehouse_url()
    if warehouse_kind(url) == "duckdb":
        problems.append(
            f"the warehouse is the DuckDB file {url.split(':///', 1)[1]}: {why}, and each would "
            "open its own copy of that path on its own disk (a DuckDB file also has one writer "
            "at a time). Use PostgreSQL: INGEST_WAREHOUSE_URL=postgresql://user@host:5432/db; "
            "or keep one machine with INGEST_EXECUTOR=multiprocess."
        )
    landing = os.environ.get("INGEST_LANDING_DIR", "").strip()
    if landing and _unshared(landing):
        problems.append(
            f"INGEST_LANDING_DIR={landing} is a folder on this machine's disk: {why}, which "
            "would not find the partner and supplier files there. Mount one folder at the same "
            "path on every host (NFS, EFS, a shared volume) and list it in INGEST_SHARED_DIRS "
            "(folders separated by ':')."
        )
    if archiving:
        from ingest_assets.archive import archive_location

        archive = archive_location()
        if _unshared(archive):
            problems.append(
                f"the raw archive {archive} (INGEST_ARCHIVE_URL, default INGEST_HOME/archive) is "
                f"a folder on this machine's disk: {why}, each archiving into its own disk, so a "
                "day could not be re-materialized offline elsewhere. Use an fsspec URL "
                "(INGEST_ARCHIVE_URL=s3://bucket/archive, gs://…), or a folder every host "
                "mounts, listed in INGEST_SHARED_DIRS."
            )
    if problems:
        raise DeploymentError(
            "this configuration cannot work across machines:\n- " + "\n- ".join(problems)
        )
