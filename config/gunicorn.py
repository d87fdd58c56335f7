"""gunicorn settings, from the environment.

gthread workers: a request waiting for a pending image holds a thread, not
the worker, so the worker keeps answering its heartbeat during long waits
(a sync worker would be killed after `timeout`).
"""

import gc
import json
import os
import signal
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from config import gunicorn_internals
from config.web_worker import HeadersFirstWorker
from imagecache.wire import error_body, listen_address

_host, _port = listen_address(os.environ)
bind = f"{_host}:{_port}"

# WEB_WORKER's values: gunicorn's worker class for each.
WEB_WORKERS: Final = {
    # gthread, whose threads take only requests that have arrived whole (a slow
    # client costs a socket, not a thread), and which answers plain GETs of
    # ready images itself (config/web_worker.py).
    "headers-first": "config.web_worker.HeadersFirstWorker",
    # gunicorn's own: behind a proxy that buffers each request whole before it
    # passes it on, no client is slow, and gunicorn's parser is the one to trust.
    "gthread": "gthread",
}


def web_worker_class(environ: Mapping[str, str]) -> str:
    """gunicorn's worker class for WEB_WORKER; a wrong value stops the start."""
    chosen = environ.get("WEB_WORKER", "headers-first")
    if chosen not in WEB_WORKERS:
        raise ValueError(f"WEB_WORKER must be one of {', '.join(WEB_WORKERS)}, not {chosen!r}")
    return WEB_WORKERS[chosen]


worker_class = web_worker_class(os.environ)
HeadersFirstWorker.header_timeout = float(os.environ.get("WEB_HEADER_TIMEOUT", "10"))
# Two per core: the GIL shares a process's CPU among its threads, so cached
# images are answered faster by more processes than cores. With `preload_app`
# an extra process costs about 10 MiB of its own, not 50.
# Each holds up to DB_POOL_SIZE connections on PostgreSQL.
workers = int(os.environ.get("WEB_CONCURRENCY", str(2 * (os.cpu_count() or 1))))
# Django, DRF and the app are imported once, by the master, and the workers
# share those pages (copy-on-write) instead of importing them each, which
# saves most of a worker's private memory. Nothing opens a connection or
# starts a thread at import: each worker makes its own (database pool,
# waiter, broker) on first use. A code change needs a restart, not a HUP.
# WEB_PRELOAD=0 loads it in each worker instead (for comparisons: it answers
# no faster).
preload_app = os.environ.get("WEB_PRELOAD", "1") == "1"
# Each request waiting on a pending image holds one thread.
threads = int(os.environ.get("WEB_THREADS", "64"))
worker_connections = int(os.environ.get("WEB_CONNECTIONS", "1000"))
backlog = 2048
# The worker's heartbeat, not a request's duration (gthread).
timeout = int(os.environ.get("WEB_TIMEOUT", "30"))
# On a restart, requests still waiting get this long to be answered.
graceful_timeout = int(os.environ.get("WEB_GRACEFUL_TIMEOUT", "30"))
keepalive = int(os.environ.get("WEB_KEEPALIVE", "5"))
accesslog = "-" if os.environ.get("WEB_ACCESS_LOG", "1") == "1" else None
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'
errorlog = "-"


def json_logging(access: bool) -> dict[str, Any]:
    """gunicorn's own lines (its error log: starts, workers, tracebacks; and
    its access log) as JSON objects, one per line, as LOG_FORMAT=json makes
    the service's; the access line's fields are its atoms'."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "imagecache.ops.log.JSONFormatter"}},
        "filters": {
            "access_fields": {"()": "imagecache.ops.log.AccessFields"},
            "redact_secrets": {"()": "imagecache.ops.log.RedactSecrets"},
        },
        "handlers": {
            "error": {**handler, "stream": "ext://sys.stderr", "filters": ["redact_secrets"]},
            "access": {**handler, "filters": ["access_fields", "redact_secrets"]},
        },
        # Not gunicorn's default root handler: Django's LOGGING sets the root up.
        "root": {"level": "INFO", "handlers": []},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["error"], "propagate": False},
            # Any logging configuration turns gunicorn's access log on: off
            # (WEB_ACCESS_LOG=0) is no handler.
            "gunicorn.access": {
                "level": "INFO",
                "handlers": ["access"] if access else [],
                "propagate": False,
            },
        },
    }


# LOG_FORMAT as the settings read it (config/settings/ops.py checks its value).
if os.environ.get("LOG_FORMAT", "plain").lower() == "json":
    logconfig_dict = json_logging(access=accesslog is not None)
# X-Forwarded-* headers are trusted only from these addresses (the proxy).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
# One control socket per user would be shared by every gunicorn on the host.
control_socket_disable = True
# The web workers' many threads share a bounded database pool (PostgreSQL).
raw_env = ["DJANGO_DB_POOL=1"]


def write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's own answer to a request it refuses before the service sees it
    (an over-long request line: 414; too many headers: 431; an unreadable
    request: 400) in the service's error format, not as an HTML page."""
    message = f"{reason}: {mesg}" if mesg else reason
    body = json.dumps(error_body(status_int, message)).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        "Cache-Control: no-store\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    gunicorn_internals.write_nonblock(sock, head.encode("latin-1") + body)


# In the master, which reads this file: the workers it forks inherit it.
gunicorn_internals.error_writer_install(write_json_error)


# Prometheus' multiprocess mode (imagecache/ops/metrics.py): every worker writes
# its metrics to files in PROMETHEUS_MULTIPROC_DIR, and /metrics sums them.
# The master prepares the directory before it loads the application (set in its
# environment, the workers inherit it), unless `manage.py serve` did it for
# gunicorn and the qcluster together. The imports are here, not at the top:
# prometheus_client must not be imported before the variable is set. `server`
# and `worker` are gunicorn's Arbiter and Worker, which have no type information.
_metrics_dir_made: Path | None = None


def _metrics_dir_prepare() -> None:
    """Before the application is loaded: with `preload_app` the master imports
    it before `on_starting` runs. Only in gunicorn's master, which loads this
    file as `__config__`, not in a process that imports `config.gunicorn` for
    its values (`manage.py serve`)."""
    global _metrics_dir_made
    from imagecache.ops.metrics_dir import metrics_dir_prepare

    _metrics_dir_made = metrics_dir_prepare(os.environ)


if __name__ == "__config__":
    _metrics_dir_prepare()


def child_exit(server: Any, worker: Any) -> None:
    # A dead worker's waiters are no longer waiting (the gauge is `livesum`);
    # its counters stay in the sums.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    if _metrics_dir_made is not None:
        import shutil

        shutil.rmtree(_metrics_dir_made, ignore_errors=True)


def pre_fork(server: Any, worker: Any) -> None:
    # What the master imported is never collected: out of the collector's
    # reach, its objects' pages stay shared with the workers instead of being
    # copied into each by the collector's writes.
    gc.freeze()


# The stops that a worker must not miss between its fork and its own handlers.
STOPS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


def post_fork(server: Any, worker: Any) -> None:
    """A stop that comes between the fork and the worker's own signal handlers
    goes to the master's handler, copied into the worker, which queues it in
    the worker's copy of the master's queue: lost, and the master would wait
    its graceful timeout (30 s) for a worker that never heard it (a stop just
    after a start, on a busy machine). One that came is taken here; one that
    comes until the worker's handlers are in ends the worker at once."""
    for stop in STOPS:
        signal.signal(stop, lambda *_: os._exit(0))
    if any(pending in STOPS for pending in gunicorn_internals.signals_queued_take(server)):
        os._exit(0)
