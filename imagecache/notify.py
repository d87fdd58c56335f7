"""Fetch state changes, pushed to every web process.

On PostgreSQL (LISTEN/NOTIFY) the fetch notifies in the same transaction as
its state change, so the notification leaves exactly when the change is
visible, and each web process listens on one connection of its own.
Notifications are lost while a listener reconnects, so the waiter keeps a
slow poll as well. On SQLite, whose processes share one host, a datagram to
each web process's socket (`imagecache.wake`) once the change commits; the
slow poll catches what it cannot reach.
"""

import contextlib
import copy
import logging
import threading
import time
from collections.abc import Callable

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.utils import load_backend

from imagecache import wake

logger = logging.getLogger(__name__)

CHANNEL = "imagecache_fetch_done"
# The channel of the web processes' sockets (SQLite).
WAKE_CHANNEL = "fetch"


def fetch_done(fetch_id: int) -> None:
    """Notify the listeners that a fetch left flight; sent when the caller's
    transaction commits, at once outside one (its change committed already)."""
    if connection.vendor == "postgresql":
        # Written out: the ORM has no NOTIFY (nor LISTEN, below).
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
    """Hear the notifications on a connection of this thread's own, and run
    `on_done` on it: the look that a notification starts goes to the server
    process that has just woken to send it, not to a pool connection idle
    since the fetch began, which would have to wake first."""
    database = _own_connection()
    while True:
        try:
            with database.cursor() as cursor:  # connects again after a close
                cursor.execute(f"LISTEN {CHANNEL}")
            listened = database.connection
            # Until a look closes the connection (the waiter's does when the
            # database fails it), and perhaps the next look opens another,
            # on which nothing is listened to: then LISTEN again at once.
            while database.connection is listened:
                # Those that come during `on_done`'s look wait in psycopg's
                # backlog for the next round; the generator holds the
                # connection's lock, so it is left before the look.
                heard = [n.payload for n in listened.notifies(stop_after=1)]
                for payload in heard:
                    if payload.isdigit():
                        on_done(int(payload))
        except Exception:  # the listener must outlive a database restart
            logger.exception("The fetch listener lost its connection; reconnecting")
            with contextlib.suppress(Exception):
                database.close()
            time.sleep(1)


def _own_connection() -> BaseDatabaseWrapper:
    """This thread's connection for the default database, outside the web
    process's pool (it is held for good, and a LISTEN must not go back to the
    pool with it)."""
    settings_dict = copy.deepcopy(connections.settings[DEFAULT_DB_ALIAS])
    settings_dict["OPTIONS"].pop("pool", None)
    settings_dict["CONN_MAX_AGE"] = None
    backend = load_backend(settings_dict["ENGINE"])
    database: BaseDatabaseWrapper = backend.DatabaseWrapper(settings_dict, DEFAULT_DB_ALIAS)
    connections[DEFAULT_DB_ALIAS] = database
    return database
