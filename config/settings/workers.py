"""Fetches and the processes that run them: leases and attempts, the fetch
task's timeout, django-q2's cluster and broker, and how the processes of a
host find each other (cluster reports, wake-up sockets).
"""

import hashlib
import tempfile
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from imagecache.wake import MAX_DIRECTORY

from .database import DATABASES
from .inputs import INPUTS, env_number, env_str
from .kentik import KENTIK_API_RETRIES, KENTIK_API_TIMEOUT, KENTIK_RETRY_AFTER_MAX

# How often the per-process waiter looks at the pending fetches it watches
# without a notification; with one (PostgreSQL NOTIFY, or the wake-up sockets
# on SQLite) it looks at once and polls only every max(this, 1 s).
WAITER_POLL_INTERVAL = env_number("WAITER_POLL_INTERVAL", 0.02, minimum=0.001)

# A worker holds a fetch for this long and renews it every third of it; a
# fetch whose lease ran out is taken over by the reaper.
FETCH_LEASE = env_number("FETCH_LEASE", 15.0, minimum=1)
# After this many claims (workers that died or timed out on it), a fetch is
# recorded as failed instead of being tried again: a poisoned query must not
# cycle through the workers forever.
FETCH_MAX_ATTEMPTS = env_number("FETCH_MAX_ATTEMPTS", 3, minimum=1, integer=True)

# An image Kentik has answered is recorded for this long while the database
# does not answer (an outage, a failover), rather than asked of Kentik again.
FETCH_RECORD_PATIENCE = env_number("FETCH_RECORD_PATIENCE", 60, minimum=0)

# A queue worker writes its heartbeat (WorkerHeartbeat) this often; /readyz
# counts a worker whose last one is younger than 5 of these.
WORKER_HEARTBEAT_INTERVAL = env_number("WORKER_HEARTBEAT_INTERVAL", 1.0, minimum=0.1)

# How often a process enqueues again the fetches whose enqueue the broker
# refused (it was down), until it takes them.
ENQUEUE_RETRY_INTERVAL = env_number("ENQUEUE_RETRY_INTERVAL", 2.0, minimum=0.01)

# How long a fetch task waits for one of the KENTIK_MAX_CONCURRENCY slots
# before it leaves the fetch pending for the reaper to enqueue again.
KENTIK_SLOT_WAIT = 60

# The longest one fetch task may take: a wait for a slot, every attempt timing
# out with the longest sleep between attempts, plus room to store the image
# and to wait for the database to record it.
FETCH_TASK_TIMEOUT = int(
    KENTIK_SLOT_WAIT
    + (KENTIK_API_RETRIES + 1) * KENTIK_API_TIMEOUT
    + KENTIK_API_RETRIES * KENTIK_RETRY_AFTER_MAX
    + FETCH_RECORD_PATIENCE
    + 30
)

# `manage.py serve --worker` (the image's `worker` role) serves its workers'
# metrics on this port, 0: not at all (the web's /metrics cannot read them
# from another container).
WORKER_METRICS_PORT = env_number("WORKER_METRICS_PORT", 0, integer=True)

# Redis as django-q2's broker when REDIS_URL is set; else the database (ORM).
REDIS_URL = env_str("REDIS_URL", "")
if REDIS_URL and not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured("REDIS_URL must be a redis://, rediss:// or unix:// URL")
Q_BROKER: dict[str, Any] = {"redis": REDIS_URL} if REDIS_URL else {"orm": "default"}

Q_BROKER_CLASS = {} if REDIS_URL else {"broker_class": "imagecache.brokers.WakingORM"}

Q_CLUSTER = {
    # Deployments that share one Redis need names of their own.
    "name": env_str("Q_NAME", "imagecache"),
    # Fetch tasks mostly wait on Kentik, so more than one per core; as many as
    # KENTIK_MAX_CONCURRENCY calls can be in flight. Forked from one process,
    # each costs about 4 MiB of its own.
    "workers": env_number("Q_WORKERS", 4, minimum=1, integer=True),
    **Q_BROKER,
    # The ORM broker woken by each enqueue on this host (imagecache/brokers.py).
    **Q_BROKER_CLASS,
    # How long an idle ORM broker waits between polls when no enqueue wakes it
    # (one from another host): the pickup delay of such a fetch.
    "poll": 0.02,
    "timeout": FETCH_TASK_TIMEOUT,
    # The broker hands a task out again only after `retry`: it must outlast
    # the task, or a slow fetch would run twice.
    "retry": FETCH_TASK_TIMEOUT + 60,
    "max_attempts": 3,
    "catch_up": False,
    "ack_failures": True,
    "save_limit": 1000,
    "label": "Task queue",
    # With the ORM broker, clusters report (for /readyz) through a cache that
    # every process can read; see CACHES below.
    **({} if REDIS_URL else {"cache": "django_q"}),
    # The test profile runs tasks in the process that enqueues them.
    **({"sync": True} if INPUTS.get("Q_SYNC") else {}),
}


# /readyz needs to know that a worker is alive. Every django-q2 cluster saves
# a report (its Stat) every half second, expiring after 3 s: with Redis in
# Redis, which every host sees; with the ORM broker in Django's cache, which
# is per process by default (LocMemCache), so the web would never see the
# worker. A database cache would need `createcachetable` on every deployment
# path and a write every half second on SQLite; files cost neither. With the
# ORM broker the reports go to a directory named after the database: beside
# the SQLite file (`<file>-q-stats`), or in the temp directory for another
# database, so that the processes of one host and one database see each
# other's, and no other deployment's. Use Redis when the workers run on other
# hosts (or containers) than the web.
def cluster_stats_cache(database: dict[str, Any]) -> dict[str, Any]:
    """Django's cache for the cluster reports of the ORM broker on `database`."""
    if database["ENGINE"] == "django.db.backends.sqlite3":
        path = Path(f"{database['NAME']}-q-stats").resolve()
    else:
        identity = "|".join(str(database.get(key, "")) for key in ("HOST", "PORT", "NAME"))
        path = Path(tempfile.gettempdir()) / (
            "imagecache-q-stats-" + hashlib.sha256(identity.encode()).hexdigest()[:16]
        )
    return {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": str(path),
        "TIMEOUT": None,
    }


CACHES: dict[str, dict[str, Any]] = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
}
if not REDIS_URL:
    CACHES["django_q"] = cluster_stats_cache(DATABASES["default"])


# The wake-up sockets of this host's processes (imagecache/wake.py): the ORM
# broker's pusher is woken by an enqueue, and on SQLite each web process's
# waiter by a fetch that left flight. A directory per database: beside the
# SQLite file (processes that share the file share it, containers too), or
# in the temp directory when that path is too long for a socket's name.
def wake_directory(database: dict[str, Any]) -> Path:
    """The directory of the wake-up sockets of the processes using `database`."""
    if database["ENGINE"] == "django.db.backends.sqlite3":
        beside = Path(f"{database['NAME']}-wake").resolve()
        if len(str(beside)) <= MAX_DIRECTORY:
            return beside
        identity = str(beside)
    else:
        identity = "|".join(str(database.get(key, "")) for key in ("HOST", "PORT", "NAME"))
    return Path(tempfile.gettempdir()) / (
        "imagecache-wake-" + hashlib.sha256(identity.encode()).hexdigest()[:16]
    )


WAKE_DIR = wake_directory(DATABASES["default"])
