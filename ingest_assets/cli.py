"""``python -m ingest_assets``: work with sources files and datasets without running a pipeline.

- ``validate [FILE]``: load a sources file as the code location does (its datasets compiled,
  its sources and connector options checked); the first error, or what it declares.
- ``schema``: the JSON Schema of the ``datasets:`` section, for an editor's completion.
- ``scaffold NAME --sample FILE | --url URL | --source SOURCE --partition DAY``: profile what a
  source sent and print a dataset declaration to edit (``datasets.scaffold``).
- ``show TABLE...``: rows of warehouse tables (``INGEST_WAREHOUSE_URL``), for a quick look.

A user's mistake prints one clear message and exits 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

SAMPLE_KINDS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".xml": "xml"}


class UsageError(Exception):
    """A mistake of the command line or its input: printed as it is, exit status 2."""


def _validate(args: argparse.Namespace) -> int:
    from ingest_assets.config import ConfigError, sources_file_path
    from ingest_assets.loading import load_sources

    path = Path(args.file) if args.file else sources_file_path()
    try:
        loaded = load_sources(path)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    print(f"{path}: valid")
    for compiled in loaded.catalog:
        sources = [s.name for s in loaded.sources if s.dataset == compiled.name]
        fed = ", ".join(sources) if sources else "no source"
        print(
            f"  dataset {compiled.name} ({len(compiled.fields)} fields, key {compiled.key}): {fed}"
        )
    return 0


def _schema(args: argparse.Namespace) -> int:

    print(json.dumps(datasets_json_schema(), indent=2))
    return 0


def datasets_json_schema() -> dict[str, Any]:
    """The ``datasets:`` section's JSON Schema, for a whole sources file (its other sections
    are checked by ``validate``); shipped as ``datasets/datasets.schema.json``."""
    from ingest_assets.datasets.declaration import DatasetsSection

    schema = DatasetsSection.model_json_schema()
    schema["title"] = "ingest_assets sources file: datasets"
    schema["additionalProperties"] = True
    return schema


def _json_records(data: Any, records_path: str | None) -> list[Mapping[str, Any]]:
    """The records of a JSON document: a list, or the list at ``records_path`` (dotted), or
    the first list of objects in a top-level object."""
    if records_path:
        for part in records_path.split("."):
            if not isinstance(data, Mapping) or part not in data:
                raise UsageError(f"no {records_path!r} in the document")
            data = data[part]
    if isinstance(data, Mapping):
        lists = [v for v in data.values() if isinstance(v, list) and v and isinstance(v[0], dict)]
        if not lists:
            raise UsageError("the document holds no list of records (name one with --records)")
        data = lists[0]
    if not isinstance(data, list):
        raise UsageError("the document is not a list of records (name one with --records)")
    return [r for r in data if isinstance(r, Mapping)]


def _sample_records(path: Path, args: argparse.Namespace) -> tuple[Iterator[Mapping], str]:
    from ingest_assets.config import SourceConfig
    from ingest_assets.connectors.registry import get_connector_class

    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except ValueError as exc:
            raise UsageError(f"{path}: not JSON: {exc}") from None
        return iter(_json_records(data, args.records)), "json"
    kind = SAMPLE_KINDS.get(path.suffix.lower())
    if kind is None:
        known = ", ".join([".json", *SAMPLE_KINDS])
        raise UsageError(f"{path}: cannot tell the format from {path.suffix!r} (one of {known})")
    options: dict[str, Any] = {"path": str(path)}
    if kind == "xml" and args.record_tag:
        options["record_tag"] = args.record_tag
    source = SourceConfig.model_validate(
        {"name": "sample", "connector": kind, "dataset": "sample", **options}
    )
    connector = get_connector_class(kind)(source)
    return connector.records(path), kind


def _source_records(name: str, day: str, file: Path, limit: int) -> list[Mapping[str, Any]]:
    """Up to ``limit`` records of a source's day, fetched by its connector (the source's block
    is read as written: its dataset need not be declared yet)."""
    import yaml

    from ingest_assets.config import SourceConfig
    from ingest_assets.connectors.base import FetchContext, stream
    from ingest_assets.connectors.registry import get_connector_class

    data = yaml.safe_load(file.read_text()) or {}
    block = (data.get("sources") or {}).get(name)
    if not isinstance(block, Mapping):
        raise UsageError(f"{file}: no source {name!r}")
    try:
        day_date = dt.date.fromisoformat(day)
    except ValueError:
        raise UsageError(f"--partition: {day!r} is not a day (YYYY-MM-DD)") from None
    try:
        source = SourceConfig.model_validate({**block, "name": name})
        connector = get_connector_class(source.connector)(source)
    except (ValueError, KeyError) as exc:
        raise UsageError(f"{file}: source {name!r}: {exc}") from None

    async def fetch() -> list[Mapping[str, Any]]:
        records: list[Mapping[str, Any]] = []
        batches = stream(connector, FetchContext(partition_date=day_date))
        try:
            async for batch in batches:
                records.extend(batch)
                if len(records) >= limit:
                    break
        finally:
            await batches.aclose()
        return records[:limit]

    return asyncio.run(fetch())


def _landing_template(path: Path) -> str:
    """The sample's path with its day as ``{date}`` (a landing file is one per day), under
    ``{landing_dir}`` when it lies in the landing folder."""
    import re

    from ingest_assets.config import landing_dir

    shown = str(path)
    if path.resolve().is_relative_to(landing_dir().resolve()):
        shown = "{landing_dir}/" + str(path.resolve().relative_to(landing_dir().resolve()))
    return re.sub(r"\d{4}-\d{2}-\d{2}", "{date}", shown, count=1)


def _scaffold(args: argparse.Namespace) -> int:
    from itertools import islice

    from ingest_assets.config import sources_file_path
    from ingest_assets.datasets.scaffold import scaffold

    source_block: dict[str, Any] | None = None
    if args.sample:
        path = Path(args.sample)
        records, kind = _sample_records(path, args)
        records = list(islice(records, args.limit))
        origin = str(path)
        if args.source and kind != "json":
            source_block = {"name": args.source, "connector": kind, "path": _landing_template(path)}
    elif args.url:
        import httpx

        try:
            response = httpx.get(args.url, timeout=30, follow_redirects=True)
            response.raise_for_status()
            data = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise UsageError(f"{args.url}: {exc}") from None
        records = _json_records(data, args.records)[: args.limit]
        origin = args.url
    else:
        if not args.source or not args.partition:
            raise UsageError("give --sample FILE, --url URL, or --source SOURCE --partition DAY")
        file = Path(args.sources_file) if args.sources_file else sources_file_path()
        records = _source_records(args.source, args.partition, file, args.limit)
        origin = f"source {args.source}, {args.partition}"
    try:
        drafted = scaffold(args.name, records)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    sys.stdout.write(drafted.text(origin, source_block))
    return 0


def _show(args: argparse.Namespace) -> int:
    import pandas as pd

    from ingest_assets.warehouse import warehouse_url
    from ingest_assets.warehouse.inspect import table_rows

    url = warehouse_url()
    with pd.option_context("display.width", 200, "display.max_columns", 50):
        for table in args.tables:
            try:
                frame = table_rows(url, table, args.partition, args.limit)
            except LookupError as exc:
                raise UsageError(str(exc)) from None
            print(f"== {table} ({len(frame)} rows shown)")
            print(frame.to_string(index=False) if len(frame) else "(no rows)")
    return 0


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="python -m ingest_assets", description=__doc__.split("\n")[0]
    )
    commands = main.add_subparsers(dest="command", required=True)

    validate = commands.add_parser("validate", help="check a sources file without running it")
    validate.add_argument("file", nargs="?", help="default: INGEST_SOURCES_FILE or the shipped")
    validate.set_defaults(run=_validate)

    schema = commands.add_parser("schema", help="the JSON Schema of the datasets: section")
    schema.set_defaults(run=_schema)

    draft = commands.add_parser("scaffold", help="draft a dataset declaration from data")
    draft.add_argument("name", help="the dataset's name")
    draft.add_argument("--sample", help="a sample file: .csv, .jsonl, .ndjson, .json, .xml")
    draft.add_argument("--url", help="one page of a JSON API")
    draft.add_argument("--source", help="a source of the sources file (with --partition), or "
                       "the name of the source block to print (with --sample)")  # fmt: skip
    draft.add_argument("--partition", help="the day to fetch the source's records for")
    draft.add_argument("--sources-file", help="default: INGEST_SOURCES_FILE or the shipped")
    draft.add_argument("--records", help="JSON: the dotted path of the record list")
    draft.add_argument("--record-tag", help="XML: the element of one record")
    draft.add_argument("--limit", type=int, default=10_000, help="records profiled, at most")
    draft.set_defaults(run=_scaffold)

    show = commands.add_parser("show", help="rows of warehouse tables (schema.table)")
    show.add_argument("tables", nargs="+")
    show.add_argument("--partition", help="only this day (YYYY-MM-DD)")
    show.add_argument("--limit", type=int, default=20)
    show.set_defaults(run=_show)
    return main


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
