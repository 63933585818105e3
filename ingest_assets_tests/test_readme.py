"""Every command of the README's ``sh`` blocks works as written, from the repo root.

The README marks what a reader runs: a fenced block ``sh set-up`` (run first, in every shell)
and ``sh`` blocks (each run as written in a fresh ``bash`` after the set-up). ``bash`` blocks are
shown but not run here (the test suite itself, benchmarks, a broker, production hosts). The
commands come from README.md itself, so the test breaks when the README drifts.

Each variant works in a fresh copy of the repository (the files a clone has) whose ``.venv``
links to this test's virtual environment, with a fresh install stamp so ``make`` installs
nothing. The shell starts without ``INGEST_*`` and ``DAGSTER_*`` variables and without the venv
on ``PATH``; only the set-up's ``source .venv/bin/activate`` puts it there. It is offline: every
request but loopback goes to a dead proxy. The REST sources point at the test's sandbox, except
in blocks that use ``INGEST_SANDBOX`` (``make dev-sandbox``), which must bring their own.
Long-running commands (``make dev``, the standalone sandbox) run until they are ready (the code
location loaded, the API answering) and are then stopped.
"""

from __future__ import annotations

import decimal
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import httpx
import pytest

from ingest_assets.sandbox import Sandbox
from ingest_assets_tests.dagster_services import free_port, stop_group

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
PARTITION = "2024-06-01"
OFFLINE = {
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "ALL_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
}
URL_VARIABLES = ("DUMMYJSON_BASE_URL", "OPEN_METEO_BASE_URL")
_FENCE = re.compile(r"^```(?P<lang>[\w-]*)(?P<info>[^\n]*)\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)


@dataclass(frozen=True)
class Block:
    line: int
    body: str
    setup: bool

    @property
    def commands(self) -> list[str]:
        """The block's command lines (no comments, no blank lines)."""
        return [
            line for line in self.body.splitlines() if line.strip() and not line.startswith("#")
        ]


def readme_blocks(text: str) -> list[Block]:
    """The ``sh`` blocks of a README, in order (``sh set-up`` marks the set-up)."""
    return [
        Block(
            line=text.count("\n", 0, m.start()) + 1,
            body=m.group("body"),
            setup="set-up" in m.group("info").split(),
        )
        for m in _FENCE.finditer(text)
        if m.group("lang") == "sh"
    ]


BLOCKS = readme_blocks((REPO_ROOT / "README.md").read_text())
SETUP = [b for b in BLOCKS if b.setup]
RUNNABLE = [b for b in BLOCKS if not b.setup]


def test_the_readme_marks_its_commands() -> None:
    """The markers are there: a README edit cannot silently leave everything unrun."""
    assert len(SETUP) == 1 and "source .venv/bin/activate" in SETUP[0].body
    commands = "\n".join(b.body for b in RUNNABLE)
    for expected in (
        "make demo",
        "make dev-sandbox",
        "make dev ",
        "dagster asset materialize -m ingest_assets.definitions",
        "dagster job execute -m ingest_assets.definitions -j replay_quarantine",
        "INGEST_SANDBOX=1 dagster asset materialize",
        "python -m ingest_assets.sandbox",
        "connector: jsonl",
    ):
        assert expected in commands, f"the README no longer runs {expected!r}"
    for block in RUNNABLE:
        if server_for(block):
            assert len(block.commands) == 1, f"README line {block.line}: a server runs alone"


# -- the copy a reader works in --------------------------------------------------------------


def repo_files() -> list[Path]:
    """What a clone holds: tracked (and new, not ignored) files; a plain copy without git."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=REPO_ROOT, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", ".ingest", "__pycache__", ".pytest_cache", ".ruff_cache"}
        return [
            p.relative_to(REPO_ROOT)
            for p in REPO_ROOT.rglob("*")
            if p.is_file() and not skip & set(p.relative_to(REPO_ROOT).parts)
        ]
    return [Path(name) for name in listed.split("\0") if name and (REPO_ROOT / name).is_file()]


def fresh_copy(target: Path) -> Path:
    for name in repo_files():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, target / name)
    # `.venv` as `make install` would leave it: this test's environment, every entry linked, and
    # an install stamp newer than pyproject.toml so no target reinstalls anything.
    venv, real = target / ".venv", Path(sys.prefix)
    venv.mkdir()
    for entry in real.iterdir():
        if entry.name != ".installed-stamp":
            (venv / entry.name).symlink_to(entry)
    (venv / ".installed-stamp").touch()
    return target


def fresh_env(copy: Path, sandbox_url: str, **extra: str) -> dict[str, str]:
    drop = ("VIRTUAL_ENV", "PYTHONHOME", *URL_VARIABLES)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("INGEST_", "DAGSTER_")) and k not in drop
    }
    venv_bin = os.path.join(sys.prefix, "bin")
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "/usr/bin:/bin").split(os.pathsep) if p != venv_bin
    )
    # The venv's editable install points at another checkout; the copy's own code must win.
    env["PYTHONPATH"] = str(copy)
    env.update(OFFLINE)
    env.update(DEV_PORT=str(free_port()), INGEST_SANDBOX_PORT=str(free_port()))
    env.update({name: sandbox_url for name in URL_VARIABLES})
    env.update(extra)
    return env


def env_for(block: Block, env: dict[str, str]) -> dict[str, str]:
    if "INGEST_SANDBOX" in block.body or "dev-sandbox" in block.body:
        # The switch must find the sandbox on its own.
        return {k: v for k, v in env.items() if k not in URL_VARIABLES}
    return env


def script(block: Block) -> str:
    return "set -e -o pipefail\n" + SETUP[0].body + "\n" + block.body


def run_block(block: Block, copy: Path, env: dict[str, str]) -> None:
    done = subprocess.run(
        ["bash", "-c", script(block)],
        cwd=copy,
        env=env_for(block, env),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, (
        f"README line {block.line} failed (exit {done.returncode}):\n{block.body}\n"
        f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-5000:]}"
    )


# -- long-running commands: start, wait until ready, check, stop ------------------------------

LOCATIONS = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
  name locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def dagster_ui_ready(env: dict[str, str]) -> bool:
    url = f"http://127.0.0.1:{env['DEV_PORT']}/graphql"
    try:
        body = httpx.post(url, json={"query": LOCATIONS}, timeout=10).json()
    except (httpx.HTTPError, ValueError):
        return False
    entries = body["data"]["workspaceOrError"].get("locationEntries") or []
    loaded = [e["locationOrLoadError"] for e in entries if e["locationOrLoadError"]]
    errors = [e["message"] for e in loaded if e["__typename"] == "PythonError"]
    assert not errors, f"the code location failed to load: {errors[0][-3000:]}"
    return any(e["__typename"] == "RepositoryLocation" for e in loaded)


def a_run_succeeds_offline(env: dict[str, str]) -> None:
    """What "Materialize" in the UI does: a run through the daemon, fetching from the sandbox."""
    from dagster import DagsterRunStatus
    from dagster_graphql import DagsterGraphQLClient

    client = DagsterGraphQLClient("127.0.0.1", port_number=int(env["DEV_PORT"]))
    run_id = client.submit_job_execution(
        "ingest_dummyjson_products", tags={"dagster/partition": PARTITION}
    )
    done = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
    deadline = time.monotonic() + 300
    status = client.get_run_status(run_id)
    while status not in done and time.monotonic() < deadline:
        time.sleep(1)
        status = client.get_run_status(run_id)
    assert status == DagsterRunStatus.SUCCESS, f"run {run_id} ended {status}"


def sandbox_ready(env: dict[str, str]) -> bool:
    url = f"http://127.0.0.1:{env['INGEST_SANDBOX_PORT']}/products"
    try:
        return httpx.get(url, params={"limit": 1}, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass(frozen=True)
class Server:
    ready: Callable[[dict[str, str]], bool]
    then: Callable[[dict[str, str]], None] | None = None
    ui: bool = False


def server_for(block: Block) -> Server | None:
    command = " ".join(block.commands)
    if re.match(r"make dev-sandbox\b", command):
        return Server(dagster_ui_ready, a_run_succeeds_offline, ui=True)
    if re.match(r"make dev\b", command):
        return Server(dagster_ui_ready, ui=True)
    if re.match(r"python -m ingest_assets\.sandbox\b", command):
        return Server(sandbox_ready)
    return None


def serve_block(block: Block, server: Server, copy: Path, env: dict[str, str]) -> None:
    env = env_for(block, env)
    log_path = copy / f".readme_line_{block.line}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            ["bash", "-c", script(block)],
            cwd=copy,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 240
        while not server.ready(env):
            assert process.poll() is None, (
                f"README line {block.line} exited {process.returncode} before it was ready:\n"
                + log_path.read_text()[-5000:]
            )
            assert time.monotonic() < deadline, (
                f"README line {block.line} not ready in time:\n" + log_path.read_text()[-5000:]
            )
            time.sleep(1)
        if server.then is not None:
            server.then(env)
    finally:
        stop_group(process)


# -- the variants ----------------------------------------------------------------------------


def run_readme(copy: Path, env: dict[str, str], ui: bool = True) -> None:
    """Run every block in README order; ``ui=False`` leaves out the Dagster UI blocks (a minute
    each; the bare-shell variant runs them)."""
    for block in RUNNABLE:
        server = server_for(block)
        started = time.monotonic()
        if server is not None and server.ui and not ui:
            continue
        if server is None:
            run_block(block, copy, env)
        else:
            serve_block(block, server, copy, env)
        print(f"README line {block.line}: {time.monotonic() - started:.1f}s", file=sys.stderr)


def check_outcome(copy: Path) -> None:
    """What the README says the commands leave behind (beyond their exit status)."""
    with duckdb.connect(str(copy / ".ingest" / "warehouse.duckdb"), read_only=True) as con:
        day = f"partition_date = DATE '{PARTITION}'"
        count = "SELECT count(*) FROM {} WHERE " + day
        assert con.execute(count.format("raw.dummyjson_products")).fetchone() == (194,)
        # The file-source example's day (later commands use the shipped sources again).
        assert con.execute(count.format("raw.acme_feed")).fetchone() == (2,)
        # "Add your own dataset": two tickets valid, T-3 quarantined with each of its reasons.
        tickets = "SELECT ticket_id, status, amount, email FROM cleaned.tickets ORDER BY 1"
        assert con.execute(tickets).fetchall() == [
            ("T-1", "open", decimal.Decimal("12.50"), "ana@example.org"),
            ("T-2", "pending", None, None),
        ]
        (errors,) = con.execute(
            "SELECT errors FROM quarantine.records WHERE dataset = 'tickets'"
        ).fetchone()
        assert {e["column"] for e in json.loads(errors)} == {
            "subject", "priority", "amount", "vip", "opened_on", "email",
        }  # fmt: skip
        metrics = "SELECT status, ticket_count FROM metrics.tickets ORDER BY 1"
        assert con.execute(metrics).fetchall() == [("open", 1), ("pending", 1)]
    assert not list(copy.glob(".tmp_dagster_home_*")), "a temporary Dagster home was left"


@pytest.fixture
def copy(tmp_path: Path) -> Iterator[Path]:
    yield fresh_copy(tmp_path / "repo")


def job_names(home: Path, monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The jobs of the runs recorded in a DAGSTER_HOME (read as Dagster reads it)."""
    import dagster as dg

    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.delenv("DAGSTER_PG_URL", raising=False)
    with dg.DagsterInstance.get() as instance:
        return {run.job_name for run in instance.get_runs()}


def test_without_dagster_home_or_pg_url(
    copy: Path, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_readme(copy, fresh_env(copy, sandbox.url))
    check_outcome(copy)
    # The CLI's runs (no DAGSTER_HOME: the repo root's dagster.yaml) are where `make dev` and
    # `make demo` keep theirs.
    jobs = job_names(copy / ".ingest" / "dagster_home", monkeypatch)
    assert {"__ASSET_JOB", "replay_quarantine", "ingest_pipeline"} <= jobs


def test_with_dagster_home(
    copy: Path, sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    run_readme(copy, fresh_env(copy, sandbox.url, DAGSTER_HOME=str(home)), ui=False)
    check_outcome(copy)
    jobs = job_names(home, monkeypatch)
    assert {"__ASSET_JOB", "replay_quarantine", "ingest_pipeline"} <= jobs
    assert not (copy / ".ingest" / "dagster_home").exists()


@pytest.mark.postgres
def test_with_dagster_pg_url(copy: Path, sandbox: Sandbox) -> None:
    """The blocks with Dagster's storage in PostgreSQL (the UI on it: the topology test)."""
    from ingest_assets_tests.pg import query, require_postgres, temp_database

    require_postgres()
    with temp_database("ingest_readme") as pg_url:
        run_readme(copy, fresh_env(copy, sandbox.url, DAGSTER_PG_URL=pg_url), ui=False)
        check_outcome(copy)
        jobs = {job for (job,) in query(pg_url, "SELECT DISTINCT pipeline_name FROM runs")}
        assert {"__ASSET_JOB", "replay_quarantine", "ingest_pipeline"} <= jobs
