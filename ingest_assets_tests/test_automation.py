"""Schedules, landing sensors, alerts and executor selection."""

import datetime as dt
import json
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest

from ingest_assets.automation.alerts import send_alert
from ingest_assets.automation.schedules import previous_day
from ingest_assets.config import DEFAULT_LANDING_DIR
from ingest_assets.definitions import build_definitions
from ingest_assets.executors import build_executor, executor_name
from ingest_assets_tests.conftest import QUIET


class _Webhook(BaseHTTPRequestHandler):
    received: list[dict] = []
    status = 200

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(type(self).status)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_Webhook]]:
    _Webhook.received = []
    _Webhook.status = 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv(
        "INGEST_ALERT_WEBHOOK_URL",
        f"http://127.0.0.1:{server.server_address[1]}/hook?token=sekrit-token",
    )
    yield _Webhook
    server.shutdown()


def test_schedules_fetch_the_previous_utc_day() -> None:
    assert previous_day(dt.datetime(2024, 6, 2, 0, 15, tzinfo=dt.UTC)) == "2024-06-01"
    defs = build_definitions()
    schedule = defs.resolve_schedule_def("dummyjson_products_daily")
    when = dt.datetime(2024, 6, 2, 0, 15, tzinfo=dt.UTC)
    with dg.build_schedule_context(
        scheduled_execution_time=when, repository_def=defs.get_repository_def()
    ) as context:
        request = schedule.evaluate_tick(context).run_requests[0]
    assert request.partition_key == "2024-06-01"
    assert schedule.job_name == "ingest_dummyjson_products"
    assert {s.name for s in defs.schedules} == {
        "dummyjson_products_daily",
        "open_meteo_weather_daily",
        "archive_retention_daily",
    }
    # No source keeps a limited archive in the shipped file: the retention schedule is off.
    retention = next(s for s in defs.schedules if s.name == "archive_retention_daily")
    assert retention.default_status == dg.DefaultScheduleStatus.STOPPED


def test_landing_sensor_requests_a_run_per_landed_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    landing = tmp_path / "landing"
    shutil.copytree(DEFAULT_LANDING_DIR, landing)
    (landing / "partner_feed" / "notes.txt").write_text("not a feed")
    today = dt.datetime.now(dt.UTC).date().isoformat()
    for early_or_open in (today, "2023-12-31"):
        shutil.copy(
            landing / "partner_feed" / "2024-06-01.csv",
            landing / "partner_feed" / f"{early_or_open}.csv",
        )
    monkeypatch.setenv("INGEST_LANDING_DIR", str(landing))
    defs = build_definitions()
    sensor = defs.resolve_sensor_def("partner_feed_landing")
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, definitions=defs)
        first = sensor.evaluate_tick(context).run_requests
        assert sorted(r.partition_key for r in first) == ["2024-06-01", "2024-06-02"]
        assert {r.job_name for r in first} <= {None, "ingest_partner_feed"}
        # the same files give the same run keys (Dagster drops repeats); a changed file a new one
        again = sensor.evaluate_tick(context).run_requests
        assert [r.run_key for r in again] == [r.run_key for r in first]
        changed = landing / "partner_feed" / "2024-06-02.csv"
        changed.write_text(changed.read_text() + "PRT-0999,New,tools,Acme,1.0,0,4,1\n")
        os.utime(changed, ns=(1, 2_000_000_000_000_000_000))
        third = {r.partition_key: r.run_key for r in sensor.evaluate_tick(context).run_requests}
        assert third["2024-06-02"] != {r.partition_key: r.run_key for r in first}["2024-06-02"]


def test_alerts_are_posted_without_leaking_the_webhook_token(
    webhook: type[_Webhook], caplog: pytest.LogCaptureFixture
) -> None:
    log = logging.getLogger("alerts-test")
    with caplog.at_level(logging.INFO):
        assert send_alert({"kind": "run_failure", "summary": "run 1 failed"}, log)
    assert webhook.received == [{"kind": "run_failure", "summary": "run 1 failed"}]
    webhook.status = 500
    with caplog.at_level(logging.INFO):
        assert not send_alert({"kind": "check_failure", "summary": "x"}, log)
    assert "HTTP 500" in caplog.text and "sekrit-token" not in caplog.text


def test_without_a_webhook_alerts_are_only_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("INGEST_ALERT_WEBHOOK_URL", raising=False)
    with caplog.at_level(logging.WARNING):
        assert not send_alert(
            {"kind": "run_failure", "summary": "boom"}, logging.getLogger("alerts-test")
        )
    assert "alert: run_failure: boom" in caplog.text


def test_failed_checks_are_alerted(webhook: type[_Webhook], ingest_env: Path) -> None:
    @dg.asset(key=["cleaned", "demo"])
    def demo() -> int:
        return 1

    @dg.asset_check(asset=demo)
    def always_fails() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=False, metadata={"failures": 3})

    @dg.asset_check(asset=demo)
    def always_passes() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=True)

    from ingest_assets.automation.alerts import alert_on_check_failure

    defs = dg.Definitions(
        assets=[demo],
        asset_checks=[always_fails, always_passes],
        resources={"io_manager": dg.mem_io_manager},
    )
    with dg.instance_for_test() as instance:
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, run_config=QUIET
        )
        success = [e for e in result.all_events if e.event_type_value == "PIPELINE_SUCCESS"][0]
        context = dg.build_run_status_sensor_context(
            sensor_name="alert_on_check_failure",
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            dagster_event=success,
        )
        alert_on_check_failure(context)
    assert [(a["kind"], a["check"]) for a in webhook.received] == [
        ("check_failure", "always_fails")
    ]
    assert (
        webhook.received[0]["asset"] == "cleaned/demo"
        and webhook.received[0]["run_id"] == result.run_id
    )
    assert webhook.received[0]["metadata"] == {"failures": "3"}


def test_executor_follows_the_warehouse_and_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INGEST_EXECUTOR", raising=False)
    monkeypatch.setenv("INGEST_WAREHOUSE_URL", "duckdb:///w.duckdb")
    assert executor_name() == "in_process"
    monkeypatch.setenv("INGEST_WAREHOUSE_URL", "postgresql://u@127.0.0.1:5432/d")
    assert executor_name() == "multiprocess"
    monkeypatch.setenv("INGEST_EXECUTOR", "celery")
    assert build_executor().name == "celery"
    monkeypatch.setenv("INGEST_EXECUTOR", "threads")
    with pytest.raises(ValueError, match="INGEST_EXECUTOR must be one of"):
        executor_name()


def test_downstream_assets_follow_their_parents_automatically() -> None:
    defs = build_definitions()
    sensor = defs.resolve_sensor_def("ingest_automation")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        condition = graph.get(key).automation_condition
        if key.path[0] == "raw":
            assert condition is None, key
        else:
            assert condition is not None and condition.get_label() == "day_follows_parents", key


def test_a_fetched_day_pulls_its_downstream_once_every_parent_is_there(ingest_env: Path) -> None:
    defs = build_definitions()
    latest = defs.resolve_assets_def(
        dg.AssetKey(["raw", "open_meteo_weather"])
    ).partitions_def.get_last_partition_key()
    with dg.instance_for_test() as instance:
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert result.total_requested == 0
        for source in ("open_meteo_weather", "dummyjson_products"):
            job = defs.resolve_job_def(f"ingest_{source}")
            assert job.execute_in_process(
                partition_key=latest, instance=instance, run_config=QUIET
            ).success
        result = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=result.cursor
        )
        requested = {r.key.to_user_string() for r in result.results if r.true_subset.size}
    # weather has every parent for the day; products still waits for the partner and supplier files
    assert "cleaned/weather" in requested
    assert "cleaned/products" not in requested and "quarantine/products" not in requested
    assert result.get_num_requested(dg.AssetKey(["cleaned", "weather"])) == 1


def _land(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DEFAULT_LANDING_DIR / "partner_feed" / "2024-06-01.csv", path)


def _partner_sensor_requests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, template: str
) -> dict[str, str]:
    """The landing sensor's requests (partition → landing_file tag) with the partner feed's
    path template replaced."""
    shipped = (DEFAULT_LANDING_DIR.parent / "sources.yaml").read_text()
    default = '"{landing_dir}/partner_feed/{date}.csv"'
    assert default in shipped
    sources = tmp_path / "sources.yaml"
    sources.write_text(shipped.replace(default, f'"{template}"'))
    monkeypatch.setenv("INGEST_SOURCES_FILE", str(sources))
    monkeypatch.setenv("INGEST_LANDING_DIR", str(tmp_path / "landing"))
    defs = build_definitions()
    sensor = defs.resolve_sensor_def("partner_feed_landing")
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, definitions=defs)
        requests = sensor.evaluate_tick(context).run_requests
    keys = [r.partition_key for r in requests]
    assert len(keys) == len(set(keys)), f"a day requested twice: {keys}"
    assert len({r.run_key for r in requests}) == len(requests)
    return {r.partition_key: r.tags["landing_file"] for r in requests}


def test_landing_files_match_the_template_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _land(
        tmp_path / "landing" / "partner_feed",
        "2024-06-01.csv",
        "2024-06-02.csv",
        "2024-06-01 (copy).csv",
        "old-2024-05-30.csv",
        "2024-05-29.csv.bak",
        "2024-02-30.csv",
        "nested/2024-05-28.csv",
    )
    found = _partner_sensor_requests(tmp_path, monkeypatch, "{landing_dir}/partner_feed/{date}.csv")
    assert found == {"2024-06-01": "2024-06-01.csv", "2024-06-02": "2024-06-02.csv"}


def test_landing_files_with_the_day_in_a_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _land(
        tmp_path / "landing" / "dated",
        "2024-06-01/feed.csv",
        "2024-06-02/feed.csv",
        "2024-06-01/feed (copy).csv",
        "old-2024-05-30/feed.csv",
        "2024-05-29/sub/feed.csv",
    )
    # the same file size and time for every day: the day keeps their run keys apart
    for path in (tmp_path / "landing").rglob("*.csv"):
        os.utime(path, ns=(1, 1_700_000_000_000_000_000))
    found = _partner_sensor_requests(tmp_path, monkeypatch, "{landing_dir}/dated/{date}/feed.csv")
    assert found == {"2024-06-01": "2024-06-01/feed.csv", "2024-06-02": "2024-06-02/feed.csv"}


def test_a_schedule_tick_before_the_first_partition_skips_with_a_reason() -> None:
    defs = build_definitions()
    schedule = defs.resolve_schedule_def("dummyjson_products_daily")
    for when, expected in (
        (dt.datetime(2024, 1, 1, 0, 15, tzinfo=dt.UTC), None),
        (dt.datetime(2024, 1, 2, 0, 15, tzinfo=dt.UTC), "2024-01-01"),
    ):
        with dg.build_schedule_context(
            scheduled_execution_time=when, repository_def=defs.get_repository_def()
        ) as context:
            data = schedule.evaluate_tick(context)
        if expected is None:
            assert data.run_requests == []
            assert "2023-12-31 is before the first partition" in data.skip_message
        else:
            assert [r.partition_key for r in data.run_requests] == [expected]
