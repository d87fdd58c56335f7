#!/usr/bin/env python3
"""Measures what the deployment-wide Kentik budget (KENTIK_RATE_LIMIT) costs a
claim: the time of `claims.fetch_claim` (the lock row, the line, the slot
count, the pause, the budget, the lease) with no limit and with one, on
SQLite and, when it answers, on PostgreSQL. The budget's read counts the
calls of the last 60 s, so the window is filled with calls first.

Each claim runs in a process of its own database, as a worker's would; the
medians of interleaved rounds are printed in microseconds.

Usage: .venv/bin/python bench/budget.py [--claims 300] [--rounds 5]
       [--postgres postgres://postgres@127.0.0.1:5432/imagecache_bench]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time
import django
django.setup()
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone
from imagecache.models import Fetch, KentikCall
from imagecache.services.claims import ClaimOutcome, fetch_claim

claims, limit = int(sys.argv[1]), int(sys.argv[2])
call_command("migrate", verbosity=0)
Fetch.objects.all().delete()
KentikCall.objects.all().delete()
settings.KENTIK_RATE_LIMIT = limit
settings.KENTIK_MAX_CONCURRENCY = claims + 1
now = timezone.now()
Fetch.objects.bulk_create(
    Fetch(query_hash=f"{n:064x}", query_json="{}", created_at=now) for n in range(claims)
)
ids = list(Fetch.objects.values_list("pk", flat=True))
times = []
for fetch_id in ids:
    started = time.perf_counter()
    claim = fetch_claim(fetch_id=fetch_id)
    times.append(time.perf_counter() - started)
    assert claim.outcome == ClaimOutcome.CLAIMED, claim
print(json.dumps({"median_us": statistics.median(times) * 1e6}))
"""


def claim_cost(database_url: str, claims: int, limit: int) -> float:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.local",
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("REDIS_URL", None)
    out = subprocess.run(
        [sys.executable, "-c", "import statistics\n" + CHILD, str(claims), str(limit)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return float(json.loads(out.strip().splitlines()[-1])["median_us"])


def postgres_answers(url: str) -> bool:
    try:
        import psycopg

        base = url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(base, autocommit=True, connect_timeout=3) as conn:
            # A scratch database of its own, made afresh for each run.
            name = url.rsplit("/", 1)[1]
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return True
    except Exception as exc:  # noqa: BLE001 - any failure: skip the profile
        print(f"PostgreSQL at {url} does not answer ({exc}): SQLite only.")
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--claims", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432/imagecache_bench")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        databases = {"SQLite": f"sqlite:///{Path(scratch) / 'bench.sqlite3'}"}
        if postgres_answers(args.postgres):
            databases["PostgreSQL"] = args.postgres
        print(f"Median time of one claim, {args.claims} claims, {args.rounds} interleaved rounds:")
        print("| database | no limit | KENTIK_RATE_LIMIT set | cost of the budget |")
        print("|---|---|---|---|")
        for name, url in databases.items():
            off, on = [], []
            for _ in range(args.rounds):
                off.append(claim_cost(url, args.claims, 0))
                # A limit the window never reaches: every claim reads and writes it.
                on.append(claim_cost(url, args.claims, args.claims + 1))
            a, b = statistics.median(off), statistics.median(on)
            print(f"| {name} | {a:.0f} µs | {b:.0f} µs | {b - a:+.0f} µs |")


if __name__ == "__main__":
    main()
