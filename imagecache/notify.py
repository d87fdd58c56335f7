"""Fetch state changes, pushed to every web process.

On PostgreSQL (LISTEN/NOTIFY) the fetch notifies in the same transaction as
its state change, so the notification leaves exactly when the change is
visible, and each web process listens on one connection of its own.
Notifications are lost while a listener reconnects, so the waiter keeps a
slow poll as well. On SQLite, whose processes share one host, a datagram to
each web process's socket (`imagecache.wake`) once the change commits; the
slow poll catches what it cannot reach.
"""

import logging
import threading
import time
from collections.abc import Callable

from django.conf import settings
from django.db import connection, connections, transaction

from imagecache import wake

logger = logging.getLogger(__name__)

CHANNEL = "imagecache_fetch_done"
# The channel of the web processes' sockets (SQLite).
WAKE_CHANNEL = "fetch"


def available() -> bool:
    return connection.vendor in ("postgresql", "sqlite")


def fetch_done(fetch_id: int) -> None:
    """Notify the listeners that a fetch left flight; sent when the caller's
    transaction commits, at once outside one (its change committed already)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, str(fetch_id)])
    elif connection.vendor == "sqlite":
        payload = str(fetch_id).encode()
        transaction.on_commit(lambda: wake.send(settings.WAKE_DIR, WAKE_CHANNEL, payload))


def told(update: str) -> str | None:
    """`update`, an UPDATE of fetches, as one statement that also notifies the
    listeners of each fetch it changes, at its commit: a round trip fewer than
    `fetch_done` after it, and the two succeed or fail together. None where
    the database cannot (SQLite: `fetch_done` after it). Its rows count the
    fetches changed."""
    if connection.vendor != "postgresql":
        return None
    notified = f"SELECT pg_notify('{CHANNEL}', id::text) FROM changed"
    return f"WITH changed AS ({update} RETURNING id) {notified}"


def listen(on_done: Callable[[int], None]) -> threading.Thread | None:
    """Start a daemon thread that calls `on_done(fetch_id)` for each
    notification; None if this process cannot listen (the poll remains)."""
    if connection.vendor == "postgresql":
        target: Callable[..., None] = _listen
        args: tuple[object, ...] = (on_done,)
    else:
        # Bound here, before the caller's first look: nothing sent after it is missed.
        try:
            listener = wake.Listener(settings.WAKE_DIR, WAKE_CHANNEL)
        except OSError:
            logger.exception("No wake-up socket in %s: the waiter polls", settings.WAKE_DIR)
            return None
        target, args = _listen_local, (listener, on_done)
    thread = threading.Thread(target=target, args=args, name="fetch-listener", daemon=True)
    thread.start()
    return thread


def _listen_local(listener: wake.Listener, on_done: Callable[[int], None]) -> None:
    while True:
        for payload in listener.wait(60):
            if payload.isdigit():
                on_done(int(payload))


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
