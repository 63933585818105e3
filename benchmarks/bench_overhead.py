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

from benchmarks.harness import (
    PARTITION,
    Result,
    announce,
    dagster_env,
    materialize_command,
    measure_process,
    ratio,
    sandbox_process,
    step_durations,
    workdir,
)

NAMES = ("pipeline_overhead",)


def compare(selected: set[str]) -> list[Result]:
    if "pipeline_overhead" not in selected:
        return []
    result = Result("pipeline_overhead", "s", "<= 5")
    try:
        with sandbox_process() as api, workdir("bench_overhead") as tmp:
            env = dagster_env(tmp, DUMMYJSON_BASE_URL=api, OPEN_METEO_BASE_URL=api)
            run = measure_process(materialize_command("*", PARTITION), env, cwd=tmp)
            steps = step_durations(env["DAGSTER_HOME"])
        inside = sum(steps.values())
        result.ours = round(run.seconds, 2)
        result.baseline = round(inside, 2)
        result.ratio = ratio(run.seconds, inside)
        result.detail = {"partition": PARTITION, "steps": steps}
    except Exception as exc:  # recorded; the other comparisons still run
        result.error = f"{type(exc).__name__}: {exc}"[:3000]
    return [announce(result)]
