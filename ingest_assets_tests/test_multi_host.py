"""Beyond one machine: the topology of ``deploy/compose.yaml`` on three hosts, nothing lost.

The hosts are network namespaces of this machine, each with its own veth link, address and
hostname (``ip netns`` + ``unshare --uts``): ``ctl`` runs the code server, the webserver and the
daemon, ``w1`` and ``w2`` a Celery worker each. Every service runs the ``command`` its compose
service declares (read from the file), and reaches PostgreSQL, Redis and the sandbox API by
their compose names, which resolve to its link's address on the machine (a forwarder there
stands for the servers, which listen on loopback only): nothing inside a host uses loopback to
reach them, and a cut link cuts everything.

Then: three days' runs, submitted at once, spread over both workers and make the reference
tables; a worker killed with SIGKILL mid-fetch and a worker host whose link is cut mid-run both
leave every table exactly as those clean runs made it (the step runs again on the other worker:
late acknowledgement and the visibility timeout).

Skipped only where namespaces cannot be created (not root, no ``ip``), and never under CI=true.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from dagster_graphql import DagsterGraphQLClient

from ingest_assets.automation.jobs import PIPELINE_JOB
from ingest_assets.executors import DeploymentError, check_deployment
from ingest_assets.sandbox import Sandbox
from ingest_assets_tests.conftest import require_service
from ingest_assets_tests.dagster_services import (
    BIN,
    Service,
    location_loaded,
    service,
    stop_group,
    wait_until,
)
from ingest_assets_tests.pg import (
    REPO_ROOT,
    in_ci,
    query,
    require_postgres,
    subprocess_env,
    temp_database,
)

pytestmark = [
    pytest.mark.timeout(900),
    pytest.mark.filterwarnings("ignore:Using variable_values:DeprecationWarning"),
]
COMPOSE = REPO_ROOT / "deploy" / "compose.yaml"
LOCATION = "ingest_assets"
DAYS = ["2024-06-01", "2024-06-02", "2024-06-03"]
BROKER_DB, RATE_DB = 14, 15
SANDBOX_PORT = 8080
# Short, so a lost step is re-run within the test; above the longest step (about 30 s here).
VISIBILITY_S = 45
# DummyJSON's budget (shared by the hosts through Redis): small pages at a low rate make its
# fetch last seconds, long enough to be caught in flight.
RATE_PER_S, BURST, PAGE_SIZE = 5.0, 1, 5
RAW_STEP = "raw__dummyjson_products"
# Columns that differ from run to run by design; metrics.ingestion's request counters and
# timings too (DESIGN: a re-run may retry differently).
VARYING = {"_run_id", "_ingested_at", "run_id", "quarantined_at"}
INGESTION_COUNTERS = {"requests", "retries", "failed_requests", "duration_s"}
HOST_NAMES = ("ctl", "w1", "w2")


# --- hosts ------------------------------------------------------------------------------------


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def namespaces_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = f"mhprobe{secrets.token_hex(3)}"
    made = ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    ip("netns", "del", probe, check=False)
    return None


def require_namespaces() -> None:
    reason = namespaces_unavailable()
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"{reason} (CI=true: the multi-host test must run, not skip)", pytrace=False)
    pytest.skip(reason)


@dataclass
class Host:
    """One machine: a network namespace linked to this one by a veth pair."""

    name: str
    netns: str
    link: str  # the veth end on the machine's side
    gateway: str  # the machine's address on the link: where the host finds the servers
    address: str

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` inside the host, under its own hostname (a UTS namespace of its own)."""
        return [
            "ip", "netns", "exec", self.netns, "unshare", "--uts",
            "sh", "-c", 'hostname "$0" && exec "$@"', self.name, *argv,
        ]  # fmt: skip

    def cut(self) -> None:
        """Pull the cable: packets are dropped, no connection is told (no RST, no FIN)."""
        ip("link", "set", self.link, "down")


def free_subnet() -> str:
    """A /24 of 10/8 that no interface or route of this machine uses (``10.a.b``)."""
    used = ip("-4", "addr").stdout + ip("-4", "route").stdout
    for _ in range(100):
        prefix = f"10.{secrets.randbelow(150) + 100}.{secrets.randbelow(250)}"
        if f"{prefix}." not in used:
            return prefix
    raise AssertionError("no free 10.x.y.0/24 subnet")


@contextmanager
def network(names: Sequence[str]) -> Iterator[dict[str, Host]]:
    """Hosts on their own /30 links; removed (with every process left in them) at the end."""
    tag, prefix = secrets.token_hex(2), free_subnet()
    hosts: dict[str, Host] = {}
    try:
        for i, name in enumerate(names):
            host = Host(
                name=name,
                netns=f"mh{tag}{name}",
                link=f"mh{tag}{name}o",
                gateway=f"{prefix}.{4 * i + 1}",
                address=f"{prefix}.{4 * i + 2}",
            )
            hosts[name] = host
            inner = f"mh{tag}{name}i"
            ip("netns", "add", host.netns)
            ip("link", "add", host.link, "type", "veth", "peer", "name", inner)
            ip("link", "set", inner, "netns", host.netns)
            ip("addr", "add", f"{host.gateway}/30", "dev", host.link)
            ip("link", "set", host.link, "up")
            ip("-n", host.netns, "addr", "add", f"{host.address}/30", "dev", inner)
            ip("-n", host.netns, "link", "set", inner, "up")
            ip("-n", host.netns, "link", "set", "lo", "up")
        ctl = hosts[names[0]]
        for host in hosts.values():
            # `ip netns exec` mounts /etc/netns/<netns>/hosts over /etc/hosts: the compose
            # service names resolve as on compose's network.
            etc = Path("/etc/netns") / host.netns
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text(
                f"127.0.0.1 localhost\n{host.gateway} postgres redis sandbox\n"
                f"{ctl.address} code-server webserver daemon\n{host.address} {host.name}\n"
            )
        yield hosts
    finally:
        for host in hosts.values():
            pids = ip("netns", "pids", host.netns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            ip("netns", "del", host.netns, check=False)
            ip("link", "del", host.link, check=False)
            shutil.rmtree(Path("/etc/netns") / host.netns, ignore_errors=True)
        with contextlib.suppress(OSError):
            Path("/etc/netns").rmdir()


class Forwarder:
    """TCP from the links' machine-side addresses to servers on loopback, in one thread.

    Keepalive on the hosts' side behaves as a server's own would: a host whose link is cut is
    noticed within seconds and its connections closed, so PostgreSQL rolls back what it held.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.servers: list[asyncio.Server] = []

    def add(self, host: str, port: int, target_port: int) -> None:
        async def start() -> asyncio.Server:
            return await asyncio.start_server(
                lambda r, w: self._handle(r, w, target_port), host, port
            )

        self.servers.append(asyncio.run_coroutine_threadsafe(start(), self.loop).result(10))

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target_port: int
    ) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 3)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 8000)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except OSError:
            pass
        finally:
            sink.close()

    def close(self) -> None:
        async def stop() -> None:
            for server in self.servers:
                server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


# --- the topology -----------------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def option(command: Sequence[str], flag: str) -> str:
    return command[list(command).index(flag) + 1]


@dataclass
class Topology:
    hosts: dict[str, Host]
    sandbox: Sandbox
    instance_url: str
    warehouse_url: str
    env: dict[str, dict[str, str]]
    stack: ExitStack
    logs: Path
    services: dict[str, Service] = field(default_factory=dict)

    @property
    def client(self) -> DagsterGraphQLClient:
        return DagsterGraphQLClient(self.hosts["ctl"].address, port_number=self.web_port)

    @property
    def web_port(self) -> int:
        return int(option(compose()["services"]["webserver"]["command"], "-p"))

    def start(self, name: str, host: str, compose_service: str) -> Service:
        """Run the compose service's own command on ``host`` (from the repo root, as the
        image's WORKDIR holds the repo)."""
        command = compose()["services"][compose_service]["command"]
        self.services[name] = self.stack.enter_context(
            service(name, self.hosts[host].command(command), self.env[host], REPO_ROOT, self.logs)
        )
        return self.services[name]

    def running(self) -> list[Service]:
        return [s for s in self.services.values() if s.process.poll() is None]

    def logs_text(self) -> str:
        return "\n".join(f"--- {s.name}\n{s.output(6000)}" for s in self.services.values())

    def start_worker(self, host: str) -> Service:
        worker = self.start(f"worker_{host}", host, "worker")
        wait_until(
            f"the Celery worker on {host}", lambda: "ready." in worker.output(50_000), [worker]
        )
        return worker

    def kill(self, host: str) -> None:
        os.killpg(self.services[f"worker_{host}"].process.pid, signal.SIGKILL)
        self.services[f"worker_{host}"].process.wait(30)

    def wait_for_runs(self, run_ids: Sequence[str], timeout: float) -> dict[str, str]:
        statuses: dict[str, str] = {}

        def done() -> bool:
            rows = query(
                self.instance_url,
                "SELECT run_id, status FROM runs WHERE run_id = ANY(%s)",
                [list(run_ids)],
            )
            statuses.update(dict(rows))
            return len(rows) == len(run_ids) and all(
                s in ("SUCCESS", "FAILURE", "CANCELED") for _, s in rows
            )

        wait_until(f"runs {list(run_ids)} to end", done, self.control_services(), timeout)
        return statuses

    def control_services(self) -> list[Service]:
        return [self.services[n] for n in ("code_server", "webserver", "daemon")]

    def submit(self, day: str) -> str:
        return self.client.submit_job_execution(
            PIPELINE_JOB, repository_location_name=LOCATION, tags={"dagster/partition": day}
        )

    def failure_report(self, run_id: str) -> str:
        rows = query(
            self.instance_url,
            "SELECT dagster_event_type, substr(event, 1, 1500) FROM event_logs WHERE run_id = %s "
            "AND dagster_event_type IN ('STEP_FAILURE', 'RUN_FAILURE', 'ENGINE_EVENT') "
            "ORDER BY id",
            [run_id],
        )
        return "\n".join(f"{kind}: {text}" for kind, text in rows) + "\n" + self.logs_text()


def flush_redis() -> None:
    import redis

    for db in (BROKER_DB, RATE_DB):
        redis.Redis(host="127.0.0.1", port=6379, db=db).flushdb()


def shared_folder(root: Path) -> Path:
    """The folder every host mounts: landing files for three days and the sources file."""
    shared = root / "shared"
    landing = shared / "landing"
    shutil.copytree(REPO_ROOT / "ingest_assets" / "sample_landing", landing)
    for folder, suffix in (("partner_feed", "csv"), ("supplier_catalog", "xml")):
        shutil.copy(
            landing / folder / f"{DAYS[0]}.{suffix}", landing / folder / f"{DAYS[2]}.{suffix}"
        )
    sources = yaml.safe_load((REPO_ROOT / "ingest_assets" / "sources.yaml").read_text())
    products = sources["sources"]["dummyjson_products"]
    products["pagination"]["page_size"] = PAGE_SIZE
    products["http"] = {"rate_limit_per_s": RATE_PER_S, "burst": BURST}
    (shared / "sources.yaml").write_text(yaml.safe_dump(sources, sort_keys=False))
    (shared / "archive").mkdir()
    return shared


def host_env(
    root: Path, host: str, shared: Path, instance_url: str, warehouse_url: str
) -> dict[str, str]:
    home = root / host
    (home / "dagster_home").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster_home" / "dagster.yaml")
    inside = {
        # The databases by the compose name of their server: resolved inside the host.
        "DAGSTER_PG_URL": instance_url.replace("127.0.0.1", "postgres"),
        "INGEST_WAREHOUSE_URL": warehouse_url.replace("127.0.0.1", "postgres"),
        "DAGSTER_HOME": str(home / "dagster_home"),
        "INGEST_HOME": str(home / "ingest"),
        "INGEST_EXECUTOR": "celery",
        "INGEST_CELERY_BROKER": f"redis://redis:6379/{BROKER_DB}",
        "INGEST_RATE_REDIS_URL": f"redis://redis:6379/{RATE_DB}",
        "INGEST_DEPLOYMENT": "distributed",
        "INGEST_SHARED_DIRS": str(shared),
        "INGEST_LANDING_DIR": str(shared / "landing"),
        "INGEST_ARCHIVE_URL": str(shared / "archive"),
        "INGEST_CELERY_VISIBILITY_TIMEOUT_S": str(VISIBILITY_S),
        "INGEST_SOURCES_FILE": str(shared / "sources.yaml"),
        "DUMMYJSON_BASE_URL": f"http://sandbox:{SANDBOX_PORT}",
        "OPEN_METEO_BASE_URL": f"http://sandbox:{SANDBOX_PORT}",
    }
    declared = compose()["x-environment"]
    assert set(declared) <= set(inside), f"compose sets what the test does not: {declared}"
    env = subprocess_env(PATH=f"{BIN}:{subprocess_env()['PATH']}", **inside)
    return {k: v for k, v in env.items() if k not in ("INGEST_FETCH", "INGEST_SANDBOX")}


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    require_namespaces()
    require_postgres()
    require_service("Redis", "127.0.0.1", 6379)
    root = tmp_path_factory.mktemp("multi_host")
    flush_redis()
    with ExitStack() as stack:
        stack.callback(flush_redis)
        instance_url = stack.enter_context(temp_database("dagster_instance"))
        warehouse_url = stack.enter_context(temp_database("warehouse"))
        sandbox = stack.enter_context(Sandbox(port=0))
        hosts = stack.enter_context(network(HOST_NAMES))
        forwarder = Forwarder()
        stack.callback(forwarder.close)
        for host in hosts.values():
            for port, target in ((5432, 5432), (6379, 6379), (SANDBOX_PORT, sandbox.port)):
                forwarder.add(host.gateway, port, target)
        shared = shared_folder(root)
        env = {h: host_env(root, h, shared, instance_url, warehouse_url) for h in hosts}
        top = Topology(hosts, sandbox, instance_url, warehouse_url, env, stack, root / "logs")
        # Stopped before the hosts go (an ExitStack unwinds in reverse): quick, then forced.
        stack.callback(lambda: [stop_group(s.process) for s in top.services.values()])

        grpc_port = int(option(compose()["services"]["code-server"]["command"], "-p"))
        code_server = top.start("code_server", "ctl", "code-server")
        wait_until(
            "the code server on ctl",
            lambda: grpc_serving(hosts["ctl"].address, grpc_port),
            [code_server],
        )
        top.start("webserver", "ctl", "webserver")
        top.start("daemon", "ctl", "daemon")
        for name in ("w1", "w2"):
            top.start(f"worker_{name}", name, "worker")
        web = f"http://{hosts['ctl'].address}:{top.web_port}"
        wait_until("the code location", lambda: location_loaded(web), top.running())
        for name in ("w1", "w2"):
            worker = top.services[f"worker_{name}"]
            wait_until(f"worker {name}", lambda w=worker: "ready." in w.output(50_000), [worker])
        yield top


def grpc_serving(host: str, port: int) -> bool:
    done = subprocess.run(
        [str(BIN / "dagster"), "api", "grpc-health-check", "-h", host, "-p", str(port)],
        capture_output=True,
        timeout=60,
    )
    return done.returncode == 0


# --- what the runs did ------------------------------------------------------------------------


def tables_digest(url: str) -> dict[str, tuple[int, str]]:
    """Rows and a digest of every warehouse table, without the columns a re-run changes."""
    tables = query(
        url,
        "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema IN "
        "('raw', 'cleaned', 'features', 'metrics', 'quarantine') AND table_type = 'BASE TABLE' "
        "ORDER BY 1, 2",
    )
    digest = {}
    for schema, table in tables:
        skip = VARYING | (INGESTION_COUNTERS if table.startswith("ingestion") else set())
        columns = [
            c
            for (c,) in query(
                url,
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
                "AND table_name = %s ORDER BY ordinal_position",
                [schema, table],
            )
            if c not in skip
        ]
        row = ", ".join(f'"{c}"' for c in columns)
        digest[f"{schema}.{table}"] = query(
            url,
            f"SELECT count(*), md5(coalesce(string_agg(r, E'\\n' ORDER BY r), '')) "
            f'FROM (SELECT ROW({row})::text AS r FROM "{schema}"."{table}") AS t',
        )[0]
    return digest


def step_placements(instance_url: str, run_id: str, step: str) -> list[str]:
    """The Celery workers that started ``step`` in the run, in order (one per attempt)."""
    rows = query(
        instance_url,
        "SELECT event FROM event_logs WHERE run_id = %s AND step_key = %s AND "
        "dagster_event_type = 'ENGINE_EVENT' AND event LIKE %s ORDER BY id",
        [run_id, step, "%in celery worker%"],
    )
    return [re.search(r"worker@[\w.-]+", event).group(0) for (event,) in rows]


def step_in_flight(top: Topology, run_id: str, step: str, requests_from: int) -> str | None:
    """The host running ``step`` once it has sent a few requests and not yet ended, else None."""
    placed = step_placements(top.instance_url, run_id, step)
    ended = query(
        top.instance_url,
        "SELECT count(*) FROM event_logs WHERE run_id = %s AND step_key = %s AND "
        "dagster_event_type IN ('STEP_SUCCESS', 'STEP_FAILURE')",
        [run_id, step],
    )[0][0]
    sent = top.sandbox.stats()["by_path"].get("/products", 0) - requests_from
    if placed and not ended and sent >= 4:
        return placed[-1].split("@", 1)[1]
    return None


@dataclass
class Reference:
    digest: dict[str, tuple[int, str]]
    runs: dict[str, str]


@pytest.fixture(scope="module")
def reference(topology: Topology) -> Reference:
    """A clean run of each of the three days, all at once over both worker hosts: the tables
    every later run must reproduce exactly."""
    top = topology
    runs = {day: top.submit(day) for day in DAYS}
    statuses = top.wait_for_runs(list(runs.values()), timeout=400)
    failed = {r: s for r, s in statuses.items() if s != "SUCCESS"}
    assert not failed, "".join(top.failure_report(r) for r in failed)
    return Reference(tables_digest(top.warehouse_url), runs)


# --- the tests --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
def test_a_worker_killed_mid_fetch_loses_nothing(topology: Topology, reference: Reference) -> None:
    top = topology
    before = top.sandbox.stats()["by_path"].get("/products", 0)
    # A day of the backfill again. (Dagster's own backfill of the range is one run, by the
    # assets' BackfillPolicy; its features and metrics do not digest equal to day-by-day runs'.)
    run_id = top.submit(DAYS[1])
    victim: list[str] = []

    def caught() -> bool:
        host = step_in_flight(top, run_id, RAW_STEP, before)
        if host:
            victim.append(host)
        return bool(host)

    wait_until(f"{RAW_STEP} in flight", caught, top.control_services(), 180)
    top.kill(victim[0])
    status = top.wait_for_runs([run_id], timeout=VISIBILITY_S + 240)[run_id]
    assert status == "SUCCESS", top.failure_report(run_id)

    survivor = next(h for h in ("w1", "w2") if h != victim[0])
    placed = step_placements(top.instance_url, run_id, RAW_STEP)
    assert placed[0] == f"worker@{victim[0]}" and placed[-1] == f"worker@{survivor}", placed
    assert tables_digest(top.warehouse_url) == reference.digest
    top.start_worker(victim[0])


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
def test_a_worker_host_cut_off_mid_run_loses_nothing(
    topology: Topology, reference: Reference
) -> None:
    top = topology
    for name in ("w1", "w2"):
        if top.services[f"worker_{name}"].process.poll() is not None:
            top.start_worker(name)
    day = DAYS[2]
    before = top.sandbox.stats()["by_path"].get("/products", 0)
    run_id = top.submit(day)
    cut: list[str] = []

    def caught() -> bool:
        host = step_in_flight(top, run_id, RAW_STEP, before)
        if host:
            cut.append(host)
        return bool(host)

    wait_until(f"{RAW_STEP} in flight", caught, top.control_services(), 180)
    top.hosts[cut[0]].cut()
    status = top.wait_for_runs([run_id], timeout=VISIBILITY_S + 240)[run_id]
    if status != "SUCCESS":
        # Allowed, if loud: the failure names what failed, and a re-run on the host left
        # makes the day whole again.
        report = top.failure_report(run_id)
        assert "RUN_FAILURE" in report, report
        rerun = top.submit(day)
        assert top.wait_for_runs([rerun], 400)[rerun] == "SUCCESS", top.failure_report(rerun)
    else:
        survivor = next(h for h in ("w1", "w2") if h != cut[0])
        placed = step_placements(top.instance_url, run_id, RAW_STEP)
        assert placed[-1] == f"worker@{survivor}", placed
    # No partition is partial: every table, every day, as the clean backfill left it.
    assert tables_digest(top.warehouse_url) == reference.digest


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
def test_a_backfill_spreads_over_both_worker_hosts(
    topology: Topology, reference: Reference
) -> None:
    top = topology
    digest = reference.digest
    for day in DAYS:
        rows = query(
            top.warehouse_url,
            "SELECT count(*) FROM cleaned.products WHERE partition_date = %s",
            [day],
        )
        assert rows[0][0] > 0, f"{day}: no products"
    assert digest["cleaned.weather"][0] == 3 * 5 * 24

    # Every step went through Celery, and both worker hosts took some.
    placements = {
        (run_id, step): step_placements(top.instance_url, run_id, step)
        for run_id in reference.runs.values()
        for (step,) in query(
            top.instance_url,
            "SELECT DISTINCT step_key FROM event_logs WHERE run_id = %s AND "
            "dagster_event_type = 'STEP_SUCCESS'",
            [run_id],
        )
    }
    assert len(placements) >= 3 * 13 and all(placements.values()), placements
    workers = {worker for placed in placements.values() for worker in placed}
    assert workers == {"worker@w1", "worker@w2"}, workers


# --- refusals at load -------------------------------------------------------------------------


DISTRIBUTED = {
    "INGEST_EXECUTOR": "celery",
    "INGEST_CELERY_BROKER": "redis://redis.internal:6379/0",
    "INGEST_WAREHOUSE_URL": "postgresql://ingest@db.internal:5432/warehouse",
}


def load_error(env: Mapping[str, str]) -> str:
    """What loading the definitions in a fresh interpreter with ``env`` says (stderr)."""
    cleared = {
        k: v
        for k, v in subprocess_env().items()
        if not k.startswith("INGEST_") and k != "DAGSTER_HOME"
    }
    done = subprocess.run(
        [str(BIN / "python"), "-c", "import ingest_assets.definitions"],
        env={**cleared, **env},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return "" if done.returncode == 0 else done.stderr


def test_a_duckdb_warehouse_with_workers_elsewhere_fails_the_load_saying_what_to_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**DISTRIBUTED, "INGEST_WAREHOUSE_URL": f"duckdb:///{tmp_path}/w.duckdb"}
    error = load_error({**env, "INGEST_ARCHIVE_URL": "s3://bucket/archive"})
    assert "DeploymentError" in error, error
    assert f"DuckDB file {tmp_path}/w.duckdb" in error
    assert "INGEST_WAREHOUSE_URL=postgresql://" in error
    # The broker on loopback: the workers share this machine, and the file with it.
    use_env(monkeypatch, {**env, "INGEST_CELERY_BROKER": "redis://127.0.0.1:6379/0"})
    check_deployment()


def test_local_folders_with_workers_elsewhere_fail_unless_shared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    landing, archive = tmp_path / "landing", tmp_path / "archive"
    env = {**DISTRIBUTED, "INGEST_LANDING_DIR": str(landing), "INGEST_ARCHIVE_URL": str(archive)}
    use_env(monkeypatch, env)
    with pytest.raises(DeploymentError) as refused:
        check_deployment()
    message = str(refused.value)
    assert f"INGEST_LANDING_DIR={landing} is a folder on this machine's disk" in message
    assert "INGEST_SHARED_DIRS" in message
    assert f"the raw archive {archive}" in message and "s3://" in message
    # Only the landing folder declared shared: the archive is still refused.
    monkeypatch.setenv("INGEST_SHARED_DIRS", str(landing))
    with pytest.raises(DeploymentError, match="raw archive") as refused:
        check_deployment()
    assert "INGEST_LANDING_DIR" not in str(refused.value)
    # A mount every host has, or the archive in object storage: accepted.
    monkeypatch.setenv("INGEST_SHARED_DIRS", f"/elsewhere:{tmp_path}")
    check_deployment()
    monkeypatch.setenv("INGEST_SHARED_DIRS", str(landing))
    monkeypatch.setenv("INGEST_ARCHIVE_URL", "s3://bucket/archive")
    check_deployment()
    # Said to be one machine (a broker name that only resolves here, say): nothing refused.
    monkeypatch.delenv("INGEST_SHARED_DIRS")
    monkeypatch.setenv("INGEST_ARCHIVE_URL", str(archive))
    monkeypatch.setenv("INGEST_DEPLOYMENT", "single_host")
    check_deployment()


def use_env(monkeypatch: pytest.MonkeyPatch, values: Mapping[str, str]) -> None:
    for key in list(os.environ):
        if key.startswith("INGEST_"):
            monkeypatch.delenv(key)
    for key, value in values.items():
        monkeypatch.setenv(key, value)
