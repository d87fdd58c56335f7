"""Fetch tasks onto django-q2's queue.

The task is named by its dotted path, a string: enqueuing imports neither the
task module nor the fetch pipeline behind it (and so not the Kentik client).
"""

import functools
import os

from django.conf import settings
from django.utils import timezone
from django_q.brokers import Broker, get_broker
from django_q.tasks import async_task

from imagecache.models import Fetch

# What queued tasks store: it must keep naming `imagecache.tasks.fetch_image`.
FETCH_TASK = "imagecache.tasks.fetch_image"


def fetch_enqueue(*, fetch_id: int) -> None:
    """Put a fetch's task on the queue (again), noting when."""
    Fetch.objects.filter(pk=fetch_id).update(enqueued_at=timezone.now())
    task_enqueue(fetch_id=fetch_id)


def task_enqueue(*, fetch_id: int) -> None:
    """Put a fetch's task on the queue; its `enqueued_at` is the caller's."""
    async_task(
        FETCH_TASK,
        fetch_id,
        task_name=f"fetch-{fetch_id}",
        timeout=settings.FETCH_TASK_TIMEOUT,
        broker=broker(),
    )


@functools.cache
def broker() -> Broker:
    """One broker per process. Without one, `async_task` makes a broker per
    task, and with Redis a new connection: 2 ms of each new request's 6."""
    return get_broker()


# A forked process (gunicorn's and django-q2's workers) makes its own.
os.register_at_fork(after_in_child=broker.cache_clear)
