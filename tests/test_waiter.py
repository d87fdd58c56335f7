import threading
import time

from imagecache.waiting.waiter import FetchWaiter


class Board:
    """Stands in for the database: which fetch ids are in flight, and how
    often the waiter asked."""

    def __init__(self, in_flight: set[int]) -> None:
        self.in_flight = set(in_flight)
        self.queries = 0

    def __call__(self, ids: list[int]) -> list[int]:
        self.queries += 1
        return [i for i in ids if i in self.in_flight]


def test_wait_returns_once_the_fetch_leaves_flight():
    board = Board({1})
    waiter = FetchWaiter(board, interval=0.01)
    threading.Timer(0.1, lambda: board.in_flight.discard(1)).start()
    started = time.monotonic()
    assert waiter.wait(1, timeout=5) is True
    assert 0.09 < time.monotonic() - started < 1


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
    time.sleep(0.3)
    board.in_flight.clear()
    for thread in threads:
        thread.join()
    assert results == [True] * 200
    # ~0.3 s at one query per 20 ms tick, whatever the number of waiters.
    assert board.queries < 40


def test_waiter_survives_a_failing_query():
    calls = {"n": 0}

    def flaky(ids: list[int]) -> list[int]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("database is locked")
        return []

    waiter = FetchWaiter(flaky, interval=0.01)
    assert waiter.wait(1, timeout=5) is True
    assert calls["n"] >= 2


def test_idle_waiter_does_not_query():
    board = Board(set())
    waiter = FetchWaiter(board, interval=0.01)
    waiter.wait(1, timeout=1)
    after_first = board.queries
    time.sleep(0.1)
    assert board.queries == after_first


def wait_for(condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the deadline"
        time.sleep(0.005)


def test_a_wake_looks_at_once_and_releases_only_a_fetch_out_of_flight():
    board = Board({1})
    # A tick far longer than the deadlines: only the wakes make it look.
    waiter = FetchWaiter(board, interval=600)
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(waiter.wait(1, timeout=600)))
    thread.start()
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
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(waiter.wait(1, timeout=600)))
    thread.start()
    wait_for(lambda: board.queries >= 1)
    looked = board.queries
    waiter.wake(2)
    board.in_flight.discard(1)
    waiter.wake(1)
    thread.join(timeout=10)
    assert results == [True]
    # The wake for 2 made no look of its own before the one for 1.
    assert board.queries <= looked + 1
