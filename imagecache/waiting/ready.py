"""`GET /image/{id}`'s wait for a pending image, and this process's waiter,
wired to the database, built on first use."""

import functools
import logging
import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

from imagecache import notify
from imagecache.errors import FetchFailed, FetchPending, FetchStillPending
from imagecache.models import IN_FLIGHT, Entry, Fetch, FetchPriority, FetchState
from imagecache.ops import metrics
from imagecache.selectors.images import entry_get, fetch_last_failed_transient, fetch_stale
from imagecache.selectors.shield import kentik_holds
from imagecache.services import housekeeping
from imagecache.waiting.waiter import FetchWaiter, Look

# The Retry-After of a 202 to a client that asked not to wait: it polls, and
# most charts take Kentik a few seconds.
POLL_RETRY_AFTER = 1
# How often a wait with an older image to fall back on looks at the pause.
STALE_LOOK = 1.0

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    """What answers `GET /image/{id}`: the entry's own image, or (stale-if-error)
    the newest older image of its query, with why."""

    entry: Entry
    fetch: Fetch
    # "" for the entry's own image; else why an older one answers: "error=503",
    # "paused" (Kentik asked every fetch to wait, or failed the query's last
    # fetch), "pending" (the wait ran out before the budget let the call go).
    stale: str = ""


def entry_get_ready(*, entry_id: str, wait: float | None = None) -> Answer:
    """The entry's image once it is ready, or an older one of its query when
    Kentik cannot give it one (STALE_IF_ERROR).

    `wait` caps how long a pending image is waited for: ENTRY_WAIT_TIMEOUT when
    None, never more. `wait=0` never blocks: a pending image raises
    FetchStillPending (202) at once. Otherwise raises FetchPending when the
    wait ran out, FetchFailed with Kentik's status, EntryNotFound when the
    entry is gone or expired meanwhile; unless an older image may answer:
    at once when the deployment is paused or the query's last fetch failed
    for a transient cause, else after a transient failure or a wait that ran
    out.
    """
    entry = entry_get(entry_id=entry_id)
    # The older image that may answer for this one, looked up once.
    fallback = fetch_stale(fetch=entry.fetch) if entry.fetch.state != FetchState.READY else None
    if entry.fetch.state in IN_FLIGHT and fallback is not None and held(entry.fetch):
        return stale_answer(entry, fallback, reason="paused")
    if wait == 0 and entry.fetch.state in IN_FLIGHT:
        raise FetchStillPending(
            entry_id=entry.pk, state=str(entry.fetch.state), retry_after=POLL_RETRY_AFTER
        )
    timeout = (
        settings.ENTRY_WAIT_TIMEOUT if wait is None else min(wait, settings.ENTRY_WAIT_TIMEOUT)
    )
    if entry.fetch.state in IN_FLIGHT and timeout > 0:
        if entry.fetch.priority != FetchPriority.WAITED:
            # A client waits on it: first in line for Kentik.
            Fetch.objects.filter(pk=entry.fetch_id, state__in=IN_FLIGHT).update(
                priority=FetchPriority.WAITED
            )
        # With an older image to fall back on, look every STALE_LOOK seconds
        # whether a pause began meanwhile (the client gets that image then).
        deadline = time.monotonic() + timeout
        while True:
            # A long wait must not hold a PostgreSQL connection (one of the
            # pool's). SQLite's is a file handle of this thread, and opening
            # it again would delay the answer.
            if connection.vendor != "sqlite":
                connection.close()
            left = deadline - time.monotonic()
            _, settled = waiter().wait_row(
                entry.fetch_id, min(left, STALE_LOOK) if fallback else left
            )
            entry = _entry_after_wait(entry, settled)
            if entry.fetch.state not in IN_FLIGHT or deadline <= time.monotonic():
                break
            if fallback is not None and kentik_holds(fetch=entry.fetch):
                return stale_answer(entry, fallback, reason="paused")
    fetch = entry.fetch
    if fetch.state == FetchState.READY:
        return Answer(entry, fetch)
    if fetch.state == FetchState.FAILED:
        if fetch.error_transient and fallback is not None:
            return stale_answer(entry, fallback, reason=f"error={fetch.error_status}")
        raise FetchFailed(fetch.error_status or 502, fetch.error_message)
    # Still in line for a Kentik call (the budget, the pause) when the wait ran out.
    if fetch.state == FetchState.PENDING and fallback is not None:
        return stale_answer(entry, fallback, reason="pending")
    if fetch.state == FetchState.PENDING and fetch.error_status:
        # In line again after Kentik spoke for the whole deployment (a 429, an
        # outage): the client hears Kentik's last word, and the fetch stays in
        # line for the next client.
        raise FetchFailed(fetch.error_status, fetch.error_message)
    raise FetchPending(retry_after=max(1, math.ceil(settings.KENTIK_API_TIMEOUT / 4)))


def held(fetch: Fetch) -> bool:
    """Whether to answer with an older image now rather than wait for a
    Kentik that is paused, or that failed the query's last fetch for a
    transient cause."""
    return kentik_holds(fetch=fetch) or fetch_last_failed_transient(fetch=fetch)


def stale_answer(entry: Entry, stale: Fetch, *, reason: str) -> Answer:
    metrics.STALE_ANSWERS.inc()
    logger.info(
        "entry %s: answered with fetch %s's image (stale: %s)",
        entry.pk,
        stale.pk,
        reason,
        extra={"entry_id": entry.pk, "stale_fetch_id": stale.pk, "stale": reason},
    )
    return Answer(entry, stale, stale=reason)


def _fetches_in_flight(fetch_ids: list[int]) -> Look:
    """The waiter's look (one query): those of `fetch_ids` still in flight,
    and the rows of the others, for the requests it wakes: one read for all
    of a fetch's waiters, not one each, when a thousand wait on one chart."""
    try:
        rows = list(Fetch.objects.filter(pk__in=fetch_ids))
    except DatabaseError:
        connection.close()  # reconnect on the next tick
        raise
    return Look(
        in_flight={row.pk for row in rows if row.state in IN_FLIGHT},
        settled={row.pk: row for row in rows if row.state not in IN_FLIGHT},
    )


def _entry_after_wait(entry: Entry, fetch: Fetch | None) -> Entry:
    """The entry once its wait ends: with its fetch as the waiter's look read
    it when it left flight (a fetch that left flight never returns to it);
    read again without one (the wait ran out, or the fetch is gone), or when
    the entry expired meanwhile."""
    if fetch is None or entry.expires_at <= timezone.now():
        return entry_get(entry_id=entry.pk)
    entry.fetch = fetch
    return entry


def _reap(fetch_ids: list[int]) -> None:
    housekeeping.fetch_reap(fetch_ids=fetch_ids)


@functools.cache
def waiter() -> FetchWaiter:
    """This process's waiter (it restarts its thread in a forked child)."""
    return FetchWaiter(
        _fetches_in_flight,
        settings.WAITER_POLL_INTERVAL,
        reap=_reap,
        reap_interval=settings.FETCH_LEASE / 3,
        listen=notify.listen,
        # While the listener hears of each fetch that leaves flight, the poll
        # only catches what it missed while reconnecting.
        heard_interval=max(settings.WAITER_POLL_INTERVAL, 1.0),
    )
