"""Config mistakes that used to load fine and fail later now fail at load, saying where.

Unknown ``{name}`` templates, mapping targets that are not fields of the dataset, invalid cron
schedules and URLs without a scheme: each message names the file, the source and the field.
"""

import datetime as dt
from pathlib import Path

import pytest

from ingest_assets.config import TEMPLATE_NAMES, ConfigError
from ingest_assets.connectors.base import FetchContext
from ingest_assets.loading import load_sources

REST = """
sources:
  shop:
    connector: rest
    dataset: products
    base_url: http://127.0.0.1:1
    path: /items
    params: {{day: "{param}"}}
    record_path: products
{extra}"""

CSV = """
sources:
  feed:
    connector: csv
    dataset: products
    path: "{path}"
    mapping: {{product_id: sku}}
"""


def load(tmp_path: Path, text: str):
    path = tmp_path / "sources.yaml"
    path.write_text(text)
    return path, lambda: load_sources(path)


def fails(tmp_path: Path, text: str, *expected: str) -> str:
    path, loader = load(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        loader()
    message = str(error.value)
    for part in (str(path), *expected):
        assert part in message, message
    return message


def test_the_known_template_names_are_what_a_fetch_provides() -> None:
    ctx = FetchContext(partition_date=dt.date(2024, 6, 1))
    assert set(ctx.template_values()) == set(TEMPLATE_NAMES)


def test_unknown_template_name_in_a_file_path(tmp_path: Path) -> None:
    message = fails(
        tmp_path,
        CSV.format(path="{landing_dir}/feed/{day}.csv"),
        "source 'feed'",
        "field 'path'",
        "unknown template name {day}",
        "{date}",
    )
    assert "{landing_dir}" in message.split("known:")[1]


def test_unknown_template_name_in_a_query_parameter(tmp_path: Path) -> None:
    fails(
        tmp_path,
        REST.format(param="{day}", extra=""),
        "source 'shop'",
        "field 'params.day'",
        "{day}",
    )


def test_fan_out_fields_are_template_names_environment_references_are_not(
    tmp_path: Path,
) -> None:
    fan_out = "    fan_out: [{city: Berlin}, {city: Paris}]\n"
    _, loader = load(tmp_path, REST.format(param="{city}/{date}/${TOKEN:-x}", extra=fan_out))
    assert loader().by_name("shop").options["params"]["day"] == "{city}/{date}/${TOKEN:-x}"
    # A field only some fan_out items have would fail on the others: not a template name.
    partial = "    fan_out: [{city: Berlin}, {town: Paris}]\n"
    fails(tmp_path, REST.format(param="{city}", extra=partial), "field 'params.day'", "{city}")
    fails(tmp_path, REST.format(param="{city}", extra=""), "field 'params.day'", "{city}")


@pytest.mark.parametrize("target", ["discount_percent", "_run_id", "partition_date"])
def test_mapping_target_that_is_not_a_field_of_the_dataset(tmp_path: Path, target: str) -> None:
    text = REST.format(param="{date}", extra=f"    mapping: {{{target}: discountPercentage}}\n")
    message = fails(
        tmp_path,
        text,
        "source 'shop'",
        f"field 'mapping.{target}'",
        "is not a field of the products dataset",
        "discount_pct",
    )
    assert "_ingested_at" not in message


def test_mapping_targets_of_the_shipped_sources_are_fields() -> None:
    sources = load_sources()
    assert sources.by_name("open_meteo_weather").mapping["temperature_c"] == "temperature_2m"


@pytest.mark.parametrize("cron", ["every day", "0 3 * *", "61 * * * *", "0 0 30 2 *"])
def test_invalid_cron(tmp_path: Path, cron: str) -> None:
    text = REST.format(param="{date}", extra=f'    schedule: "{cron}"\n')
    fails(tmp_path, text, "source 'shop'", "field 'schedule'", repr(cron))


def test_valid_cron(tmp_path: Path) -> None:
    _, loader = load(tmp_path, REST.format(param="{date}", extra='    schedule: "15 0 * * 1-5"\n'))
    assert loader().by_name("shop").schedule == "15 0 * * 1-5"


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("127.0.0.1:8765", "has no scheme"),
        ("api.example.com/v1", "has no scheme"),
        ("ftp://files.example.com", "must start with http:// or https://"),
    ],
)
def test_base_url_without_http_scheme(tmp_path: Path, base_url: str, expected: str) -> None:
    text = REST.format(param="{date}", extra="").replace("http://127.0.0.1:1", base_url)
    fails(tmp_path, text, "source 'shop'", "field 'base_url'", expected)


def test_base_url_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = REST.format(param="{date}", extra="").replace(
        "http://127.0.0.1:1", "${SHOP_BASE_URL:-https://shop.example.com}"
    )
    _, loader = load(tmp_path, text)
    monkeypatch.delenv("SHOP_BASE_URL", raising=False)
    assert loader()  # the default is a URL
    monkeypatch.setenv("SHOP_BASE_URL", "localhost:8000")
    fails(tmp_path, text, "field 'base_url'", "'localhost:8000' (from SHOP_BASE_URL) has no scheme")
    monkeypatch.setenv("SHOP_BASE_URL", "http://localhost:8000")
    assert loader()


def test_a_url_from_a_variable_set_only_at_run_time_is_not_judged_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ORDERS_DB_URL", raising=False)
    text = "sources:\n  orders:\n    connector: sql\n    dataset: products\n"
    text += "    url: ${ORDERS_DB_URL}\n    table: orders\n"
    _, loader = load(tmp_path, text)
    assert loader()
    monkeypatch.setenv("ORDERS_DB_URL", "orders.db")
    fails(tmp_path, text, "source 'orders'", "field 'url'", "has no scheme")
    monkeypatch.setenv("ORDERS_DB_URL", "sqlite:///orders.db")
    assert loader()


@pytest.mark.parametrize(
    "url", ["user:s3cret@api.example.com/v1?token=t0ken", "https//user:s3cret@api.example.com/v1"]
)
def test_a_bad_url_message_keeps_credentials_and_query_out(tmp_path: Path, url: str) -> None:
    text = REST.format(param="{date}", extra="").replace("http://127.0.0.1:1", url)
    message = fails(tmp_path, text, "field 'base_url'", "has no scheme", "***@api.example.com/v1")
    assert "s3cret" not in message and "t0ken" not in message


def test_every_problem_of_a_source_is_reported_at_once(tmp_path: Path) -> None:
    text = REST.format(param="{day}", extra='    schedule: "daily"\n    mapping: {cost: price}\n')
    message = fails(
        tmp_path, text, "field 'params.day'", "field 'schedule'", "field 'mapping.cost'"
    )
    assert len(message.splitlines()) == 3
