"""The record path at scale: a generated day of products from the sandbox API into PostgreSQL.

One sandbox (``BENCH_RECORDS`` generated products, 1000 per page) and one throw-away database
serve every comparison here, side by side in one run:

- ``e2e_vs_dlt_dicts`` / ``e2e_vs_dlt_arrow``: every asset of the pipeline for the day through
  ``dagster asset materialize`` against dlt loading the same API into the same server;
- ``pipeline_peak_rss_gib``: the largest process of that run (``/usr/bin/time -v``);
- ``processing_vs_pandas``: every asset after raw, from the raw partition the run left, against
  the same steps as bare vectorised pandas;
- ``raw_memory_growth``: peak RSS of ``raw/<source>`` alone at the full size and at a tenth.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from benchmarks.harness import (
    FULL_RECORDS,
    GIB,
    MIB,
    PARTITION,
    Measured,
    Result,
    announce,
    base_env,
    dagster_env,
    materialize_command,
    measure_process,
    products_source,
    ratio,
    sandbox_process,
    scalar,
    scaled,
    step_durations,
    temp_database,
    workdir,
    worker_command,
    write_sources,
)

SOURCE = "dummyjson_products"
PAGE_SIZE = 1000
NAMES = (
    "e2e_vs_dlt_dicts",
    "e2e_vs_dlt_arrow",
    "processing_vs_pandas",
    "raw_memory_growth",
    "pipeline_peak_rss_gib",
)


def _guard(result: Result, fn: Callable[[], None]) -> Result:
    try:
        fn()
    except Exception as exc:  # one comparison failing must not stop the others
        result.error = f"{type(exc).__name__}: {exc}"[:3000]
    return result


def _cleaned_rows(url: str) -> int:
    return scalar(url, "SELECT count(*) FROM cleaned.products WHERE partition_date = %s", PARTITION)


def compare(selected: set[str]) -> list[Result]:
    """Every comparison of this module that is in ``selected``."""
    wanted = [n for n in NAMES if n in selected]
    if not wanted:
        return []
    records = scaled(FULL_RECORDS, 1000)
    results = {
        "e2e_vs_dlt_dicts": Result("e2e_vs_dlt_dicts", "records/s", ">= 10"),
        "e2e_vs_dlt_arrow": Result("e2e_vs_dlt_arrow", "records/s", ">= 1"),
        "processing_vs_pandas": Result("processing_vs_pandas", "s", "<= 1.5"),
        "raw_memory_growth": Result("raw_memory_growth", "MiB", "<= 1.3"),
        "pipeline_peak_rss_gib": Result("pipeline_peak_rss_gib", "GiB", "<= 1"),
    }
    with (
        sandbox_process(records) as api,
        workdir("bench_e2e") as tmp,
        temp_database() as db,
    ):
        sources = write_sources(tmp, products_source(api, PAGE_SIZE))
        run: list[Measured | Exception] = []

        def pipeline() -> Measured:
            """Our e2e run, once: its time, peak and stored raw partition serve three rows."""
            if not run:
                env = dagster_env(
                    tmp / "ours", INGEST_WAREHOUSE_URL=db, INGEST_SOURCES_FILE=str(sources)
                )
                try:
                    measured = measure_process(materialize_command("*"), env, cwd=tmp)
                    loaded = _cleaned_rows(db)
                    if loaded != records:
                        raise RuntimeError(f"cleaned.products has {loaded} of {records} rows")
                    run.append(measured)
                except Exception as exc:
                    run.append(exc)
            if isinstance(run[0], Exception):
                raise run[0]
            return run[0]

        steps: dict[str, Callable[[Result], None]] = {
            "e2e_vs_dlt_dicts": lambda r: _e2e(r, pipeline, "dlt_dicts", api, db, tmp, records),
            "e2e_vs_dlt_arrow": lambda r: _e2e(r, pipeline, "dlt_arrow", api, db, tmp, records),
            "processing_vs_pandas": lambda r: _processing(r, pipeline, db, sources, records),
            "raw_memory_growth": lambda r: _raw_memory(r, tmp, records),
            "pipeline_peak_rss_gib": lambda r: _peak(r, pipeline, records),
        }
        for name in wanted:
            announce(_guard(results[name], lambda name=name: steps[name](results[name])))
    return [results[n] for n in wanted]


def _e2e(
    result: Result,
    pipeline: Callable[[], Measured],
    peer: str,
    api: str,
    db: str,
    tmp: Path,
    records: int,
) -> None:
    """records/s of every asset through Dagster against dlt's raw load of the same API."""
    ours = pipeline()
    folder = tmp / peer
    folder.mkdir(exist_ok=True)
    env = base_env(DLT_DATA_DIR=str(folder), RUNTIME__DLTHUB_TELEMETRY="false")
    command = worker_command(peer, base_url=api, url=db, workdir=str(folder), page_size=PAGE_SIZE)
    theirs = measure_process(command, env, cwd=folder)
    rows = theirs.last_json["rows"]
    if rows != records:
        raise RuntimeError(f"{peer} loaded {rows} of {records} records")
    result.ours = round(records / ours.seconds, 1)
    result.baseline = round(records / theirs.seconds, 1)
    result.ratio = ratio(result.ours, result.baseline)
    result.detail = {
        "records": records,
        "ours_s": round(ours.seconds, 2),
        "baseline_s": round(theirs.seconds, 2),
        "ours_peak_rss_mib": _mib(ours.max_rss_bytes),
        "ours_steps": step_durations(tmp / "ours" / "dagster_home"),
        "baseline_peak_rss_mib": _mib(theirs.max_rss_bytes),
        "ours": "dagster asset materialize --select '*' (raw → cleaned, quarantine, features, "
        "metrics, checks) into PostgreSQL",
        "baseline": f"{peer}: raw records only, into the same PostgreSQL server",
    }


def _peak(result: Result, pipeline: Callable[[], Measured], records: int) -> None:
    run = pipeline()
    if run.max_rss_bytes is None:
        raise RuntimeError("no peak RSS: /usr/bin/time is missing")
    result.ours = round(run.max_rss_bytes / GIB, 3)
    result.baseline = 2.0
    result.ratio = ratio(result.ours, result.baseline)
    result.detail = {"records": records, "of": "the largest process of the e2e run"}


def _processing(
    result: Result, pipeline: Callable[[], Measured], db: str, sources: Path, records: int
) -> None:
    """Every asset after raw (with checks) from the stored raw partition, against pandas."""
    pipeline()  # leaves the raw partition in the database
    env = base_env(INGEST_WAREHOUSE_URL=db, INGEST_SOURCES_FILE=str(sources))
    ours = measure_process(
        worker_command(
            "downstream", sources_file=str(sources), warehouse_url=db, partition=PARTITION
        ),
        env,
        cwd=sources.parent,
    ).last_json
    theirs = measure_process(
        worker_command("pandas_processing", url=db, table=f"raw.{SOURCE}", partition=PARTITION),
        base_env(),
        cwd=sources.parent,
    ).last_json
    if theirs["raw"] != records:
        raise RuntimeError(f"pandas read {theirs['raw']} of {records} raw rows")
    result.ours = round(ours["seconds"], 2)
    result.baseline = round(theirs["seconds"], 2)
    result.ratio = ratio(result.ours, result.baseline)
    result.detail = {
        "records": records,
        "ours_steps": ours.get("steps"),
        "checks": ours.get("checks"),
    }


def _raw_memory(result: Result, tmp: Path, records: int) -> None:
    """Peak RSS of ``raw/<source>`` alone at the full size and at a tenth of it."""
    tenth = max(100, records // 10)
    peaks: dict[int, int] = {}
    seconds: dict[int, float] = {}
    for size in (tenth, records):
        with sandbox_process(size) as small_api, temp_database() as db:
            folder = tmp / f"raw_{size}"
            folder.mkdir(exist_ok=True)
            sources = write_sources(folder, products_source(small_api, PAGE_SIZE))
            env = dagster_env(folder, INGEST_WAREHOUSE_URL=db, INGEST_SOURCES_FILE=str(sources))
            run = measure_process(materialize_command(f"raw/{SOURCE}"), env, cwd=folder)
            if run.max_rss_bytes is None:
                raise RuntimeError("no peak RSS: /usr/bin/time is missing")
            peaks[size] = run.max_rss_bytes
            seconds[size] = round(run.seconds, 2)
    result.ours = _mib(peaks[records])
    result.baseline = _mib(peaks[tenth])
    result.ratio = ratio(peaks[records], peaks[tenth])
    result.detail = {"records": records, "baseline_records": tenth, "seconds": seconds}


def _mib(value: int | None) -> float | None:
    return None if value is None else round(value / MIB, 1)
