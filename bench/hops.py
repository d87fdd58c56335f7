#!/usr/bin/env python3
"""Measures what this machine charges a process for waking after an idle
spell: the floor under the added wait latency, whose path hands a new query
from process to process (bench/NOTES.md, section 14).

After each idle spell (`--gaps`), and again at once (warm), it times:

- a token passed along a ring of `--hops` Python processes (socket pairs),
  per hop: each process blocks in recv, as a web worker, django-q2's pusher
  and its worker do between two requests;
- the same ring, each process reading 1 MiB of its own memory (256 pages)
  before it passes the token on: how much of a cold hop is the pages a
  process touches when it wakes;
- `SELECT 1` on an idle PostgreSQL connection and `PING` on an idle Redis
  connection, when they answer (DATABASE_URL, REDIS_URL, or the standard
  local ports): a server process woken in the same way.

Medians over `--rounds` rounds, in microseconds.

Usage: .venv/bin/python bench/hops.py [--rounds 15] [--hops 4] [--gaps 0.02 0.2 1.0]
"""

import argparse
import json
import os
import signal
import socket
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

PAGE = 4096
TOUCHED = 1024 * 1024


def ring(hops: int, touch: bool) -> tuple[Callable[[], float], Callable[[], None]]:
    """A ring of `hops` forked processes: a function that sends a token round
    it and answers the time per hop, in us, and one that stops the ring."""
    pairs = [socket.socketpair() for _ in range(hops + 1)]
    children = []
    for i in range(hops):
        pid = os.fork()
        if pid == 0:
            # The i-th reads what the one before it wrote, and writes on.
            inbound, outbound = pairs[i][1], pairs[i + 1][0]
            for pair in pairs:
                for end in pair:
                    if end not in (inbound, outbound):
                        end.close()
            _pass_on(inbound, outbound, touch)
        children.append(pid)
    head, tail = pairs[0][0], pairs[hops][1]
    for pair in pairs:
        for end in pair:
            if end not in (head, tail):
                end.close()

    def round_trip() -> float:
        started = time.perf_counter_ns()
        head.send(b"t")
        tail.recv(1)
        return (time.perf_counter_ns() - started) / 1000 / (hops + 1)

    def stop() -> None:
        # (A later ring's children hold this one's ends too: no EOF reaches it.)
        for pid in children:
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)

    return round_trip, stop


def _pass_on(inbound: socket.socket, outbound: socket.socket, touch: bool) -> None:
    memory = bytearray(TOUCHED) if touch else bytearray()
    for i in range(0, len(memory), PAGE):
        memory[i] = 1
    while inbound.recv(1):
        total = 0
        for i in range(0, len(memory), PAGE):
            total += memory[i]
        outbound.send(b"t")
    os._exit(0)


def postgres(url: str) -> Callable[[], float] | None:
    if not url.startswith("postgres"):
        return None
    try:
        import psycopg

        conn = psycopg.connect(url.replace("postgres://", "postgresql://", 1), autocommit=True)
    except Exception:  # noqa: BLE001 (absent: not measured)
        return None

    def select() -> float:
        started = time.perf_counter_ns()
        conn.execute("SELECT 1").fetchall()
        return (time.perf_counter_ns() - started) / 1000

    return select


def redis(url: str) -> Callable[[], float] | None:
    if not url:
        return None
    try:
        import redis as client

        conn = client.Redis.from_url(url)
        conn.ping()
    except Exception:  # noqa: BLE001 (absent: not measured)
        return None

    def ping() -> float:
        started = time.perf_counter_ns()
        conn.ping()
        return (time.perf_counter_ns() - started) / 1000

    return ping


def measure(probes: dict[str, Callable[[], float]], gaps: list[float], rounds: int) -> dict:
    """Per probe and gap: the median cold (after the gap) and warm (at once
    after) times, in us. The probes take turns within each round, so that
    what the host does meanwhile falls on all of them."""
    seen: dict[str, dict[float, list[tuple[float, float]]]] = {
        name: {gap: [] for gap in gaps} for name in probes
    }
    for _ in range(rounds):
        for gap in gaps:
            for name, probe in probes.items():
                time.sleep(gap)
                cold = probe()
                seen[name][gap].append((cold, probe()))
    return {
        name: {
            f"after {gap} s idle": {
                "cold_us": round(statistics.median(c for c, _ in pairs)),
                "warm_us": round(statistics.median(w for _, w in pairs)),
            }
            for gap, pairs in by_gap.items()
        }
        for name, by_gap in seen.items()
    }


@contextmanager
def probes(
    hops: int = 4, database_url: str = "", redis_url: str = ""
) -> Iterator[dict[str, Callable[[], float]]]:
    """The probes, by name: the two rings, and PostgreSQL and Redis at these
    URLs where they answer."""
    plain, plain_stop = ring(hops, touch=False)
    touching, touching_stop = ring(hops, touch=True)
    found = {"process hop": plain, "process hop reading 1 MiB": touching}
    servers = {"PostgreSQL SELECT 1": postgres(database_url), "Redis PING": redis(redis_url)}
    found.update({name: probe for name, probe in servers.items() if probe is not None})
    try:
        yield found
    finally:
        plain_stop()
        touching_stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--hops", type=int, default=4)
    parser.add_argument("--gaps", type=float, nargs="+", default=[0.02, 0.2, 1.0])
    args = parser.parse_args(argv)
    database_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    with probes(args.hops, database_url, redis_url) as found:
        figures = measure(found, args.gaps, args.rounds)
    text = json.dumps({"rounds": args.rounds, "hops": args.hops, **figures}, indent=2)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
