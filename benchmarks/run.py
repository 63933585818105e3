"""``make bench``: every comparison of the record-path issue, side by side in one run.

    python benchmarks/run.py [--only name,name] [--out .ingest/bench.json]

Sizes: ``BENCH_RECORDS`` (default 1,000,000 generated products) or ``BENCH_SCALE`` (a fraction
of every full size, e.g. 0.01 while developing). Needs PostgreSQL (``INGEST_TEST_PG_URL``,
default ``postgresql://postgres@127.0.0.1:5432/postgres``, a role that may create databases),
``psql`` and ``/usr/bin/time``; the peers come from the ``bench`` extra (``pip install
-e '.[bench]'``). Prints a table and writes ``{"name": {"ours", "baseline", "ratio", "unit",
...}}`` to ``.ingest/bench.json``; a comparison that fails is reported with its error and the
others still run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from benchmarks import bench_e2e, bench_fetch, bench_overhead, bench_postgres  # noqa: E402
from benchmarks.harness import REPO, Result, scale  # noqa: E402

MODULES = (bench_e2e, bench_postgres, bench_fetch, bench_overhead)
ORDER = (
    "e2e_vs_dlt_dicts",
    "e2e_vs_dlt_arrow",
    "processing_vs_pandas",
    "raw_memory_growth",
    "pipeline_peak_rss_gib",
    "load_vs_psql_copy",
    "replace_vs_psql_copy",
    "load_vs_to_sql",
    "fetch_vs_threads",
    "pipeline_overhead",
)


def _number(value: float | None) -> str:
    if value is None:
        return "—"
    if math.isinf(value):
        return "inf"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def table(results: list[Result]) -> str:
    """The results as a fixed-width table; errors listed under it."""
    header = ("comparison", "ours", "baseline", "unit", "ratio", "target", "")
    rows = [header]
    for r in results:
        verdict = {True: "ok", False: "MISSED", None: "ERROR" if r.error else "—"}[r.met]
        rows.append(
            (
                r.name,
                _number(r.ours),
                _number(r.baseline),
                r.unit,
                _number(r.ratio),
                r.target,
                verdict,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            cell.ljust(w) if i in (0, 3, 5, 6) else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    for r in results:
        if r.error:
            lines.append(f"\n{r.name}: {r.error.strip().splitlines()[-1][:400]}")
    return "\n".join(lines)


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", default=os.environ.get("BENCH_ONLY", ""), help="names, comma-separated"
    )
    parser.add_argument(
        "--out",
        default=str(Path(os.environ.get("INGEST_HOME") or REPO / ".ingest") / "bench.json"),
        help="where the JSON goes",
    )
    args = parser.parse_args(argv)
    selected = {n.strip() for n in args.only.split(",") if n.strip()} or set(ORDER)
    unknown = selected - set(ORDER)
    if unknown:
        parser.error(
            f"unknown comparison(s): {', '.join(sorted(unknown))}; known: {', '.join(ORDER)}"
        )

    print(
        f"ingest_assets bench: scale {scale():g} (BENCH_RECORDS={round(scale() * 1_000_000):,}), "
        f"commit {commit()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        flush=True,
    )
    started = time.perf_counter()
    results: list[Result] = []
    for module in MODULES:
        names = [n for n in module.NAMES if n in selected]
        if names:
            print(f"{module.__name__.rsplit('.', 1)[-1]}: {', '.join(names)}", flush=True)
            results += module.compare(selected)
    results.sort(key=lambda r: ORDER.index(r.name))

    print()
    print(table(results))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({r.name: r.as_json() for r in results}, indent=2) + "\n")
    print(
        f"\nwrote {out} ({len(results)} comparisons, {time.perf_counter() - started:.0f}s, "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC)"
    )
    # A missed target is a finding, not a failure; a comparison that could not run is.
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
