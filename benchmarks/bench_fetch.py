"""Fetching: records/s into the raw stage against stdlib threads, on a high-latency API.

``fetch_vs_threads``: 200 pages × 500 generated products from the sandbox answering each request
after 50 ms. Ours: ``raw/<source>`` materialized in a warm process (the REST connector with its
``max_concurrency`` at 64, rate limit lifted; records parsed and stored in the raw table of an
embedded DuckDB warehouse). Baseline: ``urllib`` with 64 threads and ``json.loads``, records
only counted, nothing stored: the floor a hand-written fetch reaches.
"""

from __future__ import annotations

from benchmarks.harness import (
    PARTITION,
    Result,
    announce,
    base_env,
    measure_process,
    products_source,
    ratio,
    sandbox_process,
    scale,
    workdir,
    worker_command,
    write_sources,
)

PAGES = 200
PAGE_SIZE = 500
LATENCY_S = 0.05
THREADS = 64
SOURCE = "fetch_products"
NAMES = ("fetch_vs_threads",)


def compare(selected: set[str]) -> list[Result]:
    if "fetch_vs_threads" not in selected:
        return []
    result = Result("fetch_vs_threads", "records/s", ">= 0.9")
    pages = max(10, min(PAGES, round(PAGES * scale() * 10)))
    records = pages * PAGE_SIZE
    try:
        with sandbox_process(records, latency_s=LATENCY_S) as api, workdir("bench_fetch") as tmp:
            config = products_source(api, PAGE_SIZE, name=SOURCE, max_concurrency=THREADS)
            sources = write_sources(tmp, config)
            env = base_env(INGEST_HOME=str(tmp), INGEST_SOURCES_FILE=str(sources))
            ours = measure_process(
                worker_command(
                    "raw_stage",
                    sources_file=str(sources),
                    warehouse_url=f"duckdb:///{tmp / 'warehouse.duckdb'}",
                    source=SOURCE,
                    partition=PARTITION,
                ),
                env,
                cwd=tmp,
            ).last_json
            theirs = measure_process(
                worker_command(
                    "threads_fetch", base_url=api, pages=pages, page_size=PAGE_SIZE, threads=THREADS
                ),
                base_env(),
                cwd=tmp,
            ).last_json
        for side, got in (("ours", ours), ("baseline", theirs)):
            if got["records"] != records:
                raise RuntimeError(f"{side} fetched {got['records']} of {records} records")
        result.ours = round(records / ours["seconds"], 1)
        result.baseline = round(records / theirs["seconds"], 1)
        result.ratio = ratio(result.ours, result.baseline)
        result.detail = {
            "pages": pages,
            "page_size": PAGE_SIZE,
            "latency_s": LATENCY_S,
            "ours_s": round(ours["seconds"], 2),
            "baseline_s": round(theirs["seconds"], 2),
        }
    except Exception as exc:  # recorded; the other comparisons still run
        result.error = f"{type(exc).__name__}: {exc}"[:3000]
    return [announce(result)]
