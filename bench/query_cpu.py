#!/usr/bin/env python3
"""The CPU that one new query costs the service, by process: a POST of a query
never asked before and the GET that waits for its image, one after another,
against the bundled Kentik simulator on loopback. Each process's user and
system time (`/proc/<pid>/stat`) over the rounds, less what it spends idle
(its polls and heartbeats, measured over as long beforehand), per query.

Usage: .venv/bin/python bench/query_cpu.py [--rounds 200] [--root CHECKOUT]
       DATABASE_URL=postgres://postgres@127.0.0.1:5432/imagecache \
       REDIS_URL=redis://127.0.0.1:6379/0 .venv/bin/python bench/query_cpu.py
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.waiters import service_pids  # noqa: E402
from imagecache.simulator.server import KentikSimulator  # noqa: E402
from tests.harness.data import E2E_EMAIL, E2E_TOKEN, unique_query  # noqa: E402
from tests.harness.service import Service  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_ms(pids: list[int]) -> dict[int, tuple[str, float]]:
    """Each process's role (its command line) and its CPU time so far, in ms."""
    seen = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        seen[pid] = (command.strip(), (int(fields[11]) + int(fields[12])) * 1000 / TICKS)
    return seen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--delay", type=float, default=0.05, help="simulator delay, s")
    parser.add_argument(
        "--root", type=Path, help="run the service from this checkout (an earlier commit)"
    )
    args = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory() as tmp,
        KentikSimulator(email=E2E_EMAIL, token=E2E_TOKEN) as sim,
    ):
        service = Service(Path(tmp), sim.url, ENTRY_WAIT_TIMEOUT=120, REUSE_MAX_AGE=60)
        service.root = args.root or service.root
        service.start()
        try:
            for n in range(3):  # every worker warm
                service.get_image(service.post(unique_query(f"warm-up-{n}")))
            sim.add_rule(delay=args.delay)
            pids = service_pids(service)
            started, before = time.monotonic(), cpu_ms(pids)
            for n in range(args.rounds):
                response = service.get_image(service.post(unique_query(f"cpu-{n}-{time.time()}")))
                assert response.status_code == 200, response.text
            elapsed, after = time.monotonic() - started, cpu_ms(pids)
            # The idle cost of each process over as long (polls, heartbeats).
            time.sleep(elapsed)
            idle = cpu_ms(pids)
        finally:
            service.drop()
    total = 0.0
    print(f"{args.rounds} new queries, {elapsed / args.rounds * 1000:.1f} ms each; CPU per query:")
    for pid, (command, used) in sorted(after.items()):
        busy = used - before[pid][1] - (idle[pid][1] - used)
        total += busy
        print(f"  {busy / args.rounds:6.2f} ms  {pid:>7}  {command[:90]}")
    print(f"  {total / args.rounds:6.2f} ms  in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
