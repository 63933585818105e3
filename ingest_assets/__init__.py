"""ingest_assets: a Dagster code location for validated, idempotent data ingestion."""

__version__ = "0.1.0"
