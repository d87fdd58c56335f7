"""`python -m imagecache.simulator`: the simulator until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType

from imagecache.simulator.rules import RuleError
from imagecache.simulator.server import KentikSimulator


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m imagecache.simulator", description="Simulate Kentik's chart API."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--email", help="the only X-CH-Auth-Email accepted")
    parser.add_argument("--token", help="the only X-CH-Auth-API-Token accepted")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument(
        "--rate-limit",
        type=int,
        metavar="N",
        help="allow N calls per minute per credentials, then 429 with Retry-After",
    )
    parser.add_argument(
        "--outage",
        type=float,
        metavar="SECONDS",
        help="fail every call for this long from the start (see --outage-status)",
    )
    parser.add_argument("--outage-status", type=int, default=503, help="default 503")
    parser.add_argument("--outage-retry-after", help="the outage's Retry-After, if any")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)

    stop_requested: list[int] = []

    def request_stop(signum: int, frame: FrameType | None) -> None:
        # Only a list append here: taking a lock in a signal handler can deadlock
        # against the very thread the handler interrupted.
        stop_requested.append(signum)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    simulator = KentikSimulator(
        args.host, args.port, args.email, args.token, args.delay, verbose=args.verbose
    )
    try:
        if args.rate_limit is not None:
            simulator.set_rate_limit(args.rate_limit)
    except RuleError as exc:
        parser.error(f"--rate-limit: {exc}")
    try:
        if args.outage is not None:
            simulator.set_outage(args.outage, args.outage_status, args.outage_retry_after)
    except RuleError as exc:
        parser.error(f"--outage: {exc}")
    try:
        simulator.start()
    except OSError as exc:
        print(f"Cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(f"Kentik simulator listening on {simulator.url}", flush=True)
    while not stop_requested:
        time.sleep(0.1)
    simulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
