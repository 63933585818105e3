"""The production topology, end to end: every Dagster process on its own, as deployed.

- the code location served by ``dagster api grpc`` (the run workers start from it),
- ``dagster-webserver`` and ``dagster-daemon`` loading it over gRPC,
- instance storage on PostgreSQL from the repo's ``dagster.yaml`` (``QueuedRunCoordinator``),
- a Celery worker (Redis broker) executing the steps (``INGEST_EXECUTOR=celery``),
- the warehouse on PostgreSQL.

A partition run is submitted through the GraphQL API (``DagsterGraphQLClient``), queued, started
by the daemon, executed by the Celery worker and polled to success; its rows are read back from
the warehouse. PostgreSQL and Redis missing: skipped, or failed under CI=true.
"""

from __future__ import annotations

import shutil
import subprocess
from contextlib import ExitStack
from pathlib import Path

import dagster as dg
import pytest
from dagster_graphql import DagsterGraphQLClient

from ingest_assets.automation.jobs import PIPELINE_JOB
from ingest_assets.sandbox import Sandbox
from ingest_assets_tests.conftest import DEMO_PARTITION, require_service
from ingest_assets_tests.dagster_services import (
    BIN,
    free_port,
    location_loaded,
    service,
    wait_until,
    webserver,
)
from ingest_assets_tests.pg import REPO_ROOT, query, require_postgres, subprocess_env, temp_database

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.timeout(900),
    # gql (under DagsterGraphQLClient) warns about its own calling convention on every request.
    pytest.mark.filterwarnings("ignore:Using variable_values:DeprecationWarning"),
]
BROKER = "redis://127.0.0.1:6379/12"
LOCATION = "ingest_assets"
# Ours, not the calling shell's: the shipped sources and landing files.
CLEARED = ("INGEST_SOURCES_FILE", "INGEST_LANDING_DIR", "INGEST_RATE_REDIS_URL")


def flush_broker() -> None:
    import redis

    redis.Redis.from_url(BROKER).flushdb()


def grpc_serving(port: int) -> bool:
    done = subprocess.run(
        [str(BIN / "dagster"), "api", "grpc-health-check", "-h", "127.0.0.1", "-p", str(port)],
        capture_output=True,
        timeout=60,
    )
    return done.returncode == 0


def event_types(instance_url: str, run_id: str) -> list[str]:
    rows = query(
        instance_url,
        "SELECT dagster_event_type FROM event_logs WHERE run_id = %s AND dagster_event_type "
        "IS NOT NULL ORDER BY id",
        [run_id],
    )
    return [event for (event,) in rows]


def test_a_partition_run_submitted_over_graphql_runs_on_celery_via_the_daemon(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    require_postgres()
    require_service("Redis", "127.0.0.1", 6379)
    flush_broker()
    with ExitStack() as stack:
        instance_url = stack.enter_context(temp_database("dagster_instance"))
        warehouse_url = stack.enter_context(temp_database("warehouse"))
        stack.callback(flush_broker)

        dagster_home = tmp_path / "dagster_home"
        dagster_home.mkdir()
        shutil.copy(REPO_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
        env = {
            k: v
            for k, v in subprocess_env(
                PATH=f"{BIN}:{subprocess_env()['PATH']}",
                DAGSTER_HOME=str(dagster_home),
                DAGSTER_PG_URL=instance_url,
                INGEST_HOME=str(tmp_path / "ingest_home"),
                INGEST_WAREHOUSE_URL=warehouse_url,
                INGEST_EXECUTOR="celery",
                INGEST_CELERY_BROKER=BROKER,
                DUMMYJSON_BASE_URL=sandbox.url,
                OPEN_METEO_BASE_URL=sandbox.url,
            ).items()
            if k not in CLEARED
        }
        logs = tmp_path / "logs"

        grpc_port = free_port()
        code_server = stack.enter_context(
            service(
                "grpc",
                [str(BIN / "dagster"), "api", "grpc", "-m", "ingest_assets.definitions", "-a", "defs",
                 "--location-name", LOCATION, "-h", "127.0.0.1", "-p", str(grpc_port)],
                env, tmp_path, logs,
            )
        )  # fmt: skip
        wait_until("the gRPC code server", lambda: grpc_serving(grpc_port), [code_server])
        workspace = tmp_path / "workspace.yaml"
        workspace.write_text(
            "load_from:\n  - grpc_server:\n      host: 127.0.0.1\n"
            f"      port: {grpc_port}\n      location_name: {LOCATION}\n"
        )

        worker_config = tmp_path / "celery_worker.yaml"
        worker_config.write_text(
            f'execution:\n  config:\n    broker: "{BROKER}"\n    backend: "{BROKER}"\n'
        )
        worker = stack.enter_context(
            service(
                "celery_worker",
                [str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
                 "-y", str(worker_config), "-n", "ingest-topology-worker"],
                env, tmp_path, logs,
            )
        )  # fmt: skip
        daemon = stack.enter_context(
            service(
                "daemon",
                [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)],
                env,
                tmp_path,
                logs,
            )
        )
        url, web = webserver(env, tmp_path, logs, "-w", str(workspace))
        web_server = stack.enter_context(web)
        processes = [code_server, worker, daemon, web_server]
        wait_until("the Celery worker", lambda: "ready." in worker.output(20_000), processes)
        wait_until("the code location in the webserver", lambda: location_loaded(url), processes)

        client = DagsterGraphQLClient("127.0.0.1", port_number=int(url.rsplit(":", 1)[1]))
        run_id = client.submit_job_execution(
            PIPELINE_JOB,
            repository_location_name=LOCATION,
            tags={"dagster/partition": DEMO_PARTITION},
        )

        def finished() -> bool:
            status = client.get_run_status(run_id).value
            assert status not in ("FAILURE", "CANCELED"), f"run {run_id}: {status}\n" + "\n".join(
                f"--- {p.name}\n{p.output()}" for p in processes
            )
            return status == "SUCCESS"

        wait_until(f"run {run_id} to succeed", finished, processes, timeout=600)

        # Queued by the QueuedRunCoordinator, started by the daemon, steps run by Celery.
        events = event_types(instance_url, run_id)
        order = [
            events.index(dg.DagsterEventType[name].value)
            for name in ("RUN_ENQUEUED", "RUN_STARTING", "RUN_START", "RUN_SUCCESS")
        ]
        assert order == sorted(order), events
        assert query(
            instance_url, "SELECT value FROM run_tags WHERE run_id = %s AND key = %s",
            [run_id, "dagster/partition"],
        ) == [(DEMO_PARTITION,)]  # fmt: skip
        submitted = query(
            instance_url,
            "SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type = "
            "'ENGINE_EVENT' AND event LIKE %s",
            [run_id, "%Submitting celery task for step%"],
        )
        steps = query(
            instance_url,
            "SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type = %s",
            [run_id, dg.DagsterEventType.STEP_SUCCESS.value],
        )
        assert submitted[0][0] == steps[0][0] >= 13  # every step went through Celery
        worker_log = worker.output(200_000)
        assert "execute_plan" in worker_log and "succeeded" in worker_log

        def rows(table: str, where: str = "TRUE") -> int:
            sql = f"SELECT count(*) FROM {table} WHERE partition_date = %s AND {where}"
            return query(warehouse_url, sql, [DEMO_PARTITION])[0][0]

        assert rows("cleaned.products") == 250
        assert rows("metrics.weather") == 5
        partner = "source = 'partner_feed'"
        assert rows("raw.partner_feed") == rows("cleaned.products", partner) + rows(
            "quarantine.records", partner
        )
