"""``python -m ingest_assets``: work with sources files and datasets without running a pipeline.

- ``validate [FILE]``: load a sources file as the code location does (its datasets compiled,
  its sources and connector options checked); the first error, or what it declares.
- ``schema``: the JSON Schema of the ``datasets:`` section, for an editor's completion.
- ``scaffold NAME --sample FILE | --url URL | --source SOURCE --partition DAY``: profile what a
  source sent and print a dataset declaration to edit (``datasets.scaffold``).
- ``contract SOURCE --partition DAY``: the fields a source sends now against its archived day
  (new, missing, retyped); exit status 1 when they differ, for a user's CI.
- ``ref SOURCE_REF``: the archived bytes a row's ``_source_ref`` names (a record of a page, or
  a line of a landing file).
- ``show TABLE...``: rows of warehouse tables (``INGEST_WAREHOUSE_URL``), for a quick look.

A user's mistake prints one clear message and exits 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import shutil
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


def _source_records(
    name: str, day: str, file: Path, limit: int, archived: bool = False
) -> list[Mapping[str, Any]]:
    """Up to ``limit`` records of a source's day, fetched by its connector (the source's block
    is read as written: its dataset need not be declared yet); ``archived``: read from the
    day's archive instead of the network or landing folder."""
    import yaml

    from ingest_assets.config import SourceConfig
    from ingest_assets.connectors.base import FetchContext, FetchError, stream
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

    ctx = FetchContext(partition_date=day_date)
    if archived:
        from ingest_assets.archive import (
            ArchiveError,
            ArchiveReplay,
            ArchiveStore,
            Redactor,
            archive_location,
            secret_values,
        )

        try:
            replay = ArchiveReplay.open(ArchiveStore(archive_location()), name, day_date)
        except (ArchiveError, FetchError) as exc:
            raise UsageError(str(exc)) from None
        replay.with_secrets(Redactor(secret_values(block)))
        ctx = FetchContext(
            partition_date=day_date,
            checkpoint=replay,
            landing_dir=replay.restore_files() if replay.files else None,
        )

    async def fetch() -> list[Mapping[str, Any]]:
        records: list[Mapping[str, Any]] = []
        batches = stream(connector, ctx)
        try:
            async for batch in batches:
                records.extend(batch)
                if len(records) >= limit:
                    break
        finally:
            await batches.aclose()
        return records[:limit]

    try:
        return asyncio.run(fetch())
    except FetchError as exc:
        raise UsageError(str(exc)) from None
    finally:
        if ctx.landing_dir is not None:
            shutil.rmtree(ctx.landing_dir, ignore_errors=True)


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


def field_changes(
    archived: list[Mapping[str, Any]], now: list[Mapping[str, Any]]
) -> list[tuple[str, str, str]]:
    """(change, field path, detail) between two samples of a source: new, missing, retyped."""
    from ingest_assets.datasets.scaffold import profile

    _, before = profile(archived)
    _, after = profile(now)
    changes = []
    for path, p in after.items():
        shown = ".".join(path)
        if path not in before:
            changes.append(("new", shown, p.type[0]))
        elif before[path].present and p.present and before[path].type[0] != p.type[0]:
            changes.append(("retyped", shown, f"{before[path].type[0]} -> {p.type[0]}"))
    changes += [
        ("missing", ".".join(path), p.type[0]) for path, p in before.items() if path not in after
    ]
    return changes


def _contract(args: argparse.Namespace) -> int:
    """What a source sends now against what it sent on an archived day."""
    from ingest_assets.config import sources_file_path

    file = Path(args.sources_file) if args.sources_file else sources_file_path()
    archived_day = args.archived or args.partition
    archived = _source_records(args.source, archived_day, file, args.limit, archived=True)
    now = _source_records(args.source, args.partition, file, args.limit)
    changes = field_changes(archived, now)
    print(
        f"{args.source}: {len(now)} records on {args.partition} against {len(archived)} "
        f"archived on {archived_day}"
    )
    for change, path, detail in changes:
        print(f"  {change:8} {path} ({detail})")
    if not changes:
        print("  the same fields, of the same types")
    return 1 if changes else 0


def resolve_ref(ref: str, store: Any) -> str:
    """The archived bytes a ``_source_ref`` names: the record at its place in the page, or the
    line of the file (and a CSV's header line before it)."""
    sha, sep, place = ref.partition("#")
    if not sep or len(sha) != 64:
        raise UsageError(
            f"{ref!r} is not an archived _source_ref (<sha256>#<index> or <sha256>#L<line>)"
        )
    data = store.get(sha)
    if place.startswith("L"):
        number = int(place[1:])
        lines = data.decode("utf-8", "replace").splitlines()
        if not 1 <= number <= len(lines):
            raise UsageError(f"the archived file has {len(lines)} lines, not line {number}")
        header = f"line 1: {lines[0]}\n" if number > 1 else ""
        return header + f"line {number}: {lines[number - 1]}"
    page = json.loads(data)
    index = int(place)
    records = _json_records(page, None) if isinstance(page, Mapping) else page
    if not isinstance(records, list) or not 0 <= index < len(records):
        raise UsageError(f"the archived page holds no record {index}")
    return json.dumps(records[index], ensure_ascii=False, indent=2)


def _ref(args: argparse.Namespace) -> int:
    from ingest_assets.archive import ArchiveError, ArchiveStore, archive_location

    try:
        print(resolve_ref(args.ref, ArchiveStore(archive_location())))
    except ArchiveError as exc:
        raise UsageError(str(exc)) from None
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

    contract = commands.add_parser(
        "contract", help="fields a source sends now against its archived day (exit 1: changed)"
    )
    contract.add_argument("source")
    contract.add_argument("--partition", required=True, help="the day to fetch now")
    contract.add_argument("--archived", help="the archived day to compare with (default: same)")
    contract.add_argument("--sources-file", help="default: INGEST_SOURCES_FILE or the shipped")
    contract.add_argument("--limit", type=int, default=100_000, help="records compared, at most")
    contract.set_defaults(run=_contract)

    ref = commands.add_parser("ref", help="the archived bytes a row's _source_ref names")
    ref.add_argument("ref", help="a _source_ref value: <sha256>#<index> or <sha256>#L<line>")
    ref.set_defaults(run=_ref)

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
