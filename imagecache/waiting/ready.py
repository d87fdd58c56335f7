"""`GET /image/{id}`'s wait for a pending image, and this process's waiter,
wired to the database, built on first use."""

import functools
import math

from django.conf import settings
from django.db import DatabaseError, connection

from imagecache import notify, selectors
from imagecache.errors import FetchFailed, FetchPending, FetchStillPending
from imagecache.models import IN_FLIGHT, Entry, Fetch, FetchState
from imagecache.services import housekeeping
from imagecache.waiting.waiter import FetchWaiter

# The Retry-After of a 202 to a client that asked not to wait: it polls, and
# most charts take Kentik a few seconds.
POLL_RETRY_AFTER = 1


def entry_get_ready(*, entry_id: str, wait: float | None = None) -> Entry:
    """The entry once its image is ready.

    `wait` caps how long a pending image is waited for: ENTRY_WAIT_TIMEOUT when
    None, never more. `wait=0` never blocks: a pending image raises
    FetchStillPending (202) at once. Otherwise raises FetchPending when the
    wait ran out, FetchFailed with Kentik's status, EntryNotFound when the
    entry is gone or expired meanwhile.
    """
    entry = selectors.entry_get(entry_id=entry_id)
    if wait == 0 and entry.fetch.state in IN_FLIGHT:
        raise FetchStillPending(
            entry_id=entry.pk, state=str(entry.fetch.state), retry_after=POLL_RETRY_AFTER
        )
    timeout = (
        settings.ENTRY_WAIT_TIMEOUT if wait is None else min(wait, settings.ENTRY_WAIT_TIMEOUT)
    )
    if entry.fetch.state in IN_FLIGHT and timeout > 0:
        # A long wait must not hold a database connection.
        connection.close()
        waiter().wait(entry.fetch_id, timeout)
        entry = selectors.entry_get(entry_id=entry_id)
    fetch = entry.fetch
    if fetch.state == FetchState.READY:
        return entry
    if fetch.state == FetchState.FAILED:
        raise FetchFailed(fetch.error_status or 502, fetch.error_message)
    raise FetchPending(retry_after=max(1, math.ceil(settings.KENTIK_API_TIMEOUT / 4)))


def _fetches_in_flight(fetch_ids: list[int]) -> list[int]:
    try:
        return list(
            Fetch.objects.filter(pk__in=fetch_ids, state__in=IN_FLIGHT).values_list("pk", flat=True)
        )
    except DatabaseError:
        connection.close()  # reconnect on the next tick
        raise


def _reap(fetch_ids: list[int]) -> None:
    housekeeping.fetch_reap(fetch_ids=fetch_ids)


@functools.cache
def waiter() -> FetchWaiter:
    """This process's waiter (it restarts its thread in a forked child)."""
    pushed = notify.available()
    return FetchWaiter(
        _fetches_in_flight,
        # With notifications pushed, the poll only catches what a reconnecting
        # listener missed.
        max(settings.WAITER_POLL_INTERVAL, 1.0) if pushed else settings.WAITER_POLL_INTERVAL,
        reap=_reap,
        reap_interval=settings.FETCH_LEASE / 3,
        listen=notify.listen if pushed else None,
    )
