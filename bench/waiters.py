#!/usr/bin/env python3
"""Measures waiting on the real service (as `make run` starts it) against the
bundled Kentik simulator on loopback:

1. added wait latency: GET total (from the POST) minus the simulator's delay,
   over sequential requests for new queries;
2. N concurrent waiters on one pending id: all answered? and the time from
   the image being stored (the fetch's finish time in the database) to each
   answer;
3. coalescing: concurrent identical POSTs and the Kentik calls they caused.

On PostgreSQL + Redis when DATABASE_URL and REDIS_URL say so (as
`make test-production` sets them), with the connections the service holds to
PostgreSQL sampled during the waiters.

Usage: .venv/bin/python bench/waiters.py [--waiters 1000] [--rounds 20] [--json out.json]
       .venv/bin/python bench/waiters.py --against ../earlier-checkout --rounds 100 --delay 0.3
       DATABASE_URL=postgres://postgres@127.0.0.1:5432/imagecache \
       REDIS_URL=redis://127.0.0.1:6379/0 .venv/bin/python bench/waiters.py
"""

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from imagecache.hashing import query_hash  # noqa: E402
from imagecache.simulator.server import KentikSimulator  # noqa: E402
from tests.harness.data import E2E_EMAIL, E2E_TOKEN, unique_query  # noqa: E402
from tests.harness.service import Service  # noqa: E402


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def service_pids(service: Service) -> list[int]:
    """Every process of the service: its session (the harness starts it in a
    new one; the supervisor puts each child in a process group of its own)."""
    assert service.process is not None
    return session_pids(os.getsid(service.process.pid))


def session_pids(session: int) -> list[int]:
    """Every process of the session `session`."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if os.getsid(int(proc.name)) == session:
                pids.append(int(proc.name))
        except (OSError, ValueError):
            continue
    return pids


def added_latency(service: Service, sim: KentikSimulator, rounds: int, delay: float) -> dict:
    sim.add_rule(delay=delay)
    added = [_added_once(service, sim, f"latency-{i}") for i in range(rounds)]
    sim.reset()
    return {
        "rounds": rounds,
        "simulator_delay_s": delay,
        "added_ms_min": round(min(added), 1),
        "added_ms_median": round(statistics.median(added), 1),
        "added_ms_p90": round(percentile(added, 0.9), 1),
        "added_ms_max": round(max(added), 1),
    }


def added_latency_paired(
    services: dict[str, Service], sim: KentikSimulator, rounds: int, delay: float
) -> dict:
    """The added wait latency of two services side by side (two checkouts),
    their rounds interleaved and taken in turns first, so that what the host
    does meanwhile falls on both: on a busy host, medians of separate runs
    swing more than most changes move them."""
    (first, a), (second, b) = services.items()
    sim.add_rule(delay=delay)
    added: dict[str, list[float]] = {first: [], second: []}
    for i in range(rounds):
        for name, service in ((first, a), (second, b)) if i % 2 == 0 else ((second, b), (first, a)):
            added[name].append(_added_once(service, sim, f"latency-{name}-{i}"))
    sim.reset()
    return {
        "rounds": rounds,
        "simulator_delay_s": delay,
        **{f"{name}_added_ms_median": round(statistics.median(v), 2) for name, v in added.items()},
        f"{second}_minus_{first}_ms_paired_median": round(
            statistics.median(y - x for x, y in zip(added[first], added[second], strict=True)), 2
        ),
    }


def _added_once(service: Service, sim: KentikSimulator, tag: str) -> float:
    """One new query: GET total (from the POST) less Kentik's own time for it, in ms."""
    api_query = unique_query(f"{tag}-{time.time()}")
    # Kentik's own time for this query (delay and drawing), asked directly.
    started = time.perf_counter()
    requests.post(
        f"{sim.url}/query/topXchart",
        json=api_query,
        headers={"X-CH-Auth-Email": E2E_EMAIL, "X-CH-Auth-API-Token": E2E_TOKEN},
        timeout=30,
    ).raise_for_status()
    kentik_time = time.perf_counter() - started
    started = time.perf_counter()
    response = service.get_image(service.post(api_query))
    assert response.status_code == 200, response.text
    return (time.perf_counter() - started - kentik_time) * 1000


@dataclass
class _Answer:
    status: str = "none"
    sent: float | None = None  # wall clock, once the request is written
    answered: float | None = None  # wall clock, once the whole body is in
    body: bytes = b""


def database_connections(service: Service) -> int | None:
    """Connections open to the service's PostgreSQL database (None on SQLite)."""
    if not service.env["DATABASE_URL"].startswith("postgres"):
        return None
    name = service.env["DATABASE_URL"].rsplit("/", 1)[1]
    rows = service.sql("SELECT count(*) FROM pg_stat_activity WHERE datname = ?", (name,))
    # Less the connection that asks.
    return int(rows[0][0]) - 1


@contextmanager
def database_connections_sampled(service: Service, every: float) -> Iterator[list[int]]:
    """`database_connections`, every `every` seconds while the block runs, in
    the list it gives (empty on SQLite)."""
    held: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(every):
            if (count := database_connections(service)) is not None:
                held.append(count)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield held
    finally:
        done.set()
        sampler.join()


async def _get(host: str, port: int, path: str, timeout: float) -> _Answer:
    """One GET on a connection of its own, as a browser tab waiting for a chart."""
    answer = _Answer()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(
                    f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                    "Connection: close\r\n\r\n".encode("ascii")
                )
                await writer.drain()
                answer.sent = time.time()
                answer.status = str(int((await reader.readline()).split()[1]))
                length = None
                while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                answer.body = (
                    await reader.readexactly(length) if length is not None else await reader.read()
                )
                answer.answered = time.time()
            finally:
                writer.close()
                with suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
        answer.status = type(exc).__name__
    return answer


async def _crowd(host: str, port: int, path: str, count: int, timeout: float) -> list[_Answer]:
    # No semaphore: the point is that all of them wait at once.
    return await asyncio.gather(*(_get(host, port, path, timeout) for _ in range(count)))


def _raise_file_limit(needed: int) -> None:
    """One descriptor per connection, here and in the service (which inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        ceiling = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))


def waiters(service: Service, sim: KentikSimulator, count: int, delay: float) -> dict:
    """`count` GETs on one pending id, on asyncio rather than threads: 1,000
    Python threads on the service's own cores would slow the answers they
    time."""
    _raise_file_limit(count + 256)
    api_query = unique_query(f"waiters-{time.time()}")
    sim.add_rule(delay=delay)
    entry_id = service.post(api_query)
    with database_connections_sampled(service, every=0.1) as connections:
        answers = asyncio.run(
            _crowd("127.0.0.1", service.port, f"/image/{entry_id}", count, timeout=120)
        )
    expected = service.get_image(entry_id)
    assert expected.status_code == 200, expected.text
    ((finished,),) = service.sql(
        "SELECT finished_at FROM imagecache_fetch WHERE query_hash = ?",
        (query_hash(api_query),),
    )
    stored = (
        finished if isinstance(finished, datetime) else datetime.fromisoformat(finished)
    ).timestamp()
    lags = [(a.answered - stored) * 1000 for a in answers if a.answered is not None]
    statuses: dict[str, int] = {}
    for answer in answers:
        statuses[answer.status] = statuses.get(answer.status, 0) + 1
    calls = sim.calls()["total"]
    sim.reset()
    return {
        "waiters": count,
        "statuses": statuses,
        # Sent before the image was stored: without all of them, p99 means little.
        "waiting_when_stored": sum(1 for a in answers if a.sent is not None and a.sent < stored),
        "body_mismatches": sum(
            1 for a in answers if a.status == "200" and a.body != expected.content
        ),
        "kentik_calls": calls,
        "store_to_answer_ms_median": round(statistics.median(lags), 1) if lags else None,
        "store_to_answer_ms_p99": round(percentile(lags, 0.99), 1) if lags else None,
        "store_to_answer_ms_max": round(max(lags), 1) if lags else None,
        "database_connections_max": max(connections) if connections else None,
    }


def coalescing(service: Service, sim: KentikSimulator, posts: int) -> dict:
    api_query = unique_query(f"coalescing-{time.time()}")
    sim.add_rule(delay=0.5)
    with ThreadPoolExecutor(posts) as pool:
        ids = list(pool.map(lambda _: service.post(api_query), range(posts)))
        statuses = [r.status_code for r in pool.map(service.get_image, ids)]
    calls = sim.calls()["by_query"].get(query_hash(api_query), 0)
    sim.reset()
    return {
        "posts": posts,
        "distinct_ids": len(set(ids)),
        "all_200": set(statuses) == {200},
        "kentik_calls": calls,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--waiters", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--delay", type=float, default=1.0, help="simulator delay, s")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--against",
        type=Path,
        help="a checkout (an earlier commit) to run beside this one: the added wait"
        " latency of both, rounds interleaved, and nothing else",
    )
    args = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory() as tmp,
        KentikSimulator(email=E2E_EMAIL, token=E2E_TOKEN) as sim,
    ):
        figures = (_paired if args.against else _alone)(Path(tmp), sim, args)
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


def _alone(tmp: Path, sim: KentikSimulator, args: argparse.Namespace) -> dict[str, Any]:
    service = Service(tmp, sim.url, ENTRY_WAIT_TIMEOUT=120, REUSE_MAX_AGE=60)
    service.env["KT_AUTH_EMAIL"], service.env["KT_AUTH_TOKEN"] = E2E_EMAIL, E2E_TOKEN
    service.start()
    try:
        # Warm every gunicorn worker and thread pool before measuring.
        service.get_image(service.post(unique_query("warm-up")))
        return {
            "date": datetime.now().isoformat(timespec="seconds"),
            "added_wait_latency": added_latency(service, sim, args.rounds, args.delay),
            "database": service.env["DATABASE_URL"].split(":", 1)[0],
            "broker": "redis" if "REDIS_URL" in service.env else "orm",
            "concurrent_waiters": waiters(service, sim, args.waiters, 3.0),
            "coalescing": [coalescing(service, sim, n) for n in (20, 100)],
        }
    finally:
        service.drop()


def _paired(tmp: Path, sim: KentikSimulator, args: argparse.Namespace) -> dict[str, Any]:
    services = {
        name: Service(tmp / name, sim.url, ENTRY_WAIT_TIMEOUT=120, REUSE_MAX_AGE=60)
        for name in ("against", "this")
    }
    services["against"].root = args.against
    try:
        for service in services.values():
            service.start()
            for n in range(3):  # every worker warm
                service.get_image(service.post(unique_query(f"warm-up-{n}")))
        return {
            "date": datetime.now().isoformat(timespec="seconds"),
            "against": str(args.against),
            "database": services["this"].env["DATABASE_URL"].split(":", 1)[0],
            "added_wait_latency": added_latency_paired(services, sim, args.rounds, args.delay),
        }
    finally:
        for service in services.values():
            service.drop()


if __name__ == "__main__":
    sys.exit(main())
