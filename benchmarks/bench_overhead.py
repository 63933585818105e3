"""Orchestration overhead: the demo's day through ``dagster asset materialize`` against its steps.

``pipeline_overhead``: every asset of the demo (the shipped sources: the sandbox's DummyJSON
catalogue and weather, the sample partner CSV and supplier XML; embedded DuckDB warehouse) for
the demo partition, as CI runs it: the wall time of the ``dagster asset materialize`` process.
Baseline: the same steps without the orchestration around them, i.e. the time the run spent
inside its steps (each asset's and each check's own work, loading and storing its tables),
read from the run's own event log. Direct calls of the asset functions cannot stand in for it:
the assets read their run's id and instance, which only a run provides. The ratio is what
Dagster's process start, definitions load, planning and event storage cost on a small day.
"""

from __future__ import annotations

import dagster as dg

from benchmarks.harness import (
    PARTITION,
    Result,
    dagster_env,
    materialize_command,
    measure_process,
    ratio,
    sandbox_process,
    workdir,
)


def step_seconds(dagster_home: str) -> tuple[float, int]:
    """The summed duration of every successful step of the one run in ``dagster_home``."""
    with dg.DagsterInstance.from_config(dagster_home) as instance:
        runs = instance.get_runs()
        if len(runs) != 1 or runs[0].status != dg.DagsterRunStatus.SUCCESS:
            raise RuntimeError(f"expected one successful run, found {[r.status for r in runs]}")
        events = instance.all_logs(runs[0].run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
        durations = [e.dagster_event.event_specific_data.duration_ms for e in events]
    return sum(durations) / 1000, len(durations)


def compare(selected: set[str]) -> list[Result]:
    if "pipeline_overhead" not in selected:
        return []
    result = Result("pipeline_overhead", "s", "<= 5")
    try:
        with sandbox_process() as api, workdir("bench_overhead") as tmp:
            env = dagster_env(tmp, DUMMYJSON_BASE_URL=api, OPEN_METEO_BASE_URL=api)
            run = measure_process(materialize_command("*", PARTITION), env, cwd=tmp)
            steps, count = step_seconds(env["DAGSTER_HOME"])
        result.ours = round(run.seconds, 2)
        result.baseline = round(steps, 2)
        result.ratio = ratio(run.seconds, steps)
        result.detail = {"steps": count, "partition": PARTITION}
    except Exception as exc:  # recorded; the other comparisons still run
        result.error = f"{type(exc).__name__}: {exc}"[:3000]
    return [result]
