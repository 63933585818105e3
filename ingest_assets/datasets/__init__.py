"""Datasets declared in YAML, compiled once at load into schemas, keys and steps."""

from ingest_assets.datasets.catalog import Catalog, catalog_for, shipped
from ingest_assets.datasets.compile import CompiledDataset
from ingest_assets.datasets.yamltext import DeclarationError, YamlText

__all__ = ["Catalog", "CompiledDataset", "DeclarationError", "YamlText", "catalog_for", "shipped"]
