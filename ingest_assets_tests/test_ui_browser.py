"""The Dagster UI in a real browser, over a materialized partition: what a person sees.

Debian's ``chromium`` driven by Playwright (``executable_path``, no downloaded browser), the
webserver as its own process on a loopback port over a DAGSTER_HOME holding one pipeline run.
Screenshots are kept under ``.ingest/test-artefacts/ui`` (or ``$INGEST_TEST_ARTEFACTS``).
Without a browser the tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from ingest_assets.sandbox import Sandbox
from ingest_assets_tests.conftest import read_table, run_pipeline
from ingest_assets_tests.dagster_services import location_loaded, wait_until, webserver
from ingest_assets_tests.pg import REPO_ROOT, in_ci, subprocess_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
DEBIAN_CHROMIUM = "/usr/bin/chromium"
TIMEOUT_MS = 60_000
# The shipped sources, landing files and embedded warehouse, whatever the calling shell sets.
CLEARED = ("INGEST_WAREHOUSE_URL", "INGEST_SOURCES_FILE", "INGEST_LANDING_DIR", "INGEST_EXECUTOR")
INSTANCE_YAML = "telemetry:\n  enabled: false\nnux:\n  enabled: false\n"


def artefact_dir() -> Path:
    folder = Path(
        os.environ.get("INGEST_TEST_ARTEFACTS") or REPO_ROOT / ".ingest" / "test-artefacts"
    )
    folder = folder / "ui"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def chromium() -> str | None:
    """``$INGEST_CHROMIUM`` if set, else Debian's chromium (or one on PATH); None: missing."""
    configured = os.environ.get("INGEST_CHROMIUM")
    if configured:
        return configured if Path(configured).is_file() else None
    return DEBIAN_CHROMIUM if Path(DEBIAN_CHROMIUM).is_file() else shutil.which("chromium")


def browser_or_fail() -> str:
    """The chromium executable; a missing one (or missing Playwright) skips, or fails in CI."""
    executable = chromium()
    problem = None
    if executable is None:
        problem = "chromium is not installed (apt-get install -y chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "Playwright is not installed (pip install -e '.[dev]')"
    if problem is None:
        return executable  # type: ignore[return-value]
    if in_ci():
        pytest.fail(f"{problem} (CI=true: the browser test must run, not skip)", pytrace=False)
    pytest.skip(problem)


def test_a_missing_browser_fails_under_ci_and_skips_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INGEST_CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="chromium is not installed"):
        browser_or_fail()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        browser_or_fail()


@dataclass
class UI:
    url: str
    run_id: str
    step_keys: list[str]
    asset_steps: list[str]
    asset_keys: list[dg.AssetKey]
    product_title: str
    shots: Path


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory, sandbox: Sandbox) -> Iterator[UI]:
    """One materialized demo partition and a webserver over its DAGSTER_HOME."""
    browser_or_fail()
    root = tmp_path_factory.mktemp("ui")
    dagster_home, ingest_home = root / "dagster_home", root / "ingest_home"
    dagster_home.mkdir()
    ingest_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(INSTANCE_YAML)
    env = {
        "DAGSTER_HOME": str(dagster_home),
        "INGEST_HOME": str(ingest_home),
        "DUMMYJSON_BASE_URL": sandbox.url,
        "OPEN_METEO_BASE_URL": sandbox.url,
    }
    with pytest.MonkeyPatch.context() as patch:
        for name in CLEARED:
            patch.delenv(name, raising=False)
        for name, value in env.items():
            patch.setenv(name, value)
        from ingest_assets.definitions import build_definitions

        defs = build_definitions()
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            result = run_pipeline(instance=instance, defs=defs)
            assert result.success
            step_keys = [s.step_key for s in instance.get_run_step_stats(result.run_id)]
            asset_steps = sorted({e.step_key for e in result.get_asset_materialization_events()})
        asset_keys = list(defs.resolve_asset_graph().get_all_asset_keys())
        product_title = (
            read_table(ingest_home, "cleaned.products")
            .sort_values(["source", "product_id"])["title"]
            .iloc[0]
        )

    server_env = {k: v for k, v in subprocess_env(**env).items() if k not in CLEARED}
    url, server = webserver(
        server_env, root, root / "logs", "-w", str(REPO_ROOT / "workspace.yaml")
    )
    with server as process:
        wait_until("the code location in the webserver", lambda: location_loaded(url), [process])
        shots = artefact_dir()
        print(f"\nUI screenshots: {shots}")
        yield UI(url, result.run_id, step_keys, asset_steps, asset_keys, product_title, shots)


@pytest.fixture
def page(ui: UI) -> Iterator:
    from playwright.sync_api import sync_playwright

    executable = browser_or_fail()
    with sync_playwright() as playwright:
        # --no-sandbox: CI containers run as root, where Chromium's sandbox cannot start.
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        try:
            context = browser.new_context(viewport={"width": 1600, "height": 1200})
            context.set_default_timeout(TIMEOUT_MS)
            yield context.new_page()
        finally:
            browser.close()


def shot(ui: UI, page, name: str) -> None:
    path = ui.shots / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


def test_the_lineage_shows_every_asset_in_a_box_per_layer(ui: UI, page) -> None:
    from playwright.sync_api import expect

    page.goto(f"{ui.url}/asset-groups")
    layers = sorted({key.path[0] for key in ui.asset_keys})
    for layer in layers:  # collapsed group nodes first
        expect(page.get_by_text(layer, exact=True).first).to_be_visible()
    # "Expand all groups" (⌥E), then zoomed out until the whole graph is in view.
    page.keyboard.press("Alt+e")
    expect(page.get_by_text("dummyjson_products", exact=True)).to_be_visible()
    for _ in range(4):
        page.locator('[aria-label="zoom_out"]').first.click()
        page.wait_for_timeout(300)
    # A node is labelled with the last part of its key: "products" three times (cleaned,
    # features, metrics), each inside its layer's labelled box.
    for label, count in Counter(key.path[-1] for key in ui.asset_keys).items():
        expect(page.get_by_text(label, exact=True)).to_have_count(count)
    shot(ui, page, "lineage")


def test_the_cleaned_products_page_shows_columns_a_preview_and_checks(ui: UI, page) -> None:
    from playwright.sync_api import expect

    page.goto(f"{ui.url}/assets/cleaned/products")
    expect(page.get_by_text("Latest check results")).to_be_visible()
    expect(page.get_by_text("Columns", exact=True)).to_be_visible()
    for column, kind, rule, description in (
        ("price", "double", "> 0", "List price."),
        ("discount_pct", "double", "<= 100", "Discount in percent"),
        ("stock", "bigint", ">= 0", "Units in stock."),
        ("partition_date", "date", "non-nullable", "The day (UTC)"),
    ):
        row = page.locator("tr", has=page.get_by_text(column, exact=True)).first
        for text in (kind, rule, description):
            expect(row).to_contain_text(text)
    # The materialization's preview: rows of the table as stored.
    expect(page.get_by_text("preview", exact=True).first).to_be_visible()
    expect(page.get_by_text(ui.product_title).first).to_be_visible()
    shot(ui, page, "cleaned_products")

    page.get_by_role("tab", name="Checks").click()
    expect(page.get_by_text("pandera_schema").first).to_be_visible()
    expect(page.get_by_text("250 rows satisfy cleaned.products")).to_be_visible()
    expect(page.get_by_text("Passed", exact=True).first).to_be_visible()
    expect(page.get_by_text("This is a blocking asset check.")).to_be_visible()
    shot(ui, page, "cleaned_products_checks")


def test_a_run_page_shows_its_steps(ui: UI, page) -> None:
    from playwright.sync_api import expect

    page.goto(f"{ui.url}/runs/{ui.run_id}")
    expect(page.get_by_text("Success", exact=True).first).to_be_visible()
    expect(page.get_by_text("partition: 2024-06-01")).to_be_visible()
    succeeded = page.get_by_text(f"Succeeded ({len(ui.step_keys)})")
    expect(succeeded).to_be_visible()
    succeeded.click()
    # Every step that materialized an asset is listed by its name.
    assert "raw__partner_feed" in ui.asset_steps
    for step in ui.asset_steps:
        expect(page.get_by_text(step, exact=True).first).to_be_visible()
    shot(ui, page, "run")
