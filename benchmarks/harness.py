"""What every benchmark shares: sizes, results, measured subprocesses, the sandbox, databases.

Every measured side runs in a fresh process, so one comparison's memory, caches and imports
never flatter or burden the next, and peak RSS can be read from ``/usr/bin/time -v``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg
import yaml

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
DAGSTER = str(Path(sys.executable).with_name("dagster"))
PARTITION = "2024-06-01"
SEED = 7
FULL_RECORDS = 1_000_000
ADMIN_URL = os.environ.get("INGEST_TEST_PG_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
GIB = 1024**3
MIB = 1024**2


def scale() -> float:
    """The fraction of the full sizes to run: ``BENCH_RECORDS`` / 1M, else ``BENCH_SCALE``."""
    if os.environ.get("BENCH_RECORDS"):
        return int(os.environ["BENCH_RECORDS"].replace("_", "")) / FULL_RECORDS
    return float(os.environ.get("BENCH_SCALE") or 1.0)


def scaled(full: int, minimum: int = 1) -> int:
    """``full`` at the current scale, never below ``minimum``."""
    return max(minimum, round(full * scale()))


@dataclasses.dataclass
class Result:
    """One row of the table and of ``bench.json``."""

    name: str
    unit: str
    target: str  # e.g. ">= 10": the ratio the issue asks for
    ours: float | None = None
    baseline: float | None = None
    ratio: float | None = None
    detail: dict[str, Any] = dataclasses.field(default_factory=dict)
    error: str | None = None

    @property
    def met(self) -> bool | None:
        if self.ratio is None or not math.isfinite(self.ratio):
            return None
        op, value = self.target.split()
        return self.ratio >= float(value) if op == ">=" else self.ratio <= float(value)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ours": self.ours,
            "baseline": self.baseline,
            "ratio": self.ratio,
            "unit": self.unit,
            "target": self.target,
            "met": self.met,
            "detail": self.detail,
        }
        if self.error:
            out["error"] = self.error
        return out


def announce(result: Result) -> Result:
    """One line as soon as a comparison is done: a full run takes a while."""
    if result.error:
        state = "ERROR " + result.error.strip().splitlines()[-1][:200]
    else:
        state = (
            f"ours {result.ours:,} vs {result.baseline:,} {result.unit}: ratio {result.ratio} "
            f"(target {result.target})"
        )
    print(f"  {result.name}: {state}", flush=True)
    return result


def ratio(ours: float, baseline: float) -> float:
    """``ours / baseline``, rounded for reading."""
    if not baseline or not math.isfinite(ours / baseline):
        raise ValueError(f"no ratio: ours {ours}, baseline {baseline}")
    return round(ours / baseline, 3)


# --------------------------------------------------------------------------------------------
# Measured subprocesses
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Measured:
    seconds: float
    max_rss_bytes: int | None
    stdout: str
    stderr_tail: str

    @property
    def last_json(self) -> dict[str, Any]:
        """The JSON object a worker printed as its last stdout line."""
        for line in reversed(self.stdout.strip().splitlines()):
            if line.startswith("{"):
                return json.loads(line)
        raise RuntimeError(f"the worker printed no result; stderr: {self.stderr_tail[-1500:]}")


class StepFailed(RuntimeError):
    """A measured process exited non-zero; the message carries the end of its stderr."""


_MAX_RSS = re.compile(r"Maximum resident set size \(kbytes\): (\d+)")


def measure_process(
    command: Sequence[str],
    env: Mapping[str, str],
    cwd: Path,
    timeout: float = 3600,
) -> Measured:
    """Run ``command`` under ``/usr/bin/time -v``: wall seconds and the largest process's peak RSS.

    ``ru_maxrss`` of a reaped child covers the descendants it waited for (Dagster's step
    processes), as the largest single process, not their sum.
    """
    timer = ["/usr/bin/time", "-v"] if Path("/usr/bin/time").exists() else []
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        done = subprocess.run(
            [*timer, *command], env=dict(env), cwd=cwd, stdout=out, stderr=err, timeout=timeout
        )
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    match = _MAX_RSS.search(stderr)
    # /usr/bin/time appends its report; the process's own last words come before it.
    own = re.split(r"(?m)^(?:Command exited with non-zero status|\tCommand being timed:)", stderr)[
        0
    ]
    tail = own[-4000:]
    if done.returncode != 0:
        raise StepFailed(f"{Path(command[0]).name} exited {done.returncode}: {tail[-2500:]}")
    return Measured(seconds, int(match.group(1)) * 1024 if match else None, stdout, tail)


def step_durations(dagster_home: str | Path) -> dict[str, float]:
    """Seconds of every successful step of the one run stored in ``dagster_home``."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        runs = instance.get_runs()
        if len(runs) != 1 or runs[0].status != dg.DagsterRunStatus.SUCCESS:
            raise RuntimeError(f"expected one successful run, found {[r.status for r in runs]}")
        events = instance.all_logs(runs[0].run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
        return {
            e.step_key: round(e.dagster_event.event_specific_data.duration_ms / 1000, 2)
            for e in events
        }


def base_env(**extra: str) -> dict[str, str]:
    """This environment without any INGEST_/DAGSTER_/DLT settings, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("INGEST_", "DAGSTER_", "DLT_")) or k == "INGEST_TEST_PG_URL"
    }
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def dagster_env(home: Path, **extra: str) -> dict[str, str]:
    """An INGEST_HOME and a DAGSTER_HOME (runs kept, telemetry off) inside ``home``."""
    dagster_home = home / "dagster_home"
    dagster_home.mkdir(parents=True, exist_ok=True)
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return base_env(INGEST_HOME=str(home), DAGSTER_HOME=str(dagster_home), **extra)


def materialize_command(select: str, partition: str = PARTITION) -> list[str]:
    """What a user types: ``dagster asset materialize -m ingest_assets.definitions``."""
    return [
        DAGSTER,
        "asset",
        "materialize",
        "-m",
        "ingest_assets.definitions",
        "--select",
        select,
        "--partition",
        partition,
    ]


def worker_command(task: str, **args: Any) -> list[str]:
    """A task of ``benchmarks/workers.py`` in its own interpreter."""
    return [PYTHON, str(REPO / "benchmarks" / "workers.py"), task, json.dumps(args)]


# --------------------------------------------------------------------------------------------
# The sandbox API as its own process (its serving must not share our GIL)
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def sandbox_process(records: int | None = None, latency_s: float = 0.0) -> Iterator[str]:
    """``python -m ingest_assets.sandbox`` on a free loopback port; yields its base URL."""
    command = [PYTHON, "-m", "ingest_assets.sandbox", "--port", "0"]
    if records is not None:
        command += ["--generated", str(records), "--generated-seed", str(SEED)]
    if latency_s:
        command += ["--latency", str(latency_s)]
    process = subprocess.Popen(command, env=base_env(), cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if "listening on" not in line:
            raise RuntimeError(f"the sandbox did not start: {line!r}")
        yield line.rsplit(" ", 1)[1].strip()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------


def database_url(admin_url: str, name: str) -> str:
    base, _, query = admin_url.partition("?")
    url = base.rsplit("/", 1)[0] + "/" + name
    return f"{url}?{query}" if query else url


@contextlib.contextmanager
def temp_database(prefix: str = "ingest_bench") -> Iterator[str]:
    """A fresh database on the server of ``INGEST_TEST_PG_URL``; dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_url(ADMIN_URL, name)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def scalar(url: str, sql: str, *params: Any) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql, params).fetchone()
    return row[0] if row else None


# --------------------------------------------------------------------------------------------
# A sources file with one REST products source at the sandbox
# --------------------------------------------------------------------------------------------


def products_source(
    base_url: str, page_size: int, name: str = "dummyjson_products", **http: Any
) -> dict[str, Any]:
    """The shipped ``dummyjson_products`` block, pointed at ``base_url`` with ``page_size``.

    The shipped rate limit (20/s, polite to dummyjson.com) would make the benchmark measure the
    limiter; on loopback it is lifted. Concurrency stays the shipped default unless given.
    """
    shipped = yaml.safe_load((REPO / "ingest_assets" / "sources.yaml").read_text())
    block = dict(shipped["sources"]["dummyjson_products"])
    block.pop("schedule", None)
    block["base_url"] = base_url
    block["pagination"] = {**block["pagination"], "page_size": page_size}
    block["http"] = {"rate_limit_per_s": 100_000, "burst": 1000, **http}
    block["description"] = f"Generated products served by the sandbox ({name})."
    return {"sources": {name: block}}


def write_sources(folder: Path, config: Mapping[str, Any]) -> Path:
    path = folder / "sources.yaml"
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    return path


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix=f"{prefix}_"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
