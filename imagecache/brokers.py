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
from datetime import timedelta

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.utils import timezone
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.models import OrmQ

from imagecache import wake

CHANNEL = "queue"

# ORM.dequeue's read and lock, as one statement (SQLite >= 3.35, PostgreSQL).
# Written out: the queue's claim; the ORM's read and updates, built in a
# pusher woken cold, added 15 ms to every new query on SQLite.
_TAKE = """
UPDATE {table} SET lock = %s
WHERE key = %s AND lock < %s AND id IN (
    SELECT id FROM {table} WHERE key = %s AND lock < %s ORDER BY id LIMIT %s
)
RETURNING id, payload
"""

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
        """ORM.dequeue in one statement, and for its sleep on an empty queue.

        ORM reads the first tasks and then locks each with an update of its
        own (a lost race leaves it to the other cluster). Here one
        UPDATE ... RETURNING locks and hands out the first BULK tasks whose
        lock is past; a cluster that raced it finds them locked already (the
        outer condition is checked again on the row it waited for)."""
        self.get_connection()  # as ORM: a stale connection closed first
        database = connections[Conf.ORM or DEFAULT_DB_ALIAS]
        now = timezone.now()
        until = database.ops.adapt_datetimefield_value(now + timedelta(seconds=Conf.RETRY))
        past = database.ops.adapt_datetimefield_value(now)
        with database.cursor() as cursor:
            cursor.execute(
                _TAKE.format(table=OrmQ._meta.db_table),
                [until, self.list_key, past, self.list_key, past, Conf.BULK],
            )
            taken = sorted((int(pk), payload) for pk, payload in cursor.fetchall())
        if taken:
            return taken
        self._wait(Conf.POLL)
        return None

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
