"""Notifications from a fetch to the waiters: PostgreSQL's LISTEN/NOTIFY on
the production profile, datagrams between the processes of the host on SQLite."""

import queue
import time

import pytest
from django.db import connection, transaction

from imagecache import notify

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def heard() -> "queue.Queue[int]":
    got: queue.Queue[int] = queue.Queue()
    notify.listen(got.put)
    # The listener subscribes in its own thread: wait until it hears.
    deadline = time.monotonic() + 10
    while True:
        notify.fetch_done(0)
        try:
            got.get(timeout=0.2)
            break
        except queue.Empty:
            assert time.monotonic() < deadline, "the listener never subscribed"
    while not got.empty():
        got.get()
    return got


def test_fetch_done_is_heard_only_once_committed(heard):
    with transaction.atomic():
        notify.fetch_done(42)
        with pytest.raises(queue.Empty):
            heard.get(timeout=0.3)
    assert heard.get(timeout=5) == 42


def test_rolled_back_fetch_done_is_never_heard(heard):
    with pytest.raises(RuntimeError), transaction.atomic():
        notify.fetch_done(7)
        raise RuntimeError("rolled back")
    with pytest.raises(queue.Empty):
        heard.get(timeout=0.5)


def test_notifications_are_available_on_both_databases():
    assert notify.available()


def test_the_look_a_notification_starts_runs_on_the_listening_connection():
    if connection.vendor != "postgresql":
        pytest.skip("SQLite's notifications are datagrams: no server process to wake")
    # The look goes to the server process that has just woken to pass the
    # notification on, not to a pool connection idle since the fetch began;
    # and the LISTEN stays on a connection of the listener's own.
    channels: queue.Queue[list[str]] = queue.Queue()

    def look(fetch_id: int) -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_listening_channels()")
            channels.put([row[0] for row in cursor.fetchall()])

    notify.listen(look)
    deadline = time.monotonic() + 10
    while True:
        notify.fetch_done(0)
        try:
            looked_on = channels.get(timeout=0.2)
            break
        except queue.Empty:
            assert time.monotonic() < deadline, "the listener never subscribed"
    assert looked_on == [notify.CHANNEL]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_listening_channels()")
        assert cursor.fetchall() == []
