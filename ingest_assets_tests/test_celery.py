"""Scale-out: a real Celery worker (Redis broker) executes the steps of a real run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ingest_assets.sandbox import Sandbox
from ingest_assets_tests.conftest import DEMO_PARTITION, read_table, require_service

BIN = Path(sys.executable).parent
BROKER = "redis://127.0.0.1:6379/11"
pytestmark = [pytest.mark.redis, pytest.mark.slow]


def flush_broker() -> None:
    import redis

    redis.Redis.from_url(BROKER).flushdb()


def test_a_run_executes_on_a_celery_worker(tmp_path: Path, sandbox: Sandbox) -> None:
    require_service("Redis", "127.0.0.1", 6379)
    flush_broker()
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    worker_config = tmp_path / "celery_worker.yaml"
    worker_config.write_text(
        f'execution:\n  config:\n    broker: "{BROKER}"\n    backend: "{BROKER}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "DAGSTER_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        DAGSTER_HOME=str(dagster_home),
        INGEST_HOME=str(tmp_path),
        INGEST_EXECUTOR="celery",
        INGEST_CELERY_BROKER=BROKER,
        DUMMYJSON_BASE_URL=sandbox.url,
        OPEN_METEO_BASE_URL=sandbox.url,
    )
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app", "-y", str(worker_config), "-n", "ingest-test-worker"],
        env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while "ready." not in (tmp_path / "worker.log").read_text():
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the Celery worker did not start"
            time.sleep(0.5)
        done = subprocess.run(
            [str(BIN / "dagster"), "asset", "materialize", "-m", "ingest_assets.definitions", "--select", "*", "--partition", DEMO_PARTITION],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-4000:]
        assert 'Submitting celery task for step "raw__partner_feed"' in done.stderr
        worker_log = (tmp_path / "worker.log").read_text()
        assert "execute_plan" in worker_log and "succeeded" in worker_log
        assert len(read_table(tmp_path, "cleaned.products")) == 250
        assert len(read_table(tmp_path, "metrics.weather")) == 5
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
        log.close()
        flush_broker()
