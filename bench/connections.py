#!/usr/bin/env python3
"""The PostgreSQL connections one node (as `make run` starts it) holds, idle
and at the peak of many clients that each post a new query and wait for its
image, against the most that docs/deploying.md's "Scaling out" gives:
WEB_CONCURRENCY x (DB_POOL_SIZE + 1) + Q_WORKERS + 1.

PostgreSQL and Redis only (a node on SQLite holds no server connections).

Usage: DATABASE_URL=postgres://postgres@127.0.0.1:5432/imagecache \
       REDIS_URL=redis://127.0.0.1:6379/0 .venv/bin/python bench/connections.py \
       [--clients 200] [--queries 400]
"""

import argparse
import json
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.waiters import database_connections, database_connections_sampled  # noqa: E402
from imagecache.simulator.server import KentikSimulator  # noqa: E402
from tests.harness.data import E2E_EMAIL, E2E_TOKEN, unique_query  # noqa: E402
from tests.harness.service import Service, wait_for  # noqa: E402


def most_allowed(env: dict[str, str]) -> int:
    """docs/deploying.md's most, with the defaults of config/gunicorn.py and the settings."""
    web = int(env.get("WEB_CONCURRENCY", str(2 * (os.cpu_count() or 1))))
    pool = int(env.get("DB_POOL_SIZE", "10"))
    workers = int(env.get("Q_WORKERS", "4"))
    return web * (pool + 1) + workers + 1


def measure(clients: int, queries: int) -> dict[str, int]:
    with (
        tempfile.TemporaryDirectory() as tmp,
        KentikSimulator(email=E2E_EMAIL, token=E2E_TOKEN) as sim,
    ):
        # Kentik takes 2 s a chart: the requests pile up in the node.
        sim.add_rule(delay=2)
        service = Service(Path(tmp), sim.url).start()
        try:
            # Once the cluster's start has settled: its heartbeat written.
            wait_for(lambda: service.sql("SELECT count(*) FROM imagecache_workerheartbeat")[0][0])
            idle = database_connections(service)

            def client(n: int) -> int:
                entry_id = service.post(unique_query(f"connections-{n}"))
                # A wait shorter than the Kentik budget's queue: the peak is
                # what counts, not every image.
                url = f"{service.url}/image/{entry_id}?wait=3"
                return requests.get(url, timeout=60).status_code

            with (
                database_connections_sampled(service, every=0.05) as held,
                ThreadPoolExecutor(clients) as pool,
            ):
                list(pool.map(client, range(queries)))
            return {"idle": idle or 0, "peak": max(held), "most": most_allowed(service.env)}
        finally:
            service.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--queries", type=int, default=400)
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        sys.exit("Set DATABASE_URL to PostgreSQL and REDIS_URL to Redis: see the usage.")
    print(json.dumps(measure(args.clients, args.queries)))


if __name__ == "__main__":
    main()
