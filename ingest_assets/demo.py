"""``make demo``: the whole pipeline for one day, offline, against the loopback sandbox.

Starts the sandbox API, points the REST sources at it, materializes every asset for the demo
partition into the embedded warehouse (runs recorded in ``DAGSTER_HOME`` so ``make dev``
shows them), prints a summary and stops the sandbox.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter

DEMO_PARTITION = "2024-06-01"
QUARANTINE_TABLE = "quarantine.records"


def _instance():
    import dagster as dg

    if os.environ.get("DAGSTER_HOME"):
        os.makedirs(os.environ["DAGSTER_HOME"], exist_ok=True)
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


def partition_problem(partition: str) -> str | None:
    """Why ``partition`` is not a day of the pipeline (with the valid range), or None."""
    from ingest_assets.assets.common import daily_partitions

    if daily_partitions.has_partition_key(partition):
        return None
    first = daily_partitions.get_first_partition_key()
    last = daily_partitions.get_last_partition_key()
    return (
        f"invalid partition {partition!r}: a day as YYYY-MM-DD from {first} to {last} "
        "(UTC; today's partition opens tomorrow)"
    )


def run(partition: str) -> int:
    from ingest_assets.sandbox import Sandbox

    with Sandbox(port=0) as sandbox:
        os.environ["DUMMYJSON_BASE_URL"] = sandbox.url
        os.environ["OPEN_METEO_BASE_URL"] = sandbox.url
        os.environ["GITHUB_API_URL"] = sandbox.url
        from ingest_assets.automation.jobs import PIPELINE_JOB
        from ingest_assets.definitions import build_definitions
        from ingest_assets.warehouse import warehouse_url
        from ingest_assets.warehouse.common import redact_url

        where = redact_url(warehouse_url())
        print(f"sandbox API on {sandbox.url}; warehouse {where}; partition {partition}")
        started = time.perf_counter()
        defs = build_definitions()
        with _instance() as instance:
            result = defs.resolve_job_def(PIPELINE_JOB).execute_in_process(
                partition_key=partition,
                instance=instance,
                raise_on_error=False,
                run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            )
        elapsed = time.perf_counter() - started
    checks = [
        (e.asset_key.to_user_string(), e.check_name, e.passed)
        for e in result.get_asset_check_evaluations()
    ]
    failures = [
        (e.step_key or "?", _first_line(e.step_failure_data.error))
        for e in result.get_step_failure_events()
    ]
    tables = stored_tables(defs)
    print_summary(partition, checks, elapsed, result.success, tables=tables, failures=failures)
    return 0 if result.success else 1


def stored_tables(defs) -> list[str]:
    """The tables the assets write: an asset stored in a shared table (``quarantine/<d>`` in
    ``quarantine.records``, ``metrics/ingestion_<d>`` in ``metrics.ingestion``) names it."""
    tables = set()
    for spec in defs.resolve_all_asset_specs():
        table = spec.metadata.get("table")
        tables.add(str(getattr(table, "value", table)) if table else ".".join(spec.key.path))
    return sorted(tables)


def _first_line(error) -> str:
    """The error's own message, first line (the full trace is in Dagster's log and UI)."""
    lines = ((error.message if error is not None else "") or "").strip().splitlines()
    if not lines:
        return "(no message)"
    qualified, sep, rest = lines[0].partition(": ")
    if sep and qualified.rsplit(".", 1)[-1] == error.cls_name:
        # dg.Failure is our own wording; other errors keep their short class name.
        return rest if error.cls_name == "Failure" else f"{error.cls_name}: {rest}"
    return lines[0]


def print_summary(
    partition: str,
    checks: list[tuple[str, str, bool]],
    elapsed: float,
    success: bool,
    tables: list[str] | None = None,
    failures: list[tuple[str, str]] | None = None,
) -> None:
    """Rows per table, checks and quarantined rows of one day; tables not written are named."""
    from ingest_assets.warehouse import warehouse_url
    from ingest_assets.warehouse.common import redact_url
    from ingest_assets.warehouse.inspect import partition_counts, quarantine_rows

    url = warehouse_url()
    counts = partition_counts(url, partition)
    print()
    outcome = "succeeded" if success else "FAILED"
    print(f"== ingest_assets demo, partition {partition}: {outcome} in {elapsed:.1f}s")
    if failures:
        print(f"\nFailed steps: {len(failures)}")
        for step, message in failures:
            print(f"  {step}: {message}")
    print(f"\nRows per table ({redact_url(url)}):")
    for table in sorted({*counts, *(tables or [])}):
        shown = counts.get(table, "missing (never materialized here)")
        print(f"  {table:<28} {shown:>7}")
    passed = sum(1 for *_, ok in checks if ok)
    print(f"\nChecks: {passed} passed, {len(checks) - passed} failed")
    for asset, name, ok in sorted(checks):
        print(f"  {'ok  ' if ok else 'FAIL'} {asset} · {name}")
    if QUARANTINE_TABLE not in counts:
        print(f"\nQuarantined rows: {QUARANTINE_TABLE} is missing (never materialized here)")
        return
    quarantined = quarantine_rows(url, partition)
    print(f"\nQuarantined rows: {len(quarantined)}")
    by_source: dict[str, Counter[str]] = {}
    for source, errors in quarantined:
        reasons = by_source.setdefault(source, Counter())
        for error in json.loads(errors):
            reasons[f"{error.get('column') or '(record)'}: {error['check']}"] += 1
    for source, reasons in sorted(by_source.items()):
        total = sum(1 for s, _ in quarantined if s == source)
        top = ", ".join(f"{reason} ×{n}" for reason, n in reasons.most_common(3))
        print(f"  {source:<20} {total:>4}  top reasons: {top}")
    print(
        "\nOpen the Dagster UI with `make dev` (http://127.0.0.1:3000) to see lineage, runs and checks."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ingest_assets.demo", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--partition", default=DEMO_PARTITION, help="the day to ingest (YYYY-MM-DD)"
    )
    args = parser.parse_args(argv)
    problem = partition_problem(args.partition)
    if problem:
        parser.exit(2, f"{parser.prog}: error: {problem}\n")
    return run(args.partition)


if __name__ == "__main__":
    sys.exit(main())
