"""The raw archive: what the raw assets fetched, kept content-addressed, replayed offline.

A day materialized live from the sandbox API and the landing files is materialized again with
the API stopped, the landing folder empty and a fresh warehouse (``INGEST_FETCH=archive``):
every table comes out the same. The store is exercised on a folder and on a real S3-compatible
server (moto's server mode on loopback).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from ingest_assets.archive import ArchiveStore, Manifest
from ingest_assets.config import DEFAULT_LANDING_DIR
from ingest_assets.sandbox import Sandbox
from ingest_assets_tests.conftest import QUIET

DAY = "2024-06-01"
# Columns a second run may change: who ran it, and when the split decided.
VOLATILE = {"_run_id", "run_id", "quarantined_run_id", "quarantined_at", "replay_run_id"}
VOLATILE_INGESTION = {"requests", "retries", "failed_requests", "duration_s"}


@pytest.fixture(params=["folder", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ArchiveStore]:
    if request.param == "folder":
        yield ArchiveStore(tmp_path / "archive")
        return
    with s3_server() as url:
        yield ArchiveStore(url)


class s3_server:  # noqa: N801 - used as a context manager, like open()
    """moto's S3-compatible server on loopback with one bucket; yields ``s3://bucket/prefix``."""

    def __enter__(self) -> str:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.saved = {k: os.environ.get(k) for k in _AWS}
        os.environ.update(
            AWS_ENDPOINT_URL=f"http://{host}:{port}",
            AWS_ACCESS_KEY_ID="test-key",
            AWS_SECRET_ACCESS_KEY="test-secret",
            AWS_DEFAULT_REGION="us-east-1",
        )
        import boto3

        # moto keeps its buckets per process, whatever the server: a bucket of its own.
        bucket = f"ingest-archive-{uuid.uuid4().hex[:12]}"
        boto3.client("s3").create_bucket(Bucket=bucket)
        return f"s3://{bucket}/team"

    def __exit__(self, *exc: object) -> None:
        self.server.stop()
        for name, value in self.saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


_AWS = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


def test_the_same_body_is_stored_once_and_read_back_exactly(store: ArchiveStore) -> None:
    body = b'{"products": [' + b'{"title": "Lamp \xc3\xa9"},' * 500 + b"{}]}"
    first, again = store.put(body), store.put(body)
    assert first == again
    assert store.get(first) == body
    objects = store.fs.find(store._path("objects"))
    assert len(objects) == 1 and store.fs.size(objects[0]) < len(body) / 5  # compressed


def test_manifests_list_days_and_retention_drops_old_days_and_their_objects(
    store: ArchiveStore,
) -> None:
    shared, old_only = store.put(b"shared page"), store.put(b"old page")
    for day, objects in (("2024-05-01", [shared, old_only]), ("2024-06-01", [shared])):
        entries = [
            {"kind": "http", "key": f"GET /p?{i}", "object": o} for i, o in enumerate(objects)
        ]
        store.write_manifest(Manifest("shop", day, entries, run_id="r"))
    assert store.days("shop") == ["2024-05-01", "2024-06-01"]
    assert store.manifest("shop", "2024-05-01").objects == {shared, old_only}
    assert store.manifest("shop", "2024-07-01") is None

    removed = store.prune({"shop": 10}, dt.date(2024, 6, 5))
    assert removed == {"days": {"shop": ["2024-05-01"]}, "objects": 1}
    assert store.days("shop") == ["2024-06-01"]
    assert store.get(shared) == b"shared page"
    with pytest.raises(Exception, match="missing"):
        store.get(old_only)
    # A source without keep_days keeps everything.
    assert store.prune({}, dt.date(2030, 1, 1)) == {"days": {}, "objects": 0}


def test_a_damaged_object_is_an_error_not_wrong_data(tmp_path: Path) -> None:
    import gzip

    store = ArchiveStore(tmp_path / "archive")
    sha = store.put(b"the real page")
    Path(store.object_path(sha)).write_bytes(gzip.compress(b"another page"))
    with pytest.raises(Exception, match="damaged"):
        store.get(sha)


# -- offline re-materialization ---------------------------------------------------------------


def _run(defs_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, **tags: str):
    from ingest_assets.definitions import build_definitions

    for name, value in defs_env.items():
        monkeypatch.setenv(name, value)
    with dg.DagsterInstance.ephemeral() as instance:
        return (
            build_definitions()
            .resolve_job_def("ingest_pipeline")
            .execute_in_process(
                partition_key=DAY,
                instance=instance,
                run_config=QUIET,
                tags=tags,
                raise_on_error=False,
            )
        )


def _tables(home: Path) -> dict[str, pd.DataFrame]:
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        con.execute("SET TimeZone='UTC'")
        names = con.execute(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables "
            "WHERE table_schema <> 'main' ORDER BY 1"
        ).fetchall()
        tables = {}
        for (name,) in names:
            frame = con.execute(f"SELECT * FROM {name}").df()
            drop = VOLATILE | (VOLATILE_INGESTION if name == "metrics.ingestion" else set())
            frame = frame.drop(columns=[c for c in frame.columns if c in drop])
            frame = frame.astype(str).sort_values(list(frame.columns)).reset_index(drop=True)
            tables[name] = frame
        return tables


@pytest.mark.slow
def test_a_day_is_materialized_again_offline_from_the_archive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    landing = tmp_path / "landing"
    shutil.copytree(DEFAULT_LANDING_DIR, landing)
    archive = tmp_path / "archive"
    for name in ("INGEST_WAREHOUSE_URL", "INGEST_SOURCES_FILE", "INGEST_EXECUTOR", "INGEST_FETCH"):
        monkeypatch.delenv(name, raising=False)
    live_home, offline_home = tmp_path / "live", tmp_path / "offline"
    common = {"INGEST_LANDING_DIR": str(landing), "INGEST_ARCHIVE_URL": str(archive)}
    with Sandbox(port=0) as sandbox:
        urls = {"DUMMYJSON_BASE_URL": sandbox.url, "OPEN_METEO_BASE_URL": sandbox.url}
        live = _run({**common, **urls, "INGEST_HOME": str(live_home)}, monkeypatch)
    assert live.success
    store = ArchiveStore(archive)
    assert {"dummyjson_products", "partner_feed", "open_meteo_weather"} <= set(store.sources())
    partner = store.manifest("partner_feed", DAY)
    assert [e["kind"] for e in partner.entries] == ["file"]
    assert partner.entries[0]["path"] == f"partner_feed/{DAY}.csv"

    # The API is gone, the landing folder is empty, the warehouse is new.
    shutil.rmtree(landing)
    landing.mkdir()
    offline = _run(
        {**common, **urls, "INGEST_HOME": str(offline_home), "INGEST_FETCH": "archive"},
        monkeypatch,
    )
    assert offline.success
    before, after = _tables(live_home), _tables(offline_home)
    assert set(before) == set(after)
    for name, frame in before.items():
        pd.testing.assert_frame_equal(frame, after[name], obj=name)
    assert len(before["raw.dummyjson_products"]) == 194
    _every_row_says_where_it_came_from(live_home, ArchiveStore(archive))

    # The run tag does the same, and wins over the environment.
    tagged = _run(
        {**common, "INGEST_HOME": str(tmp_path / "tagged"), "INGEST_FETCH": "live"},
        monkeypatch,
        **{"ingest/fetch": "archive"},
    )
    assert tagged.success


def _every_row_says_where_it_came_from(home: Path, store: ArchiveStore) -> None:
    """Raw, quarantine and cleaned rows carry ``_source_ref``; it resolves to the bytes."""
    from ingest_assets.cli import resolve_ref

    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        for table in ("raw.dummyjson_products", "raw.partner_feed", "cleaned.products"):
            (missing,) = con.execute(
                f"SELECT count(*) FROM {table} WHERE _source_ref IS NULL"
            ).fetchone()
            assert missing == 0, table
        api = con.execute(
            "SELECT _source_ref, _record FROM raw.dummyjson_products ORDER BY _seq LIMIT 1 OFFSET 40"
        ).fetchone()
        quarantined = con.execute(
            "SELECT _source_ref, record FROM quarantine.records WHERE source = 'partner_feed' "
            "ORDER BY _source_ref LIMIT 1"
        ).fetchone()
        (bad,) = con.execute(
            "SELECT count(*) FROM quarantine.records WHERE _source_ref IS NULL"
        ).fetchone()
    assert bad == 0
    ref, record = api
    assert ref.split("#")[1] == "40"  # the 41st record: the 41st of the first page of 50
    assert json.loads(resolve_ref(ref, store)) == json.loads(record)
    ref, record = quarantined
    assert "#L" in ref
    line = resolve_ref(ref, store).splitlines()[-1]
    assert json.loads(record)["partner_sku"] in line


@pytest.mark.slow
def test_a_day_never_archived_fails_naming_source_and_day(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("INGEST_WAREHOUSE_URL", "INGEST_SOURCES_FILE", "INGEST_EXECUTOR"):
        monkeypatch.delenv(name, raising=False)
    result = _run(
        {
            "INGEST_HOME": str(tmp_path / "home"),
            "INGEST_ARCHIVE_URL": str(tmp_path / "empty-archive"),
            "INGEST_FETCH": "archive",
            "DUMMYJSON_BASE_URL": "http://127.0.0.1:9",
            "OPEN_METEO_BASE_URL": "http://127.0.0.1:9",
        },
        monkeypatch,
    )
    assert not result.success
    failures = [
        e.step_failure_data.error.message
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.STEP_FAILURE
    ]
    text = "\n".join(failures)
    assert f"source dummyjson_products, day {DAY}: never archived" in text
    # A permanent failure: no step retry was spent on it.
    assert not [
        e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY
    ]


def test_an_unknown_fetch_mode_is_refused() -> None:
    from ingest_assets.archive import fetch_mode

    assert fetch_mode({}) in ("live", "archive")
    assert fetch_mode({"ingest/fetch": "ARCHIVE"}) == "archive"
    with pytest.raises(ValueError, match="'offline' is not a fetch mode"):
        fetch_mode({"ingest/fetch": "offline"})


def test_secrets_never_reach_the_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A token sent in a header, in the query and in the path is archived as its reference."""
    from ingest_assets.archive import ArchiveRecorder, Redactor, secret_values

    monkeypatch.setenv("SHOP_TOKEN", "s3cr3t-t0ken/+=")
    configured = {
        "path": "/bot${SHOP_TOKEN}/items",
        "params": {"api_key": "${SHOP_TOKEN}", "page": "1"},
        "headers": {"Authorization": "Bearer ${SHOP_TOKEN}"},
    }
    redactor = Redactor(secret_values(configured))
    store = ArchiveStore(tmp_path / "archive")
    recorder = ArchiveRecorder(
        store, "shop", dt.date(2024, 6, 1), redactor=redactor, request_headers=configured["headers"]
    )
    recorder.save(
        "https://api.example.org/bots3cr3t-t0ken%2F%2B%3D/items",
        {"api_key": "s3cr3t-t0ken/+=", "page": "1", "access_token": "other-secret"},
        b'{"items": []}',
        {"Content-Type": "application/json", "Set-Cookie": "session=abc"},
    )
    recorder.commit("run-1")
    text = Path(store.manifest_path("shop", "2024-06-01")).read_text()
    assert "s3cr3t" not in text and "other-secret" not in text and "session=abc" not in text
    entry = json.loads(text)["entries"][0]
    assert entry["request_headers"] == {"Authorization": "Bearer ${SHOP_TOKEN}"}
    assert "/bot${SHOP_TOKEN}/items" in entry["url"] and "access_token=REDACTED" in entry["url"]


def test_the_retention_job_keeps_each_source_its_days(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    from ingest_assets.config import DEFAULT_SOURCES_FILE
    from ingest_assets.definitions import build_definitions

    shipped = yaml.safe_load(DEFAULT_SOURCES_FILE.read_text())["sources"]
    partner = {**shipped["partner_feed"], "archive": {"keep_days": 30}}
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        yaml.safe_dump(
            {"sources": {"partner_feed": partner, "supplier_catalog": shipped["supplier_catalog"]}}
        )
    )
    archive = tmp_path / "archive"
    monkeypatch.setenv("INGEST_SOURCES_FILE", str(sources))
    monkeypatch.setenv("INGEST_ARCHIVE_URL", str(archive))
    store = ArchiveStore(archive)
    today = dt.datetime.now(dt.UTC).date().isoformat()
    old, recent = store.put(b"old file"), store.put(b"recent file")
    for source in ("partner_feed", "supplier_catalog"):
        store.write_manifest(Manifest(source, "2024-01-01", [{"kind": "file", "object": old}]))
        store.write_manifest(Manifest(source, today, [{"kind": "file", "object": recent}]))

    with dg.DagsterInstance.ephemeral() as instance:
        result = (
            build_definitions()
            .resolve_job_def("archive_retention")
            .execute_in_process(instance=instance, run_config=QUIET)
        )
    assert result.success
    assert store.days("partner_feed") == [today]
    # No keep_days: everything kept (and the old object with it, since that day names it).
    assert store.days("supplier_catalog") == ["2024-01-01", today]
    assert store.get(old) == b"old file"
    (output,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_OUTPUT]
    metadata = output.step_output_data.metadata
    assert metadata["days_removed"].value == 1 and metadata["objects_removed"].value == 0


@pytest.mark.slow
def test_a_contract_test_diffs_what_a_source_sends_now_with_its_archived_day(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Record once (a materialization archives the day), then compare a changed feed."""
    import subprocess
    import sys

    from ingest_assets.definitions import build_definitions

    landing = tmp_path / "landing"
    (landing / "feed").mkdir(parents=True)
    feed = landing / "feed" / f"{DAY}.jsonl"
    feed.write_text('{"id": 1, "n": 5, "gone": "x"}\n{"id": 2, "n": 6, "gone": "y"}\n')
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        "datasets:\n  feed_rows:\n    key: [id]\n    fields:\n"
        "      id: {type: integer}\n      n: {type: integer}\n"
        "sources:\n  feed:\n    connector: jsonl\n    dataset: feed_rows\n"
        '    path: "{landing_dir}/feed/{date}.jsonl"\n'
    )
    env = {
        "INGEST_SOURCES_FILE": str(sources),
        "INGEST_LANDING_DIR": str(landing),
        "INGEST_HOME": str(tmp_path / "home"),
        "INGEST_ARCHIVE_URL": str(tmp_path / "archive"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with dg.DagsterInstance.ephemeral() as instance:
        job = build_definitions().resolve_job_def("ingest_feed")
        assert job.execute_in_process(
            partition_key=DAY, instance=instance, run_config=QUIET
        ).success

    def contract() -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "ingest_assets", "contract", "feed", "--partition", DAY],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )

    same = contract()
    assert same.returncode == 0, same.stderr
    assert "the same fields, of the same types" in same.stdout
    feed.write_text('{"id": 1, "n": "five", "new": true}\n')
    changed = contract()
    assert changed.returncode == 1, changed.stderr
    lines = [line.split() for line in changed.stdout.splitlines()[1:]]
    assert sorted(lines) == [
        ["missing", "gone", "(text)"],
        ["new", "new", "(boolean)"],
        ["retyped", "n", "(integer", "->", "text)"],
    ]


def test_a_source_whose_reads_are_not_archived_refuses_archive_mode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An SQL source reads a database, not bodies or files: in archive mode it would query the
    live database, so it fails instead, saying so."""
    from ingest_assets.archive import NotArchived
    from ingest_assets.assets.archiving import DayArchive
    from ingest_assets.config import SourceConfig

    source = SourceConfig.model_validate(
        {"name": "orders_db", "connector": "sql", "dataset": "orders", "url": "sqlite://"}
    )
    with pytest.raises(NotArchived, match="source orders_db, day 2024-06-01: a sql source"):
        DayArchive.for_fetch(source, dt.date(2024, 6, 1), None, {"ingest/fetch": "archive"})


def test_a_page_an_earlier_try_fetched_is_archived_from_the_checkpoint(tmp_path: Path) -> None:
    """A resumed day asks no API for the pages it has: they are archived from the checkpoint,
    with the bytes the API sent, read once."""
    from ingest_assets.archive import ArchiveRecorder
    from ingest_assets.connectors.checkpoint import PageCheckpoint

    checkpoint = PageCheckpoint(tmp_path / "checkpoint")
    checkpoint.save("http://api/items", {"page": 1}, b'{"items": [1, 2]}', {"Set-Cookie": "s=1"})
    store = ArchiveStore(tmp_path / "archive")
    recorder = ArchiveRecorder(store, "shop", dt.date(2024, 6, 1), checkpoint)
    body, _, digest = recorder.load("http://api/items", {"page": 1})
    assert body == {"items": [1, 2]} and recorder.hits == 1
    assert store.get(digest) == b'{"items": [1, 2]}'
    assert [e["object"] for e in recorder.entries] == [digest]
    assert recorder.load("http://api/items", {"page": 2}) is None and len(recorder.entries) == 1
