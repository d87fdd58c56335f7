"""A fetch leaving flight, ready or failed: one statement, committed on its
own, and then its waiters told (services.claims, fetching and storing end a
fetch through here).
"""

import logging
from datetime import datetime
from typing import Any

from django.db import DatabaseError, connection
from django.utils import timezone

from imagecache import notify
from imagecache.models import Fetch, FetchState

logger = logging.getLogger(__name__)

_FETCHES = Fetch._meta.db_table

# The ready mark, written out as the claim's statements (services.claims) are:
# the ORM would build it anew on the path of every new image.
# The mark matches its own row again once made (ready, with this attempt's
# file): a mark that committed but whose answer was lost, tried again, finds
# it made rather than taken for another worker's and its image dropped.
_READY = f"""
UPDATE {_FETCHES} SET state = %s, file_name = %s, media_type = %s, size = %s, content_hash = %s,
    finished_at = %s, last_read_at = %s, lease_until = NULL, lease_owner = '',
    error_status = NULL, error_message = ''
WHERE id = %s AND (state = %s OR (state = %s AND file_name = %s))
"""


def sql_update(sql: str, params: list[Any]) -> int:
    """Run a written-out UPDATE: how many rows it changed."""
    at = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        cursor.execute(sql, [at(p) if isinstance(p, datetime) else p for p in params])
        return cursor.rowcount


def fetch_mark_ready(
    *, fetch: Fetch, saved_name: str, media_type: str, size: int, content_hash: str, now: datetime
) -> bool:
    # One statement, committed on its own, and the waiters told: by it on
    # PostgreSQL, after it on SQLite. No transaction around them (BEGIN and
    # COMMIT were two round trips more between Kentik's answer and the waiters').
    ready = [FetchState.READY, saved_name, media_type, size, content_hash, now, now]
    mine = [fetch.pk, FetchState.FETCHING, FetchState.READY, saved_name]
    told = notify.told(_READY)
    if told is not None:
        return bool(sql_update(told, [*ready, *mine]))
    stored = sql_update(_READY, [*ready, *mine])
    if stored:
        _waiters_tell(fetch.pk)
    return bool(stored)


def _waiters_tell(fetch_id: int) -> None:
    """Tell the waiters that a fetch left flight. Inside a transaction, at its
    commit (a failure fails the transaction). Outside one the change is
    committed already, and a NOTIFY that fails must neither undo it nor pass
    for a failed change: the waiters find it at their poll, as they do when a
    worker dies between the two."""
    try:
        notify.fetch_done(fetch_id)
    except DatabaseError:
        if connection.in_atomic_block:
            raise
        logger.warning(
            "fetch %s: its waiters were not told (the database did not answer); they poll",
            fetch_id,
        )


def fetch_fail(
    *,
    fetch: Fetch,
    status: int,
    message: str,
    states: tuple[str, ...] = (FetchState.FETCHING,),
    transient: bool = False,
) -> None:
    # As `fetch_mark_ready`: the change committed, then told.
    failed = Fetch.objects.filter(pk=fetch.pk, state__in=states).update(
        state=FetchState.FAILED,
        error_status=status,
        error_message=message,
        error_transient=transient,
        finished_at=timezone.now(),
        lease_until=None,
        lease_owner="",
    )
    if failed:
        _waiters_tell(fetch.pk)
