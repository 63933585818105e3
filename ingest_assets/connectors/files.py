"""File connectors: ``csv``, ``jsonl`` and ``xml`` files landed per partition date.

A file read counts as one request. Lines that cannot be parsed are not dropped: they become
records carrying ``_parse_error`` (and the raw text), which validation quarantines.
XML is parsed with defusedxml: no entity expansion, no external entities, no DTD retrieval.
"""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from defusedxml import ElementTree as SafeET
from pydantic import Field

from ingest_assets.config import render_template
from ingest_assets.connectors.base import Batch, Connector, ConnectorOptions, FetchContext
from ingest_assets.connectors.registry import register

PARSE_ERROR = "_parse_error"


class MissingFileError(FileNotFoundError):
    """No file has landed for the partition yet."""


class FileOptions(ConnectorOptions):
    path: str = Field(description="template with {landing_dir} and {date}")
    # utf-8-sig reads plain UTF-8 too, and drops the byte-order mark spreadsheet exports add
    # (otherwise the first header would be "\ufeffpartner_sku" and every row would miss it).
    encoding: str = "utf-8-sig"
    batch_size: int = Field(5_000, ge=1)


class CsvOptions(FileOptions):
    delimiter: str = Field(",", min_length=1, max_length=1)


class XmlOptions(FileOptions):
    record_tag: str = "record"
    attributes: bool = True


def _batched(records: Iterator[dict[str, Any]], size: int) -> Iterator[Batch]:
    batch: Batch = []
    for record in records:
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class FileConnector(Connector):
    """Shared file handling: resolve the path, count the read, stream batches."""

    options: FileOptions

    def file_path(self, ctx: FetchContext) -> Path:
        return Path(render_template(self.resolved(self.options.path, ctx), ctx.template_values()))

    async def fetch(self, ctx: FetchContext) -> AsyncIterator[Batch]:
        path = self.file_path(ctx)
        if not path.is_file():
            raise MissingFileError(f"no file for partition {ctx.partition_date}: {path}")
        ctx.stats.requests += 1
        try:
            for batch in _batched(self.records(path), self.options.batch_size):
                ctx.progress(f"{path.name}: {len(batch)} records")
                yield batch
        except Exception:
            ctx.stats.failed_requests += 1
            raise

    def records(self, path: Path) -> Iterator[dict[str, Any]]:
        raise NotImplementedError


@register
class CsvConnector(FileConnector):
    """A CSV file with a header row; short rows get nulls, extra fields are kept and flagged."""

    kind = "csv"
    Options = CsvOptions
    options: CsvOptions

    def records(self, path: Path) -> Iterator[dict[str, Any]]:
        with path.open(newline="", encoding=self.options.encoding) as handle:
            reader = csv.DictReader(
                handle, delimiter=self.options.delimiter, restkey="_extra_fields"
            )
            for row in reader:
                if "_extra_fields" in row:
                    row[PARSE_ERROR] = f"line {reader.line_num}: more fields than the header names"
                elif None in row.values():
                    row[PARSE_ERROR] = f"line {reader.line_num}: fewer fields than the header names"
                yield row


@register
class JsonlConnector(FileConnector):
    """One JSON object per line; blank lines are skipped, broken lines kept with their error."""

    kind = "jsonl"
    Options = FileOptions

    def records(self, path: Path) -> Iterator[dict[str, Any]]:
        with path.open(encoding=self.options.encoding) as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except ValueError as exc:
                    yield {PARSE_ERROR: f"line {number}: {exc}", "_raw_line": line.rstrip("\n")}
                    continue
                if isinstance(value, dict):
                    yield value
                else:
                    yield {
                        PARSE_ERROR: f"line {number}: not a JSON object",
                        "_raw_line": line.rstrip("\n"),
                    }


@register
class XmlConnector(FileConnector):
    """Elements named ``record_tag``: their attributes and child elements' text become fields."""

    kind = "xml"
    Options = XmlOptions
    options: XmlOptions

    def records(self, path: Path) -> Iterator[dict[str, Any]]:
        tag = self.options.record_tag
        for _, element in SafeET.iterparse(str(path), events=("end",), forbid_dtd=True):
            if local_name(element.tag) != tag:
                continue
            record: dict[str, Any] = (
                {local_name(k): v for k, v in element.attrib.items()}
                if self.options.attributes
                else {}
            )
            for child in element:
                record[local_name(child.tag)] = child.text
            element.clear()
            yield record


def local_name(tag: str) -> str:
    """``{urn:supplier}product`` → ``product``: namespaced feeds match the configured names."""
    return tag.rsplit("}", 1)[-1]
