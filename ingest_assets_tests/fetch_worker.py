"""A fetch in a process of its own, for tests of what crosses processes (checkpoints, rate budget).

    python -m ingest_assets_tests.fetch_worker SOURCE_JSON DAY [--home H] [--stop-after N] [--out F]

Prints ``page`` for every batch it receives. With ``--home`` the fetch resumes from (and keeps)
the page checkpoints of that INGEST_HOME. With ``--stop-after N`` it stops dead after the N-th
page, holding everything, until it is killed: a try killed in the middle, at a known point.
``--out`` gets the fetched records as JSON. With ``--wait`` it prints ``ready`` and starts
fetching on a line from stdin.
"""

import argparse
import datetime as dt
import json
import sys
import threading

from ingest_assets.config import SourceConfig
from ingest_assets.connectors import FetchContext, collect, get_connector_class
from ingest_assets.connectors.checkpoint import PageCheckpoint


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("source_json")
    parser.add_argument("day")
    parser.add_argument("--home")
    parser.add_argument("--stop-after", type=int, default=0)
    parser.add_argument("--out")
    parser.add_argument("--wait", action="store_true", help="start on a line from stdin")
    args = parser.parse_args()

    source = SourceConfig.model_validate(json.loads(args.source_json))
    day = dt.date.fromisoformat(args.day)
    pages = 0

    def progress(_: str) -> None:
        nonlocal pages
        pages += 1
        print("page", flush=True)
        if pages == args.stop_after:
            # Blocks the event loop: no further response is read or stored until the kill.
            threading.Event().wait()

    checkpoint = PageCheckpoint.for_fetch(args.home, source.name, day) if args.home else None
    ctx = FetchContext(partition_date=day, on_progress=progress, checkpoint=checkpoint)
    if args.wait:
        # Imports done: several workers started together begin fetching at the same moment.
        print("ready", flush=True)
        sys.stdin.readline()
    batches = collect(get_connector_class(source.connector)(source), ctx)
    if args.out:
        with open(args.out, "w") as out:
            json.dump([r for b in batches for r in b], out)
    print("done", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
