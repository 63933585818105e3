"""Dagster instance storage on PostgreSQL that accepts the plain ``postgresql://`` URL.

The repository's ``dagster.yaml`` names this class as custom storage instead of using
``storage: postgres:`` directly, because of a driver mismatch: SQLAlchemy 2.1 maps
``postgresql://`` to psycopg 3, which binds parameters on the server, and dagster-postgres
0.29.27's event log then fails on ``NOTIFY run_events, %(notify_id)s`` ("syntax error at or near
$1": ``NOTIFY`` takes no parameters). With ``postgresql+psycopg2://`` (client-side binding) it
works, so this class only picks that driver for the URL users write, whether it comes from
``postgres_url`` or from the ``postgres_db`` fields. Everything else is dagster-postgres.
"""

from __future__ import annotations

from typing import Any

from dagster._serdes import ConfigurableClassData
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

# Drivers that reach PostgreSQL through psycopg 3 (SQLAlchemy 2.1's default) or are spelled
# without a driver; an explicit other driver (asyncpg, pg8000, ...) is left as written.
_PSYCOPG3_SCHEMES = {"postgres", "postgresql", "postgresql+psycopg"}


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
