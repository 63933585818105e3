"""Run the sandbox until SIGINT/SIGTERM: ``python -m ingest_assets.sandbox --port 8765``.

The port defaults to ``$INGEST_SANDBOX_PORT``, else 8765.

Prints ``sandbox listening on http://HOST:PORT`` (flushed) once it accepts connections.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from ingest_assets.sandbox.server import Faults, Sandbox


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog="python -m ingest_assets.sandbox",
        description="Serve the DummyJSON / Open-Meteo sandbox API on loopback.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("INGEST_SANDBOX_PORT") or 8765),
        help="port; 0 picks a free one (default: $INGEST_SANDBOX_PORT, else 8765)",
    )
    parser.add_argument("--error-rate", type=float, default=0.0, help="fraction answered 500/503")
    parser.add_argument("--fail-first", type=int, default=0, help="first N per path answered 503")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to each answer")
    parser.add_argument(
        "--rate-limit-per-s", type=float, default=0.0, help="token-bucket rate; 0 = off"
    )
    parser.add_argument(
        "--rate-limit-every", type=int, default=0, help="every Nth request gets 429; 0 = off"
    )
    parser.add_argument(
        "--malformed-rate", type=float, default=0.0, help="fraction answered with truncated JSON"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random faults")
    parser.add_argument(
        "--generated", type=int, default=None, help="serve N generated products (benchmarks)"
    )
    parser.add_argument("--generated-seed", type=int, default=0, help="seed of those products")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT or SIGTERM; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        faults = Faults(
            error_rate=args.error_rate,
            fail_first=args.fail_first,
            rate_limit_per_s=args.rate_limit_per_s,
            rate_limit_every=args.rate_limit_every,
            latency_s=args.latency,
            malformed_rate=args.malformed_rate,
            seed=args.seed,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    sandbox = Sandbox(
        port=args.port,
        faults=faults,
        host=args.host,
        generated=args.generated,
        generated_seed=args.generated_seed,
        verbose=args.verbose,
    )
    try:
        sandbox.start()
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    try:
        print(f"sandbox listening on {sandbox.url}", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        sandbox.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
