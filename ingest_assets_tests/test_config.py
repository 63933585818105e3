"""sources.yaml: the shipped file loads; a bad file names the file, the source and the field."""

from pathlib import Path

import pytest

from ingest_assets.config import ConfigError, resolve_env
from ingest_assets.definitions import build_definitions
from ingest_assets.loading import load_sources

VALID_REST = """
sources:
  shop:
    connector: rest
    dataset: products
    base_url: http://127.0.0.1:1
    record_path: products
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sources.yaml"
    path.write_text(text)
    return path


def test_shipped_sources_load() -> None:
    sources = load_sources()
    assert [s.name for s in sources.sources] == [
        "dummyjson_products",
        "partner_feed",
        "supplier_catalog",
        "open_meteo_weather",
    ]
    weather = sources.by_name("open_meteo_weather")
    assert weather.dataset == "weather"
    assert len(weather.options["fan_out"]) == 5
    assert sources.by_name("dummyjson_products").retry.max_retries == 3


def test_valid_minimal_file(tmp_path: Path) -> None:
    sources = load_sources(write(tmp_path, VALID_REST))
    assert sources.by_name("shop").http.max_attempts == 5


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            VALID_REST.replace("connector: rest", "connector: ftp"),
            ["source 'shop'", "field 'connector'", "unknown connector kind 'ftp'", "rest"],
        ),
        (
            VALID_REST.replace("    base_url: http://127.0.0.1:1\n", ""),
            ["source 'shop'", "field 'base_url'", "Field required"],
        ),
        (
            VALID_REST + "  shop:\n    connector: csv\n    dataset: products\n    path: x.csv\n",
            ["duplicate key 'shop'"],
        ),
        (
            VALID_REST + "    pagination: {kind: limit_offset, page_size: -1}\n",
            [
                "source 'shop'",
                "field 'pagination.limit_offset.page_size'",
                "greater than or equal to 1",
            ],
        ),
        (
            VALID_REST + "    retry: {max_retries: many}\n",
            ["source 'shop'", "field 'retry.max_retries'"],
        ),
        (
            VALID_REST.replace("dataset: products", "dataset: orders"),
            ["source 'shop'", "field 'dataset'", "unknown dataset 'orders'"],
        ),
        (
            VALID_REST + "    colour: blue\n",
            ["source 'shop'", "field 'colour'", "Extra inputs are not permitted"],
        ),
        (
            VALID_REST.replace("  shop:", "  Shop-Feed:"),
            ["source 'Shop-Feed'", "field 'name'", "lower_snake_case"],
        ),
        ("sources: {}\n", ["non-empty 'sources'"]),
        ("sources: [\n", ["not valid YAML"]),
    ],
)
def test_bad_file_names_file_source_and_field(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_sources(path)
    message = str(error.value)
    assert str(path) in message
    for part in expected:
        assert part in message


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_sources(tmp_path / "nope.yaml")


def test_definitions_fail_to_load_on_a_bad_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, VALID_REST.replace("connector: rest", "connector: ftp"))
    monkeypatch.setenv("INGEST_SOURCES_FILE", str(path))
    with pytest.raises(ConfigError, match="unknown connector kind 'ftp'"):
        build_definitions()


def test_env_references_resolve_at_run_time() -> None:
    env = {"TOKEN": "s3cret"}
    assert resolve_env("Bearer ${TOKEN}", env) == "Bearer s3cret"
    assert resolve_env("${BASE:-http://x}/a", env) == "http://x/a"
    assert resolve_env({"h": ["${TOKEN}"]}, env) == {"h": ["s3cret"]}
    with pytest.raises(ConfigError, match="MISSING is not set"):
        resolve_env("${MISSING}", env)
