"""Notifications from a fetch to the waiters: PostgreSQL's LISTEN/NOTIFY on
the production profile, datagrams between the processes of the host on SQLite."""

import queue
import time
from collections.abc import Callable

import pytest
from django.db import connection, transaction

from imagecache import notify

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def heard() -> "queue.Queue[int]":
    got: queue.Queue[int] = queue.Queue()
    listening(got.put)
    return got


def listening(on_done: Callable[[int], None]) -> "queue.Queue[int]":
    """A listener that passes notifications on to `on_done` once it hears
    them (it subscribes in its own thread); those of fetch 0, the test's
    probes, to the queue returned."""
    probes: queue.Queue[int] = queue.Queue()
    notify.listen(lambda fetch_id: on_done(fetch_id) if fetch_id else probes.put(fetch_id))
    assert probe_heard(probes), "the listener never subscribed"
    return probes


def probe_heard(probes: "queue.Queue[int]") -> bool:
    """Whether a probe, sent again every 0.2 s, is heard within 10 s."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        notify.fetch_done(0)
        try:
            probes.get(timeout=0.2)
            return True
        except queue.Empty:
            pass
    return False


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

    listening(look)
    notify.fetch_done(1)
    assert channels.get(timeout=5) == [notify.CHANNEL]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_listening_channels()")
        assert cursor.fetchall() == []


def test_a_look_that_fails_and_closes_the_connection_leaves_the_listener_listening(caplog):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite's notifications are datagrams: no connection to lose")
    got: queue.Queue[int] = queue.Queue()

    def look(fetch_id: int) -> None:
        if fetch_id == 1:
            # As the waiter's look does when the database fails it.
            connection.close()
        else:
            with connection.cursor() as cursor:  # a look: connects again if closed
                cursor.execute("SELECT 1")
        got.put(fetch_id)

    probes = listening(look)
    with transaction.atomic():
        # Both come at the commit, most often in one packet: the second's
        # look opens a new connection, on which nothing was listened to.
        notify.fetch_done(1)
        notify.fetch_done(2)
    assert [got.get(timeout=5), got.get(timeout=5)] == [1, 2]
    assert probe_heard(probes), "the listener stopped listening"
    assert not [r for r in caplog.records if r.name == notify.__name__]
