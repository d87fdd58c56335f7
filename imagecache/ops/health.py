"""Health for orchestrators and monitoring: /healthz (the process answers),
/readyz (what the service needs answers), /metrics (Prometheus).

They are DRF views left out of the OpenAPI description: no authentication
runs (none is configured), and the session and user are never touched, so
/healthz costs no query at all.
"""

import concurrent.futures
import functools
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.files.storage import FileSystemStorage, default_storage
from django.db import connection
from django.http import HttpResponse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django_q.brokers import Broker, get_broker
from django_q.conf import Conf
from django_q.signing import BadSignature, SignedPackage
from django_q.status import Stat
from drf_spectacular.utils import extend_schema
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from imagecache import leases
from imagecache.models import FetchState
from imagecache.ops import log, metrics
from imagecache.processes import process_alive
from imagecache.selectors.shield import kentik_status
from imagecache.selectors.stats import cache_stats
from imagecache.selectors.workers import worker_heartbeats

# How long a cluster's report lives: django-q2 saves it every guard cycle
# (0.5 s) with this expiry (django_q.status.Stat.save).
CLUSTER_REPORT_TTL = 3
ERROR_LIMIT = 300


class NotReady(Exception):
    """A check that answered, with a bad answer."""


def check_database() -> dict[str, Any]:
    # Written out: the probe asks only that the database answers, and reads no table.
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"vendor": connection.vendor}


def check_storage() -> dict[str, Any]:
    """The image store takes writes: a temp file created and deleted in the
    directory, or, for object storage, the bucket answering a HEAD."""
    if isinstance(default_storage, FileSystemStorage):
        location = default_storage.location
        os.makedirs(location, exist_ok=True)
        # A byte written and synced: on a full disk an empty file can still
        # be made, but no image can be stored.
        fd, probe = tempfile.mkstemp(dir=location, prefix=".readyz-")
        try:
            os.write(fd, b"r")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
        return {"location": location}
    bucket = getattr(default_storage, "bucket_name", None)
    if bucket is not None:  # django-storages' S3Storage, which has no type information
        s3: Any = default_storage
        s3.connection.meta.client.head_bucket(Bucket=bucket)
        return {"bucket": bucket}
    default_storage.exists("readyz")
    return {}


def check_broker(broker: Broker) -> dict[str, Any]:
    """The broker answers. The ORM broker's ping is always true, so the size
    of the queue, one query on its table (or a LLEN on Redis), is asked too."""
    if broker.ping() is False:
        raise NotReady("the broker did not answer the ping")
    return {"broker": type(broker).__name__, "queued": broker.queue_size()}


def check_worker(broker: Broker) -> dict[str, Any]:
    """A queue worker runs: its heartbeat in the database is younger than
    5 x WORKER_HEARTBEAT_INTERVAL (and its process is alive, if it is on this
    host), or a django-q2 cluster reported in the last CLUSTER_REPORT_TTL s.

    The heartbeats are seen from every host. The clusters' own reports are
    in Redis, or, with the ORM broker, in files of this host (see CACHES in
    settings): they count for a bare `manage.py qcluster`.
    """
    ttl = 5 * settings.WORKER_HEARTBEAT_INTERVAL
    beating = live_heartbeats()
    here = socket.gethostname()
    clusters = [
        stat
        for stat in cluster_reports(broker)
        if stat.status not in (Conf.STOPPING, Conf.STOPPED)
        # A cluster killed with -9 leaves its last report for 3 s: not a worker.
        and not (stat.host == here and not process_alive(stat.pid))
    ]
    if not beating and not clusters:
        raise NotReady(
            f"no worker's heartbeat in the last {ttl:g} s, and no django-q2 cluster has"
            f" reported in the last {CLUSTER_REPORT_TTL} s: is `manage.py worker` running?"
        )
    return {
        "heartbeats": len(beating),
        "clusters": len(clusters),
        "workers": sum(len(stat.workers) for stat in clusters),
    }


def live_heartbeats() -> list[str]:
    """The queue workers whose heartbeat is younger than 5 x
    WORKER_HEARTBEAT_INTERVAL and whose process, if on this host, is alive."""
    ttl = 5 * settings.WORKER_HEARTBEAT_INTERVAL
    now = timezone.now()
    return [
        name
        for name, seen_at in worker_heartbeats(seconds=ttl)
        if not leases.abandoned(name, seen_at + timedelta(seconds=ttl), now)
    ]


def cluster_reports(broker: Broker) -> list[Any]:
    """Every live cluster's report (django-q2's Stat).

    Not `Stat.get_all`: with a cache-backed broker (the ORM's), django-q2
    1.11.1's `Broker.get_stats` removes expired keys from the list it is
    iterating over, and so skips the report after each expired one: the live
    cluster that follows a dead one (after a kill -9) went unseen. Redis's
    broker lists its keys in Redis and has no such loop.
    """
    if type(broker).get_stats is not Broker.get_stats or broker.cache is None:
        return list(Stat.get_all(broker=broker))
    reports = []
    for key in list(broker.cache.get(Conf.Q_STAT) or []):
        pack = broker.cache.get(key)
        if pack is None:
            continue  # expired: its cluster stopped reporting
        try:
            reports.append(SignedPackage.loads(pack))
        except BadSignature:
            continue
    return reports


def readiness() -> tuple[bool, dict[str, dict[str, Any]]]:
    """Every check's outcome, and whether all passed, within READYZ_TIMEOUT:
    the checks run at once in threads of their own, and one that has not
    answered by then fails, so a black-holed database or Redis makes the
    probe answer 503 in time rather than hang with it."""
    broker = get_broker()
    checks: dict[str, Callable[[], dict[str, Any]]] = {
        "database": check_database,
        "storage": check_storage,
        "broker": lambda: check_broker(broker),
        "worker": lambda: check_worker(broker),
    }
    pool = _pool()
    running = {name: pool.submit(_run_closing, check) for name, check in checks.items()}
    deadline = time.monotonic() + settings.READYZ_TIMEOUT
    outcomes = {}
    for name, future in running.items():
        try:
            outcomes[name] = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except concurrent.futures.TimeoutError:
            error = f"no answer within {settings.READYZ_TIMEOUT:g} s"
            outcomes[name] = {"status": "fail", "error": error}
    return all(check["status"] == "ok" for check in outcomes.values()), outcomes


@functools.cache
def _pool() -> concurrent.futures.ThreadPoolExecutor:
    """The checks' threads, per process. Bounded: checks stuck on a dead
    server hold their threads until their sockets give up, and probes that
    come meanwhile queue and time out instead of adding threads."""
    return concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="readyz")


# A forked process has none of its parent's threads: it makes its own pool.
os.register_at_fork(after_in_child=_pool.cache_clear)


def _run_closing(check: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return _run(check)
    finally:
        # The thread's own connection: back to the pool, or closed.
        connection.close()


def _run(check: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return {"status": "ok", **check()}
    except NotReady as exc:
        error = str(exc)
    except Exception as exc:  # noqa: BLE001 - whatever fails, the answer names the check
        error = f"{type(exc).__name__}: {exc}"
    error = log.redact(error)
    if len(error) > ERROR_LIMIT:
        error = error[: ERROR_LIMIT - 1] + "…"
    return {"status": "fail", "error": error}


class CacheContentCollector:
    """What the cache holds, from `cache_stats` at scrape time:
    entries by the state of their fetch (`expired` for rows past their expiry
    that pruning has not removed yet), fetches by state, and the bytes of
    their images by state (only ready fetches hold an image); the age of the
    oldest fetch in flight, the bound on the bytes, and the queue workers
    whose heartbeat /readyz would count (what the alerting rules read)."""

    def collect(self) -> Iterator[Metric]:
        stats = cache_stats()
        entries = {**stats.entries_by_state, "expired": stats.expired_entries}
        stored = {state: 0 for state in FetchState.values} | {FetchState.READY: stats.stored_bytes}
        yield _gauge("imagecache_entries", "Entries by the state of their fetch.", entries)
        yield _gauge("imagecache_fetches", "Fetches by state.", stats.fetches_by_state)
        yield _gauge("imagecache_stored_bytes", "Bytes of images by fetch state.", stored)
        kentik = kentik_status()
        yield GaugeMetricFamily(
            "imagecache_kentik_budget_calls",
            "Kentik calls (each attempt) of the whole deployment in the last 60 s.",
            value=kentik["calls_last_minute"],
        )
        yield GaugeMetricFamily(
            "imagecache_kentik_budget_limit",
            "KENTIK_RATE_LIMIT: Kentik calls allowed in any 60 s; 0: no limit.",
            value=kentik["rate_limit"],
        )
        paused_until = kentik["paused_until"]
        yield GaugeMetricFamily(
            "imagecache_kentik_paused_until_seconds",
            "Unix time until which every Kentik call waits (a 429, Kentik failing); 0: no pause.",
            value=paused_until.timestamp() if paused_until else 0,
        )
        oldest = stats.oldest_pending_age
        yield GaugeMetricFamily(
            "imagecache_oldest_pending_fetch_age_seconds",
            "Age of the oldest fetch pending or fetching (0: none).",
            value=max(0.0, oldest.total_seconds()) if oldest is not None else 0.0,
        )
        yield GaugeMetricFamily(
            "imagecache_cache_max_bytes",
            "CACHE_MAX_BYTES: the bytes of images kept at most (0: no bound).",
            value=settings.CACHE_MAX_BYTES,
        )
        yield GaugeMetricFamily(
            "imagecache_worker_heartbeats",
            "Queue workers whose heartbeat is fresh, on any host (as /readyz counts them).",
            value=len(live_heartbeats()),
        )


def _gauge(name: str, documentation: str, values: dict[str, int]) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, documentation, labels=["state"])
    for state, value in values.items():
        gauge.add_metric([state], value)
    return gauge


_content = CollectorRegistry(auto_describe=False)
_content.register(CacheContentCollector())


def exposition() -> bytes:
    """Every metric in Prometheus' text format: this process's, or every
    process's summed in multiprocess mode, and the cache's content."""
    if metrics.multiprocess_mode():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return generate_latest(registry) + generate_latest(_content)


class HealthzApi(APIView):
    @extend_schema(exclude=True)
    def get(self, request: Request) -> Response:
        """The process answers. No I/O: a liveness probe must not fail because
        the database is slow."""
        response = Response({"status": "ok"})
        add_never_cache_headers(response)
        return response


class ReadyzApi(APIView):
    @extend_schema(exclude=True)
    def get(self, request: Request) -> Response:
        ready, checks = readiness()
        if ready:
            body: dict[str, Any] = {"status": "ok", "checks": checks}
        else:
            failed = [name for name, check in checks.items() if check["status"] != "ok"]
            body = {
                "status": "fail",
                "error": "Not ready: " + ", ".join(failed),
                "failed": failed,
                "checks": checks,
            }
        response = Response(body, status=200 if ready else 503)
        add_never_cache_headers(response)
        return response


class MetricsApi(APIView):
    @extend_schema(exclude=True)
    def get(self, request: Request) -> HttpResponse:
        response = HttpResponse(exposition(), content_type=metrics.CONTENT_TYPE)
        add_never_cache_headers(response)
        return response
