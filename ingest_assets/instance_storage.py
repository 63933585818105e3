"""Dagster instance storage for the repository's ``dagster.yaml``: PostgreSQL or SQLite.

``InstanceStorage`` (what ``dagster.yaml`` names) picks PostgreSQL when ``DAGSTER_PG_URL`` is
set and SQLite otherwise, so the file also works in a shell without it. ``PostgresStorage`` is
the PostgreSQL side, named instead of using
``storage: postgres:`` directly, because of a driver mismatch: SQLAlchemy 2.1 maps
``postgresql://`` to psycopg 3, which binds parameters on the server, and dagster-postgres
0.29.27's event log then fails on ``NOTIFY run_events, %(notify_id)s`` ("syntax error at or near
$1": ``NOTIFY`` takes no parameters). With ``postgresql+psycopg2://`` (client-side binding) it
works, so this class only picks that driver for the URL users write, whether it comes from
``postgres_url`` or from the ``postgres_db`` fields. Everything else is dagster-postgres.
"""

from __future__ import annotations

import os
from typing import Any

from dagster import Field, StringSource
from dagster._config.config_schema import UserConfigSchema
from dagster._core.storage.base_storage import DagsterStorage
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage
from dagster._serdes import ConfigurableClass, ConfigurableClassData
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

# Drivers that reach PostgreSQL through psycopg 3 (SQLAlchemy 2.1's default) or are spelled
# without a driver; an explicit other driver (asyncpg, pg8000, ...) is left as written.
_PSYCOPG3_SCHEMES = {"postgres", "postgresql", "postgresql+psycopg"}
PG_URL_ENV = "DAGSTER_PG_URL"


def psycopg2_url(url: str) -> str:
    """The same URL with the psycopg2 driver, which dagster-postgres' SQL needs."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in _PSYCOPG3_SCHEMES:
        return f"postgresql+psycopg2://{rest}"
    return url


class PostgresStorage(DagsterPostgresStorage):
    """``DagsterPostgresStorage`` configured exactly like ``storage: postgres:``.

    Takes the same config (``postgres_url`` or ``postgres_db``, ``should_autocreate_tables``,
    ``auth_provider``), e.g. ``postgres_url: {env: DAGSTER_PG_URL}``.
    """

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: Any
    ) -> PostgresStorage:
        return cls(
            inst_data=inst_data,
            postgres_url=psycopg2_url(pg_url_from_config(config_value)),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )


class InstanceStorage(DagsterStorage, ConfigurableClass):
    """The repository's instance storage: PostgreSQL when ``DAGSTER_PG_URL`` is set, else SQLite.

    Dagster reads the *current folder's* ``dagster.yaml`` when ``DAGSTER_HOME`` is unset, so the
    repository's file must also work in a bare shell. Its ``env:`` config form cannot have a
    default (an unset variable fails every command), so this class takes the variable's *name*
    and decides when the instance loads: with the variable set, ``PostgresStorage`` above;
    without it, Dagster's own SQLite storage in ``$DAGSTER_HOME`` or, when that is unset too,
    in ``$INGEST_HOME/dagster_home`` (where ``make demo`` and ``make dev`` keep their runs).
    The decision is taken again wherever the instance is rebuilt (run workers, the daemon),
    from the same environment. The URL itself is never part of the serialized config.
    """

    @classmethod
    def config_type(cls) -> UserConfigSchema:
        return {
            "postgres_url_env": Field(StringSource, is_required=False, default_value=PG_URL_ENV),
            "sqlite_base_dir": Field(StringSource, is_required=False),
            "should_autocreate_tables": Field(bool, is_required=False, default_value=True),
        }

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: Any
    ) -> DagsterStorage:
        url = os.environ.get(config_value["postgres_url_env"], "").strip()
        if url:
            return PostgresStorage(
                inst_data=inst_data,
                postgres_url=psycopg2_url(url),
                should_autocreate_tables=config_value["should_autocreate_tables"],
            )
        return DagsterSqliteStorage.from_local(
            base_dir=config_value.get("sqlite_base_dir") or sqlite_base_dir(), inst_data=inst_data
        )


def sqlite_base_dir() -> str:
    """Where the SQLite fallback keeps runs: Dagster's default for ``$DAGSTER_HOME``."""
    home = os.environ.get("DAGSTER_HOME")
    if home:
        return os.path.abspath(os.path.expanduser(home))
    ingest_home = os.environ.get("INGEST_HOME") or ".ingest"
    return os.path.abspath(os.path.join(os.path.expanduser(ingest_home), "dagster_home"))
