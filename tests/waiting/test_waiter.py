import threading
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from imagecache.errors import EntryNotFound
from imagecache.models import Entry, Fetch, FetchState
from imagecache.selectors.images import entry_get
from imagecache.services.entries import entry_create
from imagecache.waiting import ready
from imagecache.waiting.waiter import FetchWaiter, Look
from tests.harness.data import NOW, QUERY
from tests.harness.service import wait_for


class Board:
    """Stands in for the database: which fetch ids are in flight, and how
    often the waiter asked."""

    def __init__(self, in_flight: set[int]) -> None:
        self.in_flight = set(in_flight)
        self.queries = 0
        self.seen: list[list[int]] = []
        self.lookers: set[str] = set()

    def __call__(self, ids: list[int]) -> Look:
        self.seen.append(list(ids))
        self.lookers.add(threading.current_thread().name)
        self.queries += 1
        return Look(in_flight={i for i in ids if i in self.in_flight})


def waiting(
    waiter: FetchWaiter, fetch_id: int, timeout: float
) -> tuple[threading.Thread, list[bool]]:
    """A request waiting on `fetch_id` in a thread of its own, and where its
    answer will be."""
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(waiter.wait(fetch_id, timeout)))
    thread.start()
    return thread, results


def test_wait_returns_once_the_fetch_leaves_flight():
    board = Board({1})
    waiter = FetchWaiter(board, interval=0.01)
    thread, results = waiting(waiter, 1, timeout=60)
    # It looks, tick after tick, and keeps waiting while the fetch is in flight.
    wait_for(lambda: board.queries >= 3)
    assert results == []
    board.in_flight.discard(1)
    thread.join(timeout=60)
    assert results == [True]


def test_wait_times_out_while_the_fetch_stays_in_flight():
    waiter = FetchWaiter(Board({1}), interval=0.01)
    assert waiter.wait(1, timeout=0.1) is False
    assert waiter.watched_count == 0


def test_many_waiters_cost_one_query_per_tick():
    board = Board({1, 2})
    waiter = FetchWaiter(board, interval=0.02)
    results: list[bool] = []
    threads = [
        threading.Thread(target=lambda i=i: results.append(waiter.wait(1 + i % 2, timeout=5)))
        for i in range(200)
    ]
    for thread in threads:
        thread.start()
    wait_for(lambda: waiter.watched_count == 200)
    before = board.queries
    wait_for(lambda: board.queries >= before + 3)
    board.in_flight.clear()
    for thread in threads:
        thread.join()
    assert results == [True] * 200
    # Each look, made by the waiter's one thread, covered both fetches of all
    # 200 waiters: one query per tick, whatever the number of waiters.
    assert board.lookers == {"fetch-waiter"}
    assert all(sorted(ids) == [1, 2] for ids in board.seen[before:])


def test_waiter_survives_a_failing_query():
    calls = {"n": 0}

    def flaky(ids: list[int]) -> Look:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("database is locked")
        return Look(in_flight=set())

    waiter = FetchWaiter(flaky, interval=0.01)
    assert waiter.wait(1, timeout=5) is True
    assert calls["n"] >= 2


def test_idle_waiter_does_not_query():
    board = Board(set())
    waiter = FetchWaiter(board, interval=0.01)
    assert waiter.wait(1, timeout=60) is True
    # Its thread finds nothing to watch and blocks until a request waits
    # again: no look, however long it stays so.
    wait_for(lambda: not waiter._work.is_set())
    idle = board.queries
    assert waiter.wait(2, timeout=60) is True
    assert board.queries > idle


def test_a_wake_looks_at_once_and_releases_only_a_fetch_out_of_flight():
    board = Board({1})
    # A tick far longer than the deadlines: only the wakes make it look.
    waiter = FetchWaiter(board, interval=600)
    thread, results = waiting(waiter, 1, timeout=600)
    wait_for(lambda: waiter.watched_count == 1 and board.queries >= 1)
    # A wake for a fetch still in flight (another deployment's, or early) is
    # a look, not an answer.
    looked = board.queries
    waiter.wake(1)
    wait_for(lambda: board.queries > looked)
    assert results == [] and thread.is_alive()
    board.in_flight.discard(1)
    waiter.wake(1)
    thread.join(timeout=10)
    assert results == [True]


def test_a_wake_for_an_id_nobody_waits_on_does_not_look():
    board = Board({1})
    waiter = FetchWaiter(board, interval=600)
    thread, results = waiting(waiter, 1, timeout=600)
    wait_for(lambda: board.queries >= 1)
    looked = board.queries
    waiter.wake(2)
    board.in_flight.discard(1)
    waiter.wake(1)
    thread.join(timeout=10)
    assert results == [True]
    # The wake for 2 made no look of its own before the one for 1.
    assert board.queries <= looked + 1


def test_a_wake_looks_in_the_callers_thread():
    board = Board({1})
    looked_in: list[threading.Thread] = []

    def look(ids: list[int]) -> Look:
        looked_in.append(threading.current_thread())
        return board(ids)

    waiter = FetchWaiter(look, interval=600)
    thread, results = waiting(waiter, 1, timeout=600)
    wait_for(lambda: waiter.watched_count == 1 and board.queries >= 1)
    board.in_flight.discard(1)
    # The listener's thread (here, this one) looks and wakes the request
    # itself: the waiter's thread, on a 600 s tick, never looks again.
    waiter.wake(1)
    thread.join(timeout=10)
    assert results == [True]
    assert looked_in[-1] is threading.current_thread()


def test_a_wake_whose_look_fails_leaves_it_to_the_waiters_thread():
    board = Board({1})
    failing = {"next": False}

    def look(ids: list[int]) -> Look:
        if failing["next"]:
            failing["next"] = False
            raise RuntimeError("database is locked")
        return board(ids)

    waiter = FetchWaiter(look, interval=600)
    thread, results = waiting(waiter, 1, timeout=600)
    wait_for(lambda: waiter.watched_count == 1 and board.queries >= 1)
    board.in_flight.discard(1)
    failing["next"] = True
    waiter.wake(1)
    thread.join(timeout=10)
    assert results == [True]
    assert board.queries >= 2


# --- The waiter of the web processes, wired to the database -------------------


def test_a_look_hands_the_row_it_read_to_every_request_it_wakes():
    rows = {1: "in flight"}
    waiter = FetchWaiter(
        lambda ids: Look(
            in_flight={i for i in ids if rows.get(i) == "in flight"},
            settled={i: rows[i] for i in ids if rows.get(i) not in (None, "in flight")},
        ),
        interval=600,
    )
    results: list[tuple[bool, object]] = []
    threads = [
        threading.Thread(target=lambda: results.append(waiter.wait_row(1, timeout=600)))
        for _ in range(20)
    ]
    for thread in threads:
        thread.start()
    wait_for(lambda: waiter.watched_count == 20)
    rows[1] = "ready"
    waiter.wake(1)
    for thread in threads:
        thread.join(timeout=10)
    assert results == [(True, "ready")] * 20
    # Gone with its last waiter.
    assert waiter.watched_count == 0
    # A fetch gone from the database wakes its requests without a row; one
    # still in flight when the wait runs out, too.
    assert waiter.wait_row(2, timeout=600) == (True, None)
    rows[3] = "in flight"
    assert waiter.wait_row(3, timeout=0.05) == (False, None)


class FirstLookInFlight:
    """A look that sees fetch 1 in flight the first time only: a later look
    that sees it out of flight is the poll's (no wake-up comes)."""

    def __init__(self) -> None:
        self.looks = 0

    def __call__(self, ids: list[int]) -> Look:
        self.looks += 1
        return Look(in_flight={1} & set(ids) if self.looks == 1 else set())


def test_a_waiter_that_cannot_listen_polls_at_its_own_interval():
    waiter = FetchWaiter(
        FirstLookInFlight(), interval=0.01, heard_interval=600, listen=lambda wake: None
    )
    assert waiter.wait(1, timeout=60) is True
    assert waiter.poll_interval == 0.01


def test_a_waiter_that_listens_polls_only_at_the_heard_interval():
    look = FirstLookInFlight()
    waiter = FetchWaiter(look, interval=0.01, heard_interval=600, listen=lambda wake: object())
    assert waiter.wait(1, timeout=0.2) is False
    assert (look.looks, waiter.poll_interval) == (1, 600)


@pytest.mark.django_db(transaction=True)
def test_a_web_process_without_a_wake_up_socket_polls_at_waiter_poll_interval(settings, tmp_path):
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL's listener needs no socket")
    settings.WAKE_DIR = tmp_path / "a file"
    settings.WAKE_DIR.write_bytes(b"")  # no directory of sockets can be made there
    settings.WAITER_POLL_INTERVAL = 0.05
    ready.waiter.cache_clear()
    try:
        # A fetch that does not exist is out of flight at the first look.
        assert ready.waiter().wait(10**9, timeout=60) is True
        assert ready.waiter().poll_interval == 0.05
    finally:
        ready.waiter.cache_clear()


def waited_entry(n: int) -> Entry:
    """A pending entry as its request read it before waiting."""
    created = entry_create(api_query={**QUERY, "n": n}, ttl=3600)
    return entry_get(entry_id=created.pk)


@pytest.mark.django_db
def test_the_requests_a_look_wakes_take_the_fetch_it_read_without_a_query_each():
    with time_machine.travel(NOW, tick=False):
        entry = waited_entry(1)
        assert ready._fetches_in_flight([entry.fetch_id]).in_flight == {entry.fetch_id}
        Fetch.objects.filter(pk=entry.fetch_id).update(state=FetchState.READY, size=3)
        look = ready._fetches_in_flight([entry.fetch_id])
        assert look.in_flight == set()
        with CaptureQueriesContext(connection) as queries:
            answers = [
                ready._entry_after_wait(waited_copy(entry), look.settled[entry.fetch_id])
                for _ in range(100)
            ]
        assert not queries.captured_queries
        assert {(a.fetch.state, a.fetch.size) for a in answers} == {(FetchState.READY, 3)}


@pytest.mark.django_db
def test_a_woken_request_without_a_row_or_whose_entry_expired_reads_again():
    with time_machine.travel(NOW, tick=False):
        entry = waited_entry(1)
        # The wait ran out: no row, read again.
        with CaptureQueriesContext(connection) as queries:
            again = ready._entry_after_wait(waited_copy(entry), None)
        assert again.fetch.state == FetchState.PENDING
        assert len(queries.captured_queries) == 1
        Fetch.objects.filter(pk=entry.fetch_id).update(state=FetchState.READY)
        settled = ready._fetches_in_flight([entry.fetch_id]).settled[entry.fetch_id]
    # Expired during the wait: not found, as before it.
    with time_machine.travel(NOW + timedelta(seconds=3601), tick=False):
        with pytest.raises(EntryNotFound):
            ready._entry_after_wait(waited_copy(entry), settled)


def waited_copy(entry: Entry) -> Entry:
    """Each waiting request holds an entry object of its own."""
    return Entry(
        id=entry.pk, fetch=entry.fetch, created_at=entry.created_at, expires_at=entry.expires_at
    )
