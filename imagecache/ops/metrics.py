"""Prometheus metrics.

Counters and histograms are incremented where things happen: the web
processes count requests, cache hits, misses and shared fetches; django-q2's
workers count Kentik calls and time fetches. Gauges of what the cache holds
are read from the database at scrape time (`imagecache.ops.health`).

A leaf: it imports nothing of the app, so that anything may count.

One deployment runs several processes (gunicorn's workers, django-q2's
workers), and a scrape reaches only one of them. With PROMETHEUS_MULTIPROC_DIR
set, every process writes its values to files in that directory and a scrape
sums them; `manage.py serve` and gunicorn's config set it up (see
`imagecache.ops.metrics_dir`). Without it (unit tests), the
metrics live in the default registry of the one process.

prometheus_client chooses between the two modes when it is first imported:
the variable must be in the environment before that, which is why it is set
for the child processes rather than by settings.
"""

import os

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    multiprocess,
    start_http_server,
)

from imagecache.ops.metrics_dir import METRICS_DIR

# The classic text format, which every Prometheus reads (the names here need
# none of the escaping that format 1.0.0 allows).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

if os.environ.get(METRICS_DIR):
    # Each metric opens its file there as it is made. A one-off command (say
    # `manage.py prune_cache` in a container whose environment names the
    # directory) may come before the server that prepares it.
    os.makedirs(os.environ[METRICS_DIR], exist_ok=True)

# `_created` series mean nothing once summed over processes, and multiprocess
# mode leaves them out: leave them out in both modes.
disable_created_metrics()

REQUESTS = Counter(
    "imagecache_http_requests",
    "HTTP requests answered, by endpoint (the URL's name), method and status.",
    ["endpoint", "method", "status"],
)
CACHE_HITS = Counter(
    "imagecache_cache_hits",
    "Images served: GET /image/{id} answered 200 with the image.",
)
CACHE_MISSES = Counter(
    "imagecache_cache_misses",
    "POST /requests that created a new fetch, i.e. a new Kentik call.",
)
SHARED_FETCHES = Counter(
    "imagecache_shared_fetches",
    "POST /requests that joined a fetch in flight or reused a recent one: no Kentik call.",
)
KENTIK_CALLS = Counter(
    "imagecache_kentik_calls",
    "Fetches that called Kentik, by outcome: 200, or the status the fetch failed with "
    "(retries within one fetch are one call).",
    ["status"],
)
FETCH_DURATION = Histogram(
    "imagecache_fetch_duration_seconds",
    "Time from a fetch's claim to its image stored or its failure recorded, by outcome.",
    ["outcome"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300),
)
ENQUEUE_FAILURES = Counter(
    "imagecache_enqueue_failures",
    "Fetch tasks the broker did not take (it was down); each is enqueued again once it answers.",
)
KENTIK_ATTEMPTS = Counter(
    "imagecache_kentik_attempts",
    "HTTP calls made to Kentik, each retry one, by Kentik's status (or timeout, "
    "unreachable): what KENTIK_RATE_LIMIT counts.",
    ["status"],
)
KENTIK_PAUSES = Counter(
    "imagecache_kentik_pauses",
    "Pauses of every fetch of the deployment that a 429 (or a 503 with Retry-After) began.",
)
STALE_ANSWERS = Counter(
    "imagecache_stale_answers",
    "GET /image/{id} answered with an older image of the same query because its fetch "
    "failed for a transient cause (STALE_IF_ERROR).",
)
REFRESHES_STARTED = Counter(
    "imagecache_refreshes_started",
    "Refresh-ahead fetches started by a POST that reused an ageing image (REFRESH_AHEAD).",
)
REFRESHES_USED = Counter(
    "imagecache_refreshes_used",
    "POST /requests answered with an image that a refresh-ahead fetch brought.",
)
CHART_VIEWS = Counter(
    "imagecache_chart_views",
    "GET and HEAD /charts/{slug}.{ext} answered by the service (no label per chart).",
)
CHART_REFRESHES = Counter(
    "imagecache_chart_refreshes",
    "Refreshes of chart images started, by what started them: a viewer of an image past "
    "its max_age, the workers keeping a watched image warm, or an operator.",
    ["by"],
)
CHART_REFRESHES_USED = Counter(
    "imagecache_chart_refreshes_used",
    "Chart refreshes whose image a viewer then got.",
)
NEGATIVE_HITS = Counter(
    "imagecache_negative_hits",
    "POST /requests that shared a fetch Kentik refused as bad (400) within NEGATIVE_TTL: "
    "no Kentik call.",
)
WAITERS = Gauge(
    "imagecache_waiters",
    "Requests waiting now for a pending image.",
    multiprocess_mode="livesum",
)


def multiprocess_mode() -> bool:
    return bool(os.environ.get(METRICS_DIR))


def serve_worker_metrics(host: str, port: int, directory: str) -> None:
    """Serve, from a thread, the metrics the processes of a worker write to
    `directory` (Kentik calls, fetch durations), summed: for a worker in a
    container of its own, whose files the web's /metrics cannot read."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    start_http_server(port, addr=host, registry=registry)
