"""Fetch state changes, pushed to every web process (PostgreSQL LISTEN/NOTIFY).

On PostgreSQL the fetch notifies in the same transaction as its state change,
so the notification leaves exactly when the change is visible, and each web
process listens on one connection of its own. Notifications are lost while a
listener reconnects, so the waiter keeps a slow poll as well. On SQLite
there is nothing to push: the waiter polls.
"""

import logging
import threading
import time
from collections.abc import Callable

from django.db import connection, connections

logger = logging.getLogger(__name__)

CHANNEL = "imagecache_fetch_done"


def available() -> bool:
    return connection.vendor == "postgresql"


def fetch_done(fetch_id: int) -> None:
    """Notify the listeners that a fetch left flight; sent when the caller's
    transaction commits."""
    if available():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, str(fetch_id)])


def listen(on_done: Callable[[int], None]) -> threading.Thread:
    """Start a daemon thread that calls `on_done(fetch_id)` for each notification."""
    thread = threading.Thread(target=_listen, args=(on_done,), name="fetch-listener", daemon=True)
    thread.start()
    return thread


def _listen(on_done: Callable[[int], None]) -> None:
    import psycopg

    while True:
        try:
            params = connections["default"].get_connection_params()
            with psycopg.connect(**params, autocommit=True) as conn:
                conn.execute(f"LISTEN {CHANNEL}")
                for notification in conn.notifies():
                    if notification.payload.isdigit():
                        on_done(int(notification.payload))
        except Exception:  # the listener must outlive a database restart
            logger.exception("The fetch listener lost its connection; reconnecting")
            time.sleep(1)
