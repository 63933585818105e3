"""``make bench``: every benchmark, each printing ratios against a baseline measured in the same run.

python benchmarks/run.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import bench_fetch, bench_postgres  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", type=int, default=1_000_000, help="rows for the PostgreSQL write benchmark"
    )
    args = parser.parse_args(argv)
    print("== concurrent fetching (sandbox on loopback)")
    bench_fetch.main([])
    print("\n== PostgreSQL IO manager writes")
    return bench_postgres.main(["--rows", str(args.rows)])


if __name__ == "__main__":
    sys.exit(main())
