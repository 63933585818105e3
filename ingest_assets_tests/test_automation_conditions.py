"""Every day follows its parents: late, corrected and replayed data, missing parents, no repeats.

A small stand-in graph (two raw parents, a cleaned child, a features grandchild) writes real rows
into a DuckDB file through real Dagster materializations; the ticks are evaluated with
``dg.evaluate_automation_conditions`` at fixed times, and what a tick requests is run, as the
automation sensor would. The tables then show whether each day is consistent with its parents.
"""

import datetime as dt
import threading
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from ingest_assets.assets.common import daily_partitions
from ingest_assets.automation.conditions import (
    GRACE_ENV,
    LOOKBACK_ENV,
    day_follows_parents,
    grace_days,
    lookback_days,
)
from ingest_assets_tests.conftest import QUIET

RAW = ("raw_api", "raw_file")
CLEANED = dg.AssetKey("cleaned")
FEATURES = dg.AssetKey("features")


def at(day: str, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime.fromisoformat(day).replace(hour=hour, minute=minute, tzinfo=dt.UTC)


class StandIn:
    """Two raw sources, a cleaned table of both and its features, in one DuckDB file.

    ``landed[(source, day)]`` is the version of a source's data for a day (a re-landed, corrected
    file is a new version); a raw partition whose data has not landed fails, as a missing file
    does. ``hold`` makes a raw materialization wait until released (a run in progress).
    """

    def __init__(self, db: Path, condition: dg.AutomationCondition) -> None:
        self.db = db
        self.landed: dict[tuple[str, str], int] = {}
        self.started = threading.Event()
        self.release = threading.Event()
        self.hold: str | None = None
        self.broken: set[str] = set()
        with duckdb.connect(str(db)) as con:
            for table in (*RAW, "cleaned", "features"):
                con.execute(f"CREATE TABLE {table} (day TEXT, source TEXT, version INT)")
        self.assets = [self._raw(name) for name in RAW] + self._derived(condition)
        self.defs = dg.Definitions(assets=self.assets)

    def _raw(self, name: str) -> dg.AssetsDefinition:
        @dg.asset(name=name, partitions_def=daily_partitions)
        def _asset(context: dg.AssetExecutionContext) -> None:
            day = context.partition_key
            if self.hold == name:
                self.started.set()
                self.release.wait()
            version = self.landed[(name, day)]
            self._replace(name, day, [(name, version)])

        return _asset

    def _derived(self, condition: dg.AutomationCondition) -> list[dg.AssetsDefinition]:
        @dg.asset(
            name="cleaned",
            deps=list(RAW),
            partitions_def=daily_partitions,
            automation_condition=condition,
        )
        def cleaned(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
            day = context.partition_key
            if "cleaned" in self.broken:
                raise RuntimeError("cleaned is broken")
            rows = [r for table in RAW for r in self._rows(table, day)]
            self._replace("cleaned", day, rows)
            present = {source for source, _ in rows}
            return dg.MaterializeResult(
                metadata={"missing_sources": ", ".join(s for s in RAW if s not in present)}
            )

        @dg.asset(
            name="features",
            deps=[cleaned],
            partitions_def=daily_partitions,
            automation_condition=condition,
        )
        def features(context: dg.AssetExecutionContext) -> None:
            day = context.partition_key
            self._replace("features", day, self._rows("cleaned", day))

        return [cleaned, features]

    def _rows(self, table: str, day: str) -> list[tuple[str, int]]:
        with duckdb.connect(str(self.db)) as con:
            return con.execute(
                f"SELECT source, version FROM {table} WHERE day = ? ORDER BY source", [day]
            ).fetchall()

    def _replace(self, table: str, day: str, rows: list[tuple[str, int]]) -> None:
        with duckdb.connect(str(self.db)) as con:
            con.execute(f"DELETE FROM {table} WHERE day = ?", [day])
            for source, version in rows:
                con.execute(f"INSERT INTO {table} VALUES (?, ?, ?)", [day, source, version])

    def table(self, table: str, day: str) -> list[tuple[str, int]]:
        return self._rows(table, day)

    def land(self, instance: dg.DagsterInstance, source: str, day: str, version: int = 1) -> None:
        """A file (or API data) arrives for a day and its raw asset runs, as a sensor starts it."""
        self.landed[(source, day)] = version
        self.materialize(instance, [source], day)

    def materialize(
        self, instance: dg.DagsterInstance, names: list[str], day: str, succeed: bool = True
    ) -> None:
        # Through the asset job, as the sensor, the UI and the CLI launch runs: the run then
        # records its asset selection, which tells a parent's update made by a run that also
        # materialized the child from one the child has not seen.
        result = self.defs.resolve_implicit_global_asset_job_def().execute_in_process(
            asset_selection=[dg.AssetKey(name) for name in names],
            partition_key=day,
            instance=instance,
            run_config=QUIET,
            raise_on_error=False,
        )
        assert result.success == succeed


class Ticks:
    """Successive evaluations of the automation conditions, carrying the cursor between them."""

    def __init__(self, world: StandIn, instance: dg.DagsterInstance) -> None:
        self.world = world
        self.instance = instance
        self.cursor = None

    def tick(self, when: dt.datetime) -> dict[str, set[str]]:
        result = dg.evaluate_automation_conditions(
            defs=self.world.defs, instance=self.instance, evaluation_time=when, cursor=self.cursor
        )
        self.cursor = result.cursor
        return {
            key.to_user_string(): set(result.get_requested_partitions(key))
            for key in (CLEANED, FEATURES)
            if result.get_num_requested(key)
        }

    def tick_and_run(self, when: dt.datetime) -> dict[str, set[str]]:
        """Evaluate, then run what was requested: one run per day, as the sensor launches them."""
        requested = self.tick(when)
        by_day: dict[str, list[str]] = defaultdict(list)
        for asset, days in requested.items():
            for day in days:
                by_day[day].append(asset)
        for day, assets in sorted(by_day.items()):
            self.world.materialize(self.instance, sorted(assets), day)
        return requested


@pytest.fixture
def world(tmp_path: Path) -> StandIn:
    return StandIn(tmp_path / "standin.duckdb", day_follows_parents(lookback=30, grace=1))


@pytest.fixture
def ticks(world: StandIn) -> Iterator[Ticks]:
    with dg.instance_for_test() as instance:
        ticks = Ticks(world, instance)
        assert ticks.tick(at("2024-06-02", 0, 5)) == {}
        yield ticks


BOTH = {"cleaned": {"2024-06-01"}, "features": {"2024-06-01"}}


def test_a_day_waits_for_a_missing_parent_until_overdue_then_takes_the_late_file(
    world: StandIn, ticks: Ticks
) -> None:
    instance = ticks.instance
    world.land(instance, "raw_api", "2024-06-01")
    # the partner file for 06-01 is missing and not overdue yet (grace: one more day)
    assert ticks.tick_and_run(at("2024-06-02", 1)) == {}
    assert ticks.tick_and_run(at("2024-06-02", 23, 59)) == {}
    assert world.table("cleaned", "2024-06-01") == []

    # 06-02 has ended: the missing file is overdue, the day runs with what it has, once
    assert ticks.tick_and_run(at("2024-06-03", 0, 1)) == BOTH
    assert world.table("features", "2024-06-01") == [("raw_api", 1)]
    meta = instance.get_latest_materialization_event(CLEANED).asset_materialization.metadata
    assert meta["missing_sources"].value == "raw_file"
    assert ticks.tick_and_run(at("2024-06-03", 0, 2)) == {}

    # the late file lands: the day runs again and now holds both sources
    world.land(instance, "raw_file", "2024-06-01")
    assert ticks.tick_and_run(at("2024-06-03", 9)) == BOTH
    assert world.table("features", "2024-06-01") == [("raw_api", 1), ("raw_file", 1)]
    assert ticks.tick_and_run(at("2024-06-03", 9, 1)) == {}
    assert ticks.tick_and_run(at("2024-06-04", 9)) == {}


def test_a_corrected_file_and_a_replay_flow_downstream_once(world: StandIn, ticks: Ticks) -> None:
    instance = ticks.instance
    for source in RAW:
        world.land(instance, source, "2024-06-01")
    assert ticks.tick_and_run(at("2024-06-02", 1)) == BOTH
    assert ticks.tick_and_run(at("2024-06-02", 2)) == {}

    # a corrected file for 06-01 lands days later, when 06-01 is no longer the latest day
    world.land(instance, "raw_file", "2024-06-01", version=2)
    assert ticks.tick_and_run(at("2024-06-05", 3)) == BOTH
    assert world.table("features", "2024-06-01") == [("raw_api", 1), ("raw_file", 2)]
    assert ticks.tick_and_run(at("2024-06-05", 4)) == {}

    # cleaned/ of the day is replayed on its own: only its downstream follows
    world.materialize(instance, ["cleaned"], "2024-06-01")
    assert ticks.tick_and_run(at("2024-06-05", 5)) == {"features": {"2024-06-01"}}
    assert ticks.tick_and_run(at("2024-06-05", 6)) == {}

    # a raw day re-fetched with the same data is an update too
    world.materialize(instance, ["raw_api"], "2024-06-01")
    assert ticks.tick_and_run(at("2024-06-05", 7)) == BOTH
    assert ticks.tick_and_run(at("2024-06-05", 8)) == {}


def test_a_run_of_the_whole_day_is_not_followed_by_a_second_one(
    world: StandIn, ticks: Ticks
) -> None:
    for source in RAW:
        world.landed[(source, "2024-06-01")] = 1
    world.materialize(ticks.instance, [*RAW, "cleaned", "features"], "2024-06-01")
    assert ticks.tick_and_run(at("2024-06-02", 1)) == {}
    assert ticks.tick_and_run(at("2024-06-03", 1)) == {}


def test_a_day_that_failed_in_a_run_of_the_whole_day_is_requested_again(
    world: StandIn, ticks: Ticks
) -> None:
    for source in RAW:
        world.landed[(source, "2024-06-01")] = 1
    world.broken = {"cleaned"}
    world.materialize(ticks.instance, [*RAW, "cleaned", "features"], "2024-06-01", succeed=False)
    world.broken = set()
    assert ticks.tick_and_run(at("2024-06-02", 1)) == BOTH
    assert world.table("features", "2024-06-01") == [("raw_api", 1), ("raw_file", 1)]
    assert ticks.tick_and_run(at("2024-06-02", 2)) == {}


def test_a_day_waits_while_a_parent_is_in_progress(world: StandIn, ticks: Ticks) -> None:
    instance = ticks.instance
    for source in RAW:
        world.land(instance, source, "2024-06-01")
    assert ticks.tick_and_run(at("2024-06-02", 1)) == BOTH

    # the corrected file's run is in progress while the API's data for the day is refreshed
    world.landed[("raw_file", "2024-06-01")] = 2
    world.hold = "raw_file"
    held = threading.Thread(target=world.materialize, args=(instance, ["raw_file"], "2024-06-01"))
    held.start()
    try:
        assert world.started.wait(60)
        world.land(instance, "raw_api", "2024-06-01", version=2)
        assert ticks.tick_and_run(at("2024-06-02", 2)) == {}
    finally:
        world.release.set()
        held.join()
    # both updates are taken in one run, once the parent has finished
    assert ticks.tick_and_run(at("2024-06-02", 3)) == BOTH
    assert world.table("features", "2024-06-01") == [("raw_api", 2), ("raw_file", 2)]
    assert ticks.tick_and_run(at("2024-06-02", 4)) == {}


def test_days_older_than_the_lookback_window_are_left_to_backfills(
    world: StandIn, ticks: Ticks
) -> None:
    instance = ticks.instance
    for source in RAW:
        world.land(instance, source, "2024-05-01")  # 32 days before the latest day, 06-01
        world.land(instance, source, "2024-05-05")  # 28 days before
    assert ticks.tick_and_run(at("2024-06-02", 1)) == {
        "cleaned": {"2024-05-05"},
        "features": {"2024-05-05"},
    }
    assert world.table("cleaned", "2024-05-01") == []


def test_the_windows_are_configured_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LOOKBACK_ENV, raising=False)
    monkeypatch.delenv(GRACE_ENV, raising=False)
    assert (lookback_days(), grace_days()) == (30, 1)
    monkeypatch.setenv(LOOKBACK_ENV, "90")
    monkeypatch.setenv(GRACE_ENV, "0")
    assert (lookback_days(), grace_days()) == (90, 0)
    label = str(day_follows_parents())
    assert "90" in label and "missing" not in label
    monkeypatch.setenv(LOOKBACK_ENV, "0")
    with pytest.raises(ValueError, match=LOOKBACK_ENV):
        lookback_days()
    monkeypatch.setenv(GRACE_ENV, "two")
    with pytest.raises(ValueError, match=GRACE_ENV):
        grace_days()
