"""This process's waiter, wired to the database."""

from django.conf import settings
from django.db import DatabaseError, connection

from imagecache import notify
from imagecache.models import IN_FLIGHT, Fetch
from imagecache.services import housekeeping
from imagecache.waiter import FetchWaiter


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


waiter = FetchWaiter(
    _fetches_in_flight,
    # With notifications pushed, the poll only catches what a reconnecting
    # listener missed.
    max(settings.WAITER_POLL_INTERVAL, 1.0)
    if notify.available()
    else settings.WAITER_POLL_INTERVAL,
    reap=_reap,
    reap_interval=settings.FETCH_LEASE / 3,
    listen=notify.listen if notify.available() else None,
)
