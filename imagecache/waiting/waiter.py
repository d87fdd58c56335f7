"""One waiter per process for the requests that wait on pending fetches.

A request that waits registers the fetch id and blocks on an Event. A single
thread looks at every watched id with one query per tick and wakes the
requests whose fetch left the in-flight states, so a thousand waiters cost
one query per tick, not a thousand. A fetch that a listener hears of (a
NOTIFY, a datagram) is looked at in the listener's thread, at once.
"""

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from imagecache.ops import metrics

logger = logging.getLogger(__name__)

Reap = Callable[[list[int]], object]


@dataclass(frozen=True)
class Look:
    """What one look saw: the ids still in flight, and the rows it read of
    those that left flight, which the requests it wakes take (one read for
    all of a fetch's waiters, not one each)."""

    in_flight: set[int]
    settled: dict[int, Any] = field(default_factory=dict)


LookAt = Callable[[list[int]], Look]


class FetchWaiter:
    def __init__(
        self,
        look: LookAt,
        interval: float,
        reap: Reap | None = None,
        reap_interval: float = 5.0,
        listen: Callable[[Callable[[int], None]], object] | None = None,
        heard_interval: float | None = None,
    ) -> None:
        """`look(ids)` tells which of `ids` are still in flight, with the rows
        of the others (one query).

        `reap(ids)`, called every `reap_interval` while there are waiters,
        takes over the watched fetches whose worker died, so that a waiting
        client does not depend on the periodic reaper's minute.

        `listen(wake)`, started once per process, pushes fetch ids that left
        flight (PostgreSQL NOTIFY, SQLite's wake-up sockets); it returns None
        when it cannot. While it listens the poll is only a fallback, every
        `heard_interval`; a process that cannot listen polls every `interval`.
        """
        self._look = look
        self._interval = interval
        self._unheard_interval = interval
        self._heard_interval = interval if heard_interval is None else heard_interval
        self._reap = reap
        self._reap_interval = reap_interval
        self._last_reap = 0.0
        self._listen = listen
        self._lock = threading.Lock()
        # Per fetch id: the event its requests wait on, how many they are, and
        # the row the look read once it left flight.
        self._watched: dict[int, tuple[threading.Event, int, Any]] = {}
        self._work = threading.Event()
        # Set by `wake`: the next look is now.
        self._poke = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def wait(self, fetch_id: int, timeout: float) -> bool:
        """Block until the fetch is no longer in flight; False on timeout."""
        return self.wait_row(fetch_id, timeout)[0]

    def wait_row(self, fetch_id: int, timeout: float) -> tuple[bool, Any]:
        """As `wait`, with the row of the fetch that the look read when it saw
        it leave flight (None without one)."""
        with self._lock:
            event, count, row = self._watched.get(fetch_id, (threading.Event(), 0, None))
            self._watched[fetch_id] = (event, count + 1, row)
            self._ensure_thread()
        self._work.set()
        if not count:
            # A new id is looked at now, not at the next tick: its fetch may
            # have left flight before this process listened.
            self._poke.set()
        try:
            with metrics.WAITERS.track_inprogress():
                left = event.wait(timeout)
        finally:
            with self._lock:
                event, count, row = self._watched[fetch_id]
                if count == 1:
                    del self._watched[fetch_id]
                else:
                    self._watched[fetch_id] = (event, count - 1, row)
        return left, row if left else None

    def wake(self, fetch_id: int) -> None:
        """A fetch left flight: look at it at once, in the caller's thread
        (the listener's), rather than at the next tick: a wake-up of the
        waiter's thread less between the news and the requests.

        The look, not the message, wakes the requests: a message may come
        from another deployment sharing the channel, or before the change is
        visible here. A look that fails leaves it to the waiter's thread."""
        with self._lock:
            watched = fetch_id in self._watched
        if not watched:
            return
        try:
            look = self._look([fetch_id])
        except Exception:
            logger.warning("A wake's look failed; the waiter's thread looks again", exc_info=True)
            self._poke.set()
            return
        self._settle([fetch_id], look)

    @property
    def poll_interval(self) -> float:
        """How often this process's thread looks without news, in seconds."""
        return self._interval

    @property
    def watched_count(self) -> int:
        with self._lock:
            return sum(count for _, count, _ in self._watched.values())

    def _ensure_thread(self) -> None:
        # A forked child inherits the object but not the thread.
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            self._pid = os.getpid()
            # Listening before the first look: a change after it is heard.
            heard = self._listen is not None and self._listen(self.wake) is not None
            self._interval = self._heard_interval if heard else self._unheard_interval
            self._thread = threading.Thread(target=self._run, name="fetch-waiter", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            self._work.wait()
            # Before the ids are taken: an id added after them pokes again.
            self._poke.clear()
            with self._lock:
                ids = list(self._watched)
                if not ids:
                    self._work.clear()
                    continue
            try:
                if (
                    self._reap is not None
                    and time.monotonic() - self._last_reap > self._reap_interval
                ):
                    self._last_reap = time.monotonic()
                    self._reap(ids)
                look = self._look(ids)
            except Exception:  # the waiter must outlive a database hiccup
                logger.exception("The fetch waiter could not read the pending fetches")
                time.sleep(max(self._interval, 0.5))
                continue
            self._settle(ids, look)
            self._poke.wait(self._interval)

    def _settle(self, ids: list[int], look: Look) -> None:
        """Wake the requests of those of `ids` that the look saw out of flight."""
        with self._lock:
            for fetch_id in ids:
                if fetch_id not in look.in_flight and fetch_id in self._watched:
                    event, count, _ = self._watched[fetch_id]
                    self._watched[fetch_id] = (event, count, look.settled.get(fetch_id))
                    event.set()
