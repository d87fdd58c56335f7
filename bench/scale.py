#!/usr/bin/env python3
"""The cost of a large cache (issue 14), on the real service as `make run`
starts it, against the bundled simulator: not part of `make test`.

Fills the service's database straight with SQL (one INSERT ... SELECT per
table: 1,000,000 entries over 100,000 queries on PostgreSQL, 100,000 over
10,000 on SQLite; a fifth of them expired, on fetches of their own), and
reports, against the same service empty:

- POST p50 and p99, new queries one after another (<= 1.5x the empty cache's);
- `/info` p50 (<= 50 ms);
- a GET of a ready image;
- a prune of the expired entries, in this process with the service's
  settings: how long it takes, and the longest POST meanwhile (<= 200 ms);
- the EXPLAIN of each query of `/info` (as its rounds found the tables) and
  of the maintenance schedule (after the prune).

Usage: .venv/bin/python bench/scale.py [--profile embedded|production|both]
           [--entries N] [--queries N] [--json bench/scale.json] [--markdown FILE]
PostgreSQL and Redis at BENCH_DATABASE_URL and BENCH_REDIS_URL (bench/run.py's).
"""

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import production_answers, profile_environment  # noqa: E402
from bench.waiters import percentile  # noqa: E402
from imagecache.simulator.render import render_chart  # noqa: E402
from imagecache.simulator.server import KentikSimulator  # noqa: E402
from tests.harness.data import E2E_EMAIL, E2E_TOKEN, unique_query  # noqa: E402
from tests.harness.service import Service  # noqa: E402

SIZES = {"production": (1_000_000, 100_000), "embedded": (100_000, 10_000)}
POST_RATIO_TARGET = 1.5
INFO_P50_TARGET_MS = 50
PRUNE_HOLDUP_TARGET_MS = 200
# A fifth of the entries expired, on fetches of their own: the prune removes
# them and those fetches.
EXPIRED_SHARE = 5


def timed_posts(url: str, count: int, label: str) -> list[float]:
    """Milliseconds of `count` POSTs of new queries, one after another."""
    times = []
    with requests.Session() as session:
        for i in range(count):
            body = {"api_query": unique_query(f"scale-{label}-{i}-{time.time()}")}
            started = time.perf_counter()
            response = session.post(f"{url}/requests", json=body, timeout=30)
            times.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                raise RuntimeError(f"POST answered {response.status_code}: {response.text}")
    return times


def timed_gets(url: str, count: int, check: bytes | None = None) -> list[float]:
    times = []
    with requests.Session() as session:
        for _ in range(count):
            started = time.perf_counter()
            response = session.get(url, timeout=30)
            times.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200 or (check is not None and response.content != check):
                raise RuntimeError(f"{url} answered {response.status_code} or other bytes")
    return times


def summary(times: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(times), 2),
        "p99_ms": round(percentile(times, 0.99), 2),
        "max_ms": round(max(times), 2),
        "n": len(times),
    }


def fill(entries: int, queries: int) -> float:
    """`queries` ready fetches and `entries` entries over them, in this
    process's database (the service's); seconds taken. The last fifth of
    the fetches have only expired entries, and finished before
    STALE_IF_ERROR (an hour), so that the prune removes them too."""
    from django.db import connection

    live_fetches = queries - queries // EXPIRED_SHARE
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SELECT COALESCE(MAX(id), 0) FROM imagecache_fetch")
        ((base,),) = cursor.fetchall()
        if connection.vendor == "postgresql":
            series = "generate_series(1, %s) AS s(i)"
            hex64 = "lpad(to_hex(i), 64, '0')"
            entry_id = "lpad(to_hex(i), 64, '0') || '_4070908800.' || lpad(i::text, 6, '0')"
            past, future = "now() - interval '1 hour'", "'2099-01-01 00:00:00+00'"
            long_past = "now() - interval '2 hours'"
            now, false = "now()", "false"
        else:
            series = (
                "(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %s)"
                " SELECT i FROM n)"
            )
            hex64 = "printf('%%064x', i)"
            entry_id = "printf('%%064x_4070908800.%%06d', i, i)"
            past, future = "datetime('now', '-1 hour')", "'2099-01-01 00:00:00'"
            long_past = "datetime('now', '-2 hours')"
            now, false = "datetime('now')", "0"
        cursor.execute(
            "INSERT INTO imagecache_fetch (id, query_hash, query_json, state, created_at,"
            " started_at, finished_at, lease_owner, attempts, last_read_at, file_name,"
            " media_type, size, content_hash, error_message, error_transient, priority,"
            " probe_failures)"
            f" SELECT %s + i, {hex64}, '{{}}', 'ready', {now}, {now},"
            f" CASE WHEN i > {live_fetches} THEN {long_past} ELSE {now} END, '', 1, {now},"
            f" '', 'image/png', 60000, '', '', {false}, 1, 0 FROM {series}",
            [base, queries],
        )
        # Entry i belongs to fetch (i - 1) % queries + 1; those of the last
        # fifth of the fetches are expired.
        fetch_of = f"((i - 1) %% {queries} + 1)"
        cursor.execute(
            "INSERT INTO imagecache_entry (id, fetch_id, created_at, expires_at)"
            f" SELECT {entry_id}, %s + {fetch_of}, {now},"
            f" CASE WHEN {fetch_of} > {live_fetches} THEN {past} ELSE {future} END"
            f" FROM {series}",
            [base, entries],
        )
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT setval(pg_get_serial_sequence('imagecache_fetch', 'id'),"
                " (SELECT MAX(id) FROM imagecache_fetch))"
            )
            # What autovacuum does on its own some time after such a load.
            cursor.execute("VACUUM ANALYZE imagecache_fetch")
            cursor.execute("VACUUM ANALYZE imagecache_entry")
        else:
            cursor.execute("ANALYZE")
    return time.perf_counter() - started


def explain(sql: str) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) " + sql)
            return "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("EXPLAIN QUERY PLAN " + sql)
        return "\n".join(str(row[-1]) for row in cursor.fetchall())


def shape(sql: str) -> str:
    """A query without its values, to keep one of each."""
    sql = re.sub(r"'[^']*'", "?", sql)
    sql = re.sub(r"\b\d+(\.\d+)?\b", "?", sql)
    return re.sub(r"IN \([?, ]+\)", "IN (...)", sql)


def captured(run: Any) -> list[str]:
    """The distinct queries (one of each shape) that `run()` makes, read-only ones."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        run()
    seen: dict[str, str] = {}
    for query in queries.captured_queries:
        sql = query["sql"]
        if sql.lstrip().upper().startswith("SELECT") and shape(sql) not in seen:
            seen[shape(sql)] = sql
    return list(seen.values())


def run_profile(profile: str, entries: int, queries: int, work: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"entries": entries, "queries": queries}
    with KentikSimulator(email=E2E_EMAIL, token=E2E_TOKEN) as sim:
        with profile_environment(profile):
            # The schedule's own prune would run alongside the one measured.
            service = Service(
                work / "service", sim.url, ENTRY_WAIT_TIMEOUT=60, CACHE_MAINTENANCE_PERIOD=86400
            )
        service.env["KT_AUTH_EMAIL"], service.env["KT_AUTH_TOKEN"] = E2E_EMAIL, E2E_TOKEN
        # This process reads and prunes the service's own database and files.
        for name in ("DATABASE_URL", "CACHE_PATH", "REDIS_URL", "Q_NAME"):
            if name in service.env:
                os.environ[name] = service.env[name]
            else:
                os.environ.pop(name, None)
        os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.local"
        service.start()
        try:
            import django

            django.setup()
            from django.db import connection
            from django_q.models import Schedule

            from imagecache.selectors.info import cache_info
            from imagecache.services import housekeeping

            # Nor its first run, due at once.
            Schedule.objects.update(next_run="2099-01-01T00:00:00Z")
            image_query = unique_query(f"scale-image-{time.time()}")
            image_id = service.post(image_query, ttl=3600)
            image = service.get_image(image_id)
            assert image.content == render_chart(image_query)[1], "the image differs"
            timed_posts(service.url, 20, "warm")
            empty_posts = timed_posts(service.url, 300, "empty")

            result["fill_seconds"] = round(fill(entries, queries), 1)
            print(
                f"{profile}: filled {entries:,} entries over {queries:,} queries"
                f" in {result['fill_seconds']} s",
                flush=True,
            )
            full_posts = timed_posts(service.url, 300, "full")
            info = timed_gets(service.url + "/info", 100)
            # /info's plans as its rounds had them: before the prune, whose
            # deletes leave pages the planner may then read differently.
            info_sql = captured(lambda: cache_info(limit=100))
            info_explain = [(sql, explain(sql)) for sql in info_sql]
            get = timed_gets(service.url + f"/image/{image_id}", 300, image.content)
            connection.close()

            # The prune, with POSTs one after another meanwhile.
            during: list[float] = []
            stop = threading.Event()

            def post_meanwhile() -> None:
                i = 0
                while not stop.is_set():
                    during.extend(timed_posts(service.url, 1, f"prune-{i}"))
                    i += 1

            poster = threading.Thread(target=post_meanwhile)
            poster.start()
            time.sleep(0.5)
            started = time.perf_counter()
            pruned = housekeeping.cache_prune()
            prune_seconds = time.perf_counter() - started
            stop.set()
            poster.join()

            schedule_sql = captured(
                lambda: (
                    housekeeping.cache_prune(),
                    housekeeping.cache_evict(),
                    housekeeping.fetch_reap(),
                )
            )
            result["explain"] = {
                "info": info_explain,
                "schedule": [(sql, explain(sql)) for sql in schedule_sql],
            }
            empty, full = summary(empty_posts), summary(full_posts)
            holdup = max(during) if during else float("nan")
            info_p50 = statistics.median(info)
            result.update(
                posts_empty=empty,
                posts_full=full,
                post_ratio_p50=round(full["p50_ms"] / empty["p50_ms"], 2),
                post_ratio_p99=round(full["p99_ms"] / empty["p99_ms"], 2),
                info=summary(info),
                ready_get=summary(get),
                prune={
                    "seconds": round(prune_seconds, 2),
                    "entries": pruned.entries,
                    "fetches": pruned.fetches,
                    "posts_meanwhile": summary(during) if during else None,
                },
                checks={
                    f"POST p50 and p99 <= {POST_RATIO_TARGET}x empty": max(
                        full["p50_ms"] / empty["p50_ms"], full["p99_ms"] / empty["p99_ms"]
                    )
                    <= POST_RATIO_TARGET,
                    f"/info p50 <= {INFO_P50_TARGET_MS} ms": info_p50 <= INFO_P50_TARGET_MS,
                    f"longest POST during the prune <= {PRUNE_HOLDUP_TARGET_MS} ms": holdup
                    <= PRUNE_HOLDUP_TARGET_MS,
                },
            )
        finally:
            from django.db import connections

            connections.close_all()
            service.drop()
    return result


def print_result(profile: str, result: dict[str, Any]) -> None:
    empty, full = result["posts_empty"], result["posts_full"]
    prune = result["prune"]
    meanwhile = prune["posts_meanwhile"] or {}
    print(
        f"\n{profile}: {result['entries']:,} entries over {result['queries']:,} queries,"
        f" filled in {result['fill_seconds']} s"
    )
    print(f"  POST, empty cache   p50 {empty['p50_ms']:7.2f} ms  p99 {empty['p99_ms']:7.2f} ms")
    print(
        f"  POST, full cache    p50 {full['p50_ms']:7.2f} ms  p99 {full['p99_ms']:7.2f} ms"
        f"  ({result['post_ratio_p50']}x / {result['post_ratio_p99']}x)"
    )
    print(
        f"  /info               p50 {result['info']['p50_ms']:7.2f} ms"
        f"  p99 {result['info']['p99_ms']:7.2f} ms"
    )
    print(
        f"  GET of a ready image p50 {result['ready_get']['p50_ms']:6.2f} ms"
        f"  p99 {result['ready_get']['p99_ms']:7.2f} ms"
    )
    print(
        f"  prune: {prune['entries']:,} entries, {prune['fetches']:,} fetches in"
        f" {prune['seconds']} s; {meanwhile.get('n', 0)} POSTs meanwhile, p50"
        f" {meanwhile.get('p50_ms', float('nan')):.2f} ms, longest"
        f" {meanwhile.get('max_ms', float('nan')):.2f} ms"
    )
    for check, met in result["checks"].items():
        print(f"  {check}: {'yes' if met else 'NO'}")


def markdown(results: dict[str, Any]) -> str:
    lines = []
    for profile, result in results.items():
        lines.append(f"### {profile}: {result['entries']:,} entries\n")
        for part in ("info", "schedule"):
            lines.append(f"#### {'/info' if part == 'info' else 'The maintenance schedule'}\n")
            for sql, plan in result["explain"][part]:
                lines += ["```sql", sql, "```", "```", plan, "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--profile", choices=("embedded", "production", "both"))
    parser.add_argument("--entries", type=int, help="default: 1,000,000 (PG), 100,000 (SQLite)")
    parser.add_argument("--queries", type=int, help="default: a tenth of the entries")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "scale.json")
    parser.add_argument("--markdown", type=Path, help="write the EXPLAINs there")
    args = parser.parse_args(argv)
    if args.profile is None:
        args.profile = "both" if production_answers() else "embedded"
    profiles = ["embedded", "production"] if args.profile == "both" else [args.profile]
    if len(profiles) > 1:
        # Django is set up once per process: one profile each.
        for profile in profiles:
            extra = [f"--json={args.json.with_suffix(f'.{profile}.json')}"]
            if args.markdown:
                extra.append(f"--markdown={args.markdown.with_suffix(f'.{profile}.md')}")
            for name in ("entries", "queries"):
                if getattr(args, name):
                    extra.append(f"--{name}={getattr(args, name)}")
            code = os.spawnv(
                os.P_WAIT, sys.executable, [sys.executable, __file__, "--profile", profile, *extra]
            )
            if code:
                return code
        return 0
    (profile,) = profiles
    entries = args.entries or SIZES[profile][0]
    queries = args.queries or max(1, entries // 10)
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        result = run_profile(profile, entries, queries, Path(tmp))
    print_result(profile, result)
    args.json.write_text(json.dumps({profile: result}, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(markdown({profile: result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
