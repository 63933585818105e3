"""Dagster's own processes for tests: webserver, code server, daemon, on loopback ports.

Each process runs in its own session with its output in a log file, and is stopped (its whole
process group) when the test is done; a process that dies early fails the wait with its log.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent
LOCATION_QUERY = """
{ workspaceOrError { __typename ... on Workspace { locationEntries {
    name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Service:
    name: str
    process: subprocess.Popen
    log: Path

    def output(self, tail: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-tail:]

    def assert_running(self) -> None:
        assert self.process.poll() is None, f"{self.name} exited:\n{self.output()}"


@contextmanager
def service(
    name: str, command: Sequence[str], env: Mapping[str, str], cwd: Path, logs: Path
) -> Iterator[Service]:
    """Run ``command`` until the block ends (SIGTERM to its process group, then SIGKILL)."""
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            list(command),
            env=dict(env),
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield Service(name, process, log_path)
        finally:
            stop_group(process)


def stop_group(process: subprocess.Popen) -> None:
    """Stop the process group a test started (``start_new_session=True``): SIGTERM, then
    SIGKILL after 30 s; children that outlive the leader are the group's too."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def wait_until(
    what: str, ready: Callable[[], bool], services: Sequence[Service], timeout: float = 240
) -> None:
    """Poll ``ready`` until it holds; fail early with the logs if a service died."""
    deadline = time.monotonic() + timeout
    while True:
        for item in services:
            item.assert_running()
        try:
            if ready():
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {s.name}\n{s.output()}" for s in services)
            raise AssertionError(f"timed out waiting for {what}\n{logs}")
        time.sleep(1)


def location_loaded(base_url: str, location: str = "ingest_assets") -> bool:
    """Whether the webserver at ``base_url`` has loaded the code location (errors fail)."""
    response = httpx.post(f"{base_url}/graphql", json={"query": LOCATION_QUERY}, timeout=10)
    workspace = response.json()["data"]["workspaceOrError"]
    for entry in workspace.get("locationEntries", []):
        if entry["name"] != location or entry["loadStatus"] != "LOADED":
            continue
        loaded = entry["locationOrLoadError"] or {}
        assert loaded.get("__typename") == "RepositoryLocation", loaded
        return True
    return False


def webserver(
    env: Mapping[str, str], cwd: Path, logs: Path, *target: str
) -> tuple[str, Iterator[Service]]:
    """``dagster-webserver`` on a free loopback port for ``target`` (``-w file`` or ``--grpc-*``)."""
    port = free_port()
    command = [str(BIN / "dagster-webserver"), *target, "-h", "127.0.0.1", "-p", str(port)]
    return f"http://127.0.0.1:{port}", service("webserver", command, env, cwd, logs)
