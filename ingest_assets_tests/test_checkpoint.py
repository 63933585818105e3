"""Resumable fetches: a failed or killed try's pages are not fetched again, and nothing changes.

Against the sandbox over HTTP; the server's own request counts say what was fetched.
"""

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ingest_assets.config import SourceConfig
from ingest_assets.connectors import FetchContext, collect, get_connector_class
from ingest_assets.connectors.checkpoint import PageCheckpoint, request_key
from ingest_assets.connectors.http import FetchError
from ingest_assets.sandbox import Faults, Sandbox

DAY = dt.date(2024, 6, 1)
PAGES = 20  # 194 products, 10 a page


def products(url: str, **http: Any) -> SourceConfig:
    return SourceConfig.model_validate(
        {
            "name": "resumable",
            "connector": "rest",
            "dataset": "products",
            "base_url": url,
            "path": "/products",
            "params": {"api_key": "sekrit-key"},
            "record_path": "products",
            "pagination": {"kind": "limit_offset", "offset_param": "skip", "page_size": 10},
            "http": {
                "max_concurrency": 2,
                "max_attempts": 1,
                "rate_limit_per_s": 1000,
                "burst": 100,
                **http,
            },
        }
    )


def fetch(src: SourceConfig, checkpoint: PageCheckpoint | None = None, **ctx: Any) -> str:
    """The records as JSON text, in the order they arrived (one page at a time: a fixed order)."""
    context = FetchContext(partition_date=DAY, checkpoint=checkpoint, **ctx)
    batches = collect(get_connector_class(src.connector)(src), context)
    return json.dumps([r for b in batches for r in b])


def served(sandbox: Sandbox) -> int:
    return sandbox.stats()["by_path"].get("/products", 0)


@pytest.fixture
def uninterrupted(sandbox: Sandbox) -> str:
    sandbox.reset_stats()
    records = fetch(products(sandbox.url, max_concurrency=1))
    assert served(sandbox) == PAGES
    sandbox.reset_stats()
    return records


def test_a_failed_try_resumes_where_it_stopped(
    sandbox: Sandbox, uninterrupted: str, tmp_path: Path
) -> None:
    checkpoint = PageCheckpoint.for_fetch(tmp_path, "resumable", DAY)
    src = products(sandbox.url, max_concurrency=1)
    pages = []

    def fail_after_five(_: str) -> None:
        pages.append(1)
        if len(pages) == 5:  # the API starts failing for good after page 5
            sandbox.set_faults(Faults(error_rate=1.0))

    with pytest.raises(FetchError, match="gave up"):
        fetch(src, checkpoint, on_progress=fail_after_five)
    kept = checkpoint.pages()
    assert 5 <= kept < PAGES

    sandbox.set_faults(Faults())
    sandbox.reset_stats()
    retry = PageCheckpoint.for_fetch(tmp_path, "resumable", DAY)
    assert fetch(src, retry) == uninterrupted
    assert served(sandbox) == PAGES - kept
    assert retry.hits == kept and retry.stored == PAGES - kept

    # once the day is written the checkpoint goes: the next fetch of the day asks the API again
    retry.clear()
    assert not retry.folder.exists()
    sandbox.reset_stats()
    assert fetch(src, PageCheckpoint.for_fetch(tmp_path, "resumable", DAY)) == uninterrupted
    assert served(sandbox) == PAGES


@pytest.mark.slow
def test_a_killed_try_resumes_where_it_stopped(
    sandbox: Sandbox, uninterrupted: str, tmp_path: Path
) -> None:
    src = products(sandbox.url)
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ingest_assets_tests.fetch_worker",
            src.model_dump_json(),
            DAY.isoformat(),
            "--home",
            str(tmp_path),
            "--stop-after",
            "7",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ,
    )
    try:
        for _ in range(7):
            assert worker.stdout.readline().strip() == "page"
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        worker.stdout.close()
    assert worker.returncode == -signal.SIGKILL
    checkpoint = PageCheckpoint.for_fetch(tmp_path, "resumable", DAY)
    kept = checkpoint.pages()
    assert 7 <= kept < PAGES
    # only complete pages: every stored file is its headers, then the whole body as sent
    for path in checkpoint.folder.iterdir():
        assert not path.name.startswith(".tmp-")
        head, body = path.read_bytes().split(b"\n", 1)
        assert "headers" in json.loads(head)
        assert 1 <= len(json.loads(body)["products"]) <= 10

    sandbox.reset_stats()
    resumed = fetch(src, checkpoint)
    assert served(sandbox) == PAGES - kept
    # pages after the first arrive in completion order; the records are the same ones
    as_set = sorted(json.dumps(r, sort_keys=True) for r in json.loads(resumed))
    assert as_set == sorted(json.dumps(r, sort_keys=True) for r in json.loads(uninterrupted))


def test_checkpoints_hold_no_secrets_and_key_requests_exactly(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    checkpoint = PageCheckpoint.for_fetch(tmp_path, "resumable", "2024-06-01")
    fetch(products(sandbox.url), checkpoint)
    assert checkpoint.folder == tmp_path / "checkpoints" / "resumable" / "2024-06-01"
    assert checkpoint.pages() == PAGES
    for path in checkpoint.folder.iterdir():
        text = path.read_text()
        assert "sekrit-key" not in text and "127.0.0.1" not in text
    # parameter order does not matter; the method, the URL and every parameter do
    url = f"{sandbox.url}/products"
    assert request_key("GET", url, {"a": 1, "b": 2}) == request_key("get", url, {"b": 2, "a": 1})
    assert request_key("GET", url, {"a": 1}) != request_key("GET", url, {"a": 2})
    assert request_key("GET", url, {"a": 1}) != request_key("GET", url + "/", {"a": 1})


def test_old_checkpoints_are_not_resumed(sandbox: Sandbox, tmp_path: Path) -> None:
    checkpoint = PageCheckpoint.for_fetch(tmp_path, "resumable", DAY)
    fetch(products(sandbox.url), checkpoint)
    assert PageCheckpoint.for_fetch(tmp_path, "resumable", DAY).pages() == PAGES
    day_ago = time.time() - 24 * 3600
    for path in checkpoint.folder.iterdir():
        os.utime(path, (day_ago, day_ago))
    assert PageCheckpoint.for_fetch(tmp_path, "resumable", DAY, max_age_s=3600).pages() == 0
    assert not checkpoint.folder.exists()


def test_a_fetch_sweeps_old_checkpoints_of_other_days(sandbox: Sandbox, tmp_path: Path) -> None:
    old = PageCheckpoint.for_fetch(tmp_path, "resumable", "2024-05-01")
    fetch(products(sandbox.url), old)
    for path in old.folder.iterdir():
        os.utime(path, (time.time() - 24 * 3600,) * 2)
    recent = PageCheckpoint.for_fetch(tmp_path, "resumable", "2024-05-02")
    fetch(products(sandbox.url), recent)
    PageCheckpoint.for_fetch(tmp_path, "resumable", DAY, max_age_s=3600)
    assert not old.folder.exists() and recent.pages() == PAGES


def test_a_damaged_checkpoint_file_is_fetched_again(sandbox: Sandbox, tmp_path: Path) -> None:
    checkpoint = PageCheckpoint.for_fetch(tmp_path, "resumable", DAY)
    first = fetch(products(sandbox.url), checkpoint)
    damaged = sorted(checkpoint.folder.iterdir())[0]
    damaged.write_text('{"body": [1, 2')
    sandbox.reset_stats()
    again = PageCheckpoint.for_fetch(tmp_path, "resumable", DAY)
    assert sorted(json.loads(fetch(products(sandbox.url), again)), key=str) == sorted(
        json.loads(first), key=str
    )
    assert served(sandbox) == 1 and again.hits == PAGES - 1
