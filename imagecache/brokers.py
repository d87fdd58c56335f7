"""django-q2's ORM broker, woken by each enqueue on this host.

The ORM broker's pusher polls the queue table, sleeping `poll` seconds
between empty polls: on average half of it was every new fetch's pickup
delay on the embedded default. Here an enqueue, once committed, sends a
datagram to the pushers of this host (`imagecache.wake`), and an idle pusher
waits on its socket for at most `poll` instead of sleeping: a task put on the
queue from this host is taken at once; one from elsewhere, at the next poll.
"""

import logging
import os
import time

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_q.brokers.orm import ORM
from django_q.conf import Conf

from imagecache import wake

CHANNEL = "queue"

logger = logging.getLogger(__name__)


class WakingORM(ORM):
    _listener: wake.Listener | None = None
    # The process whose socket could not be made: it polls, as ORM does.
    _failed = 0

    def enqueue(self, task: str) -> int:
        """ORM.enqueue, and a wake-up for this host's pushers once it commits."""
        pk = super().enqueue(task)
        # Outside a transaction (the usual case: queue.task_enqueue runs on
        # commit), at once.
        transaction.on_commit(lambda: wake.send(settings.WAKE_DIR, CHANNEL), using=Conf.ORM)
        return int(pk)

    def dequeue(self) -> list[tuple[int, str]] | None:
        """ORM.dequeue, oldest first, but an empty queue waits on this host's
        wake-up socket for at most POLL rather than sleeping it out."""
        queued = self.get_connection().filter(key=self.list_key, lock__lt=timezone.now())
        tasks = list(queued.order_by("id")[: Conf.BULK])
        if not tasks:
            self._wait(Conf.POLL)
            return None
        # A task whose lock changed since the read went to another cluster.
        return [
            (task.pk, task.payload)
            for task in tasks
            if self.get_connection()
            .filter(id=task.id, lock=task.lock)
            .update(lock=self.timeout(task))
        ]

    def _wait(self, timeout: float) -> None:
        listener = self._listener
        if (listener is None or listener.pid != os.getpid()) and self._failed != os.getpid():
            # Made in the pusher's own process, on its first empty poll.
            try:
                listener = self._listener = wake.Listener(settings.WAKE_DIR, CHANNEL)
            except OSError:
                logger.exception("No wake-up socket in %s: the pusher polls", settings.WAKE_DIR)
                self._failed = os.getpid()
        if listener is None or self._failed == os.getpid():
            time.sleep(timeout)
        else:
            listener.wait(timeout)
