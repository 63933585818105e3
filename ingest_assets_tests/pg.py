"""PostgreSQL helpers and fixtures shared by the tests: a throw-away database per test.

The server is ``$INGEST_TEST_PG_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``,
a role allowed to create databases). When it is unreachable the tests using these fixtures are
skipped with the reason, except under ``CI=true``, where they fail: CI must not go green
without having exercised PostgreSQL.

Import the fixtures explicitly in a test module: ``from ingest_assets_tests.pg import
pg_url_fixture`` makes the ``pg_url`` fixture available there.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ingest_assets.warehouse.postgres_io import conninfo, redact_text, redact_url

ADMIN_URL = os.environ.get("INGEST_TEST_PG_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
REPO_ROOT = Path(__file__).resolve().parents[1]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@functools.cache
def _unreachable_reason() -> str | None:
    try:
        psycopg.connect(conninfo(ADMIN_URL), connect_timeout=5).close()
    except psycopg.Error as exc:
        detail = redact_text(str(exc).strip(), ADMIN_URL)
        return f"PostgreSQL is not reachable at {redact_url(ADMIN_URL)}: {detail}"
    return None


def require_postgres() -> None:
    """Skip the calling test when PostgreSQL is down; fail it instead under CI=true."""
    reason = _unreachable_reason()
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"{reason} (CI=true: the PostgreSQL tests must run, not skip)", pytrace=False)
    pytest.skip(f"{reason} (set INGEST_TEST_PG_URL, or start PostgreSQL)")


def database_url(name: str) -> str:
    """The admin URL pointing at another database of the same server."""
    base, _, query = conninfo(ADMIN_URL).partition("?")
    url = base.rsplit("/", 1)[0] + "/" + name
    return f"{url}?{query}" if query else url


@contextmanager
def temp_database(prefix: str = "ingest_test") -> Iterator[str]:
    """Create a database with a unique name; yield its URL; drop it (even if still in use)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(conninfo(ADMIN_URL), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_url(name)
    finally:
        with psycopg.connect(conninfo(ADMIN_URL), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# Registered as ``pg_url``; test modules import ``pg_url_fixture`` so the parameter name does not
# shadow the import.
@pytest.fixture(name="pg_url")
def pg_url_fixture() -> Iterator[str]:
    """The URL of a fresh, empty database, dropped after the test."""
    require_postgres()
    with temp_database() as url:
        yield url


def query(url: str, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[tuple]:
    """All rows of one statement, in its own autocommit connection."""
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


def column_types(url: str, schema: str, table: str) -> dict[str, str]:
    rows = query(
        url,
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
        [schema, table],
    )
    return dict(rows)


def primary_key(url: str, schema: str, table: str) -> list[str]:
    rows = query(
        url,
        "SELECT a.attname FROM pg_index i "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = format('%%I.%%I', %s::text, %s::text)::regclass AND i.indisprimary "
        "ORDER BY array_position(i.indkey::int2[], a.attnum)",
        [schema, table],
    )
    return [name for (name,) in rows]


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a Python subprocess that must import this checkout's packages."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def run_python(
    code: str, *args: str, env: Mapping[str, str] | None = None, timeout: float = 300
) -> str:
    """Run ``code`` with ``args`` in a fresh interpreter (this venv); return its stdout."""
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=dict(env or subprocess_env()),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, f"subprocess failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout
