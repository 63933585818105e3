"""INGEST_SANDBOX=1: the CLI (and anything loading the definitions) works offline."""

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DAGSTER = Path(sys.executable).with_name("dagster")
URL_VARIABLES = ("DUMMYJSON_BASE_URL", "OPEN_METEO_BASE_URL")
# Offline even on a machine with network: every request but loopback goes to a dead proxy, so
# the public APIs (which serve the same catalogue) cannot make a test pass.
OFFLINE = {
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "ALL_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
}

# Loads the definitions as any Dagster process does and reports what the REST sources will use.
PROBE = """
import json, os, httpx
import ingest_assets.definitions
urls = {v: os.environ.get(v) for v in ("DUMMYJSON_BASE_URL", "OPEN_METEO_BASE_URL")}
live = {}
for name, url in urls.items():
    try:
        live[name] = httpx.get(f"{url}/products", params={"limit": 1}, timeout=5).status_code
    except httpx.HTTPError:
        live[name] = None
print(json.dumps({"urls": urls, "live": live}))
"""


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "DAGSTER_"))}
    for name in URL_VARIABLES:
        env.pop(name, None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["INGEST_HOME"] = str(tmp_path / "home")
    env.update(OFFLINE)
    env.update(extra)
    return env


def probe(tmp_path: Path, **extra: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=clean_env(tmp_path, **extra),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_switch_points_the_rest_sources_at_a_live_sandbox(tmp_path: Path) -> None:
    seen = probe(tmp_path, INGEST_SANDBOX="1")
    urls = seen["urls"]
    assert urls["DUMMYJSON_BASE_URL"].startswith("http://127.0.0.1:")
    assert urls["DUMMYJSON_BASE_URL"] == urls["OPEN_METEO_BASE_URL"]
    assert seen["live"] == {name: 200 for name in URL_VARIABLES}


def test_without_the_switch_nothing_changes(tmp_path: Path) -> None:
    assert probe(tmp_path)["urls"] == {name: None for name in URL_VARIABLES}
    assert probe(tmp_path, INGEST_SANDBOX="0")["urls"] == {name: None for name in URL_VARIABLES}


def test_a_url_set_by_hand_stays_one_inherited_from_a_parents_sandbox_is_replaced(
    tmp_path: Path,
) -> None:
    # A run worker or step process inherits the URL of its parent's sandbox (marked in
    # INGEST_SANDBOX_URL); the parent may be gone, so the child serves its own.
    gone = "http://127.0.0.1:9"
    seen = probe(
        tmp_path,
        INGEST_SANDBOX="1",
        DUMMYJSON_BASE_URL=gone,
        INGEST_SANDBOX_URL=gone,
        OPEN_METEO_BASE_URL="http://weather.invalid",
    )
    assert seen["urls"]["OPEN_METEO_BASE_URL"] == "http://weather.invalid"
    assert seen["urls"]["DUMMYJSON_BASE_URL"] not in (gone, None)
    assert seen["live"]["DUMMYJSON_BASE_URL"] == 200


@pytest.mark.slow
def test_dagster_asset_materialize_offline_with_the_switch(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            str(DAGSTER), "asset", "materialize", "-m", "ingest_assets.definitions",
            "--select", "raw/dummyjson_products,raw/open_meteo_weather",
            "--partition", "2024-06-01",
        ],
        env=clean_env(tmp_path, INGEST_SANDBOX="1"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    with duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM raw.dummyjson_products").fetchone() == (194,)
        assert con.execute("SELECT count(*) FROM raw.open_meteo_weather").fetchone() == (120,)
