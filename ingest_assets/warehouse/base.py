"""The IO manager contract both warehouses share; each supplies only its ``write`` and ``read``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import ClassVar

import dagster as dg
import pandas as pd

from ingest_assets.warehouse.common import TableRef, definition_list, partition_dates
from ingest_assets.warehouse.preview import preview_metadata


class PartitionedTableIOManager(dg.ConfigurableIOManager):
    """Stores each asset as the table ``<schema>.<table>`` named by its asset key.

    A partitioned output replaces exactly its partition window's rows in one transaction, so a
    re-run never duplicates rows and a reader never sees a half-written partition. Definition
    metadata ``json_columns`` and ``primary_key`` shape the table; an input's ``columns``
    metadata reads only those columns.
    """

    warehouse: ClassVar[str]

    def write(
        self,
        table: TableRef,
        df: pd.DataFrame,
        bounds: tuple[dt.date, dt.date] | None,
        json_columns: Sequence[str],
        primary_key: Sequence[str],
    ) -> None:
        raise NotImplementedError

    def read(
        self, table: TableRef, bounds: tuple[dt.date, dt.date] | None, columns: Sequence[str] | None
    ) -> pd.DataFrame:
        raise NotImplementedError

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        if obj is None:
            return
        table = TableRef.from_asset_key(context.asset_key.path)
        metadata = context.definition_metadata
        self.write(
            table,
            obj,
            partition_dates(context),
            definition_list(metadata, "json_columns"),
            definition_list(metadata, "primary_key"),
        )
        context.add_output_metadata(
            {
                "dagster/row_count": len(obj),
                "dagster/table_name": str(table),
                "warehouse": self.warehouse,
                **preview_metadata(obj, metadata),
            }
        )

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        table = TableRef.from_asset_key(context.asset_key.path)
        columns = definition_list(context.definition_metadata, "columns") or None
        return self.read(table, partition_dates(context), columns)
