"""The demo's entry point: a short message for a bad partition, a summary even for a failed day."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def demo(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "DAGSTER_"))}
    clean["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), clean.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "ingest_assets.demo", *args],
        env={**clean, "INGEST_HOME": str(tmp_path / "home"), **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("partition", ["2023-12-31", "2024-6-1", "tomorrow", "2999-01-01"])
def test_an_invalid_partition_gets_one_line_with_the_valid_range(
    tmp_path: Path, partition: str
) -> None:
    done = demo(tmp_path, "--partition", partition)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert f"invalid partition {partition!r}" in done.stderr
    assert "from 2024-01-01 to 20" in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 3  # argparse's usage line and the message
    assert not (tmp_path / "home").exists()  # nothing started


@pytest.mark.slow
def test_the_summary_of_a_failed_day_in_a_fresh_warehouse(tmp_path: Path) -> None:
    # One file source, no retries, and a day with no file: its raw step fails, nothing is
    # written, and no table exists in the fresh warehouse.
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        "sources:\n"
        "  partner_feed:\n"
        "    connector: csv\n"
        "    dataset: products\n"
        '    path: "{landing_dir}/partner_feed/{date}.csv"\n'
        "    mapping: {product_id: partner_sku, title: name, price: list_price}\n"
        "    retry: {max_retries: 0}\n"
    )
    (tmp_path / "landing").mkdir()
    done = demo(
        tmp_path,
        "--partition",
        "2024-06-03",
        INGEST_SOURCES_FILE=str(sources),
        INGEST_LANDING_DIR=str(tmp_path / "landing"),
    )
    assert done.returncode == 1, done.stdout + done.stderr[-3000:]
    out = done.stdout
    assert "partition 2024-06-03: FAILED" in out
    assert "raw__partner_feed: source partner_feed, day 2024-06-03: no file for partition" in out
    assert "raw.partner_feed             missing" in out
    assert "cleaned.products             missing" in out
    assert "Quarantined rows: quarantine.records is missing" in out
