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


def _instance():
    import dagster as dg

    if os.environ.get("DAGSTER_HOME"):
        os.makedirs(os.environ["DAGSTER_HOME"], exist_ok=True)
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


def run(partition: str) -> int:
    from ingest_assets.sandbox import Sandbox

    with Sandbox(port=0) as sandbox:
        os.environ["DUMMYJSON_BASE_URL"] = sandbox.url
        os.environ["OPEN_METEO_BASE_URL"] = sandbox.url
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
    print_summary(partition, checks, elapsed, result.success)
    return 0 if result.success else 1


def print_summary(
    partition: str, checks: list[tuple[str, str, bool]], elapsed: float, success: bool
) -> None:
    from ingest_assets.warehouse import warehouse_url
    from ingest_assets.warehouse.common import redact_url
    from ingest_assets.warehouse.inspect import partition_counts, quarantine_rows

    url = warehouse_url()
    counts = partition_counts(url, partition)
    print()
    print(
        f"== ingest_assets demo, partition {partition}: {'succeeded' if success else 'FAILED'} in {elapsed:.1f}s"
    )
    print(f"\nRows per table ({redact_url(url)}):")
    for table, rows in counts.items():
        print(f"  {table:<28} {rows:>7}")
    passed = sum(1 for *_, ok in checks if ok)
    print(f"\nChecks: {passed} passed, {len(checks) - passed} failed")
    for asset, name, ok in sorted(checks):
        print(f"  {'ok  ' if ok else 'FAIL'} {asset} · {name}")
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--partition", default=DEMO_PARTITION, help="the day to ingest (YYYY-MM-DD)"
    )
    args = parser.parse_args(argv)
    return run(args.partition)


if __name__ == "__main__":
    sys.exit(main())
