"""Thin Dagster wiring around connectors, quality and transforms."""
