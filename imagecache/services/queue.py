"""Fetch tasks onto django-q2's queue.

The task is named by its dotted path, a string: enqueuing imports neither the
task module nor the fetch pipeline behind it (and so not the Kentik client).
"""

import functools
import logging
import os
import threading
import time

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone
from django_q.brokers import Broker, get_broker
from django_q.tasks import async_task

from imagecache.models import Fetch, FetchState
from imagecache.ops import metrics

logger = logging.getLogger(__name__)

# What queued tasks store: it must keep naming `imagecache.tasks.fetch_image`.
FETCH_TASK = "imagecache.tasks.fetch_image"


def fetch_enqueue(*, fetch_id: int) -> bool:
    """Put a fetch's task on the queue (again), noting when; whether the broker took it."""
    Fetch.objects.filter(pk=fetch_id).update(enqueued_at=timezone.now())
    return task_enqueue(fetch_id=fetch_id)


def task_enqueue(*, fetch_id: int) -> bool:
    """Put a fetch's task on the queue; its `enqueued_at` is the caller's.

    A broker that does not answer does not fail the caller (a POST whose
    entry and fetch are committed): the fetch is marked never enqueued, and
    this process enqueues it again as soon as the broker answers
    (`enqueue_retry`); the maintenance reap and recovery at start-up take
    up any that a process left when it stopped.
    """
    try:
        async_task(
            FETCH_TASK,
            fetch_id,
            task_name=f"fetch-{fetch_id}",
            timeout=settings.FETCH_TASK_TIMEOUT,
            # A fetch's outcome is its row (and its log line): no result saved.
            save=False,
            broker=broker(),
        )
    # Each of django-q2's brokers (the ORM, Redis, SQS, ...) fails with errors
    # of its own client when it is down.
    except Exception as exc:  # noqa: BLE001
        metrics.ENQUEUE_FAILURES.inc()
        logger.warning(
            "fetch %s: the broker did not take its task (%s: %s); enqueuing again when it answers",
            fetch_id,
            type(exc).__name__,
            exc,
        )
        Fetch.objects.filter(pk=fetch_id, state=FetchState.PENDING).update(enqueued_at=None)
        _retrier.start()
        return False
    return True


class _Retrier:
    """One thread per process that enqueues again, every ENQUEUE_RETRY_INTERVAL,
    the pending fetches whose enqueue failed, until there are none."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="enqueue-retry", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(settings.ENQUEUE_RETRY_INTERVAL)
            try:
                left = enqueue_retry()
            except DatabaseError:
                logger.warning("enqueue retry: the database did not answer")
                left = True
            finally:
                connection.close()
            if not left:
                with self._lock:
                    self._thread = None
                return


_retrier = _Retrier()


def enqueue_retry() -> bool:
    """Enqueue the pending fetches that were never enqueued; whether any is left."""
    never = Fetch.objects.filter(state=FetchState.PENDING, enqueued_at__isnull=True)
    for fetch_id in never.order_by("created_at").values_list("pk", flat=True)[:100]:
        if not fetch_enqueue(fetch_id=fetch_id):
            return True  # still down: the next round tries again
    return never.exists()


@functools.cache
def broker() -> Broker:
    """One broker per process. Without one, `async_task` makes a broker per
    task, and with Redis a new connection: 2 ms of each new request's 6."""
    return get_broker()


# A forked process (gunicorn's and django-q2's workers) makes its own.
os.register_at_fork(after_in_child=broker.cache_clear)
