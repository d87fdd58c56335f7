"""`GET /info`: counts by state and the newest live entries, from the
database only."""

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Exists, OuterRef
from django.utils import timezone

from imagecache.models import (
    ENTRY_TALLY,
    IN_FLIGHT,
    KENTIK_LOCK,
    Entry,
    Fetch,
    FetchState,
    KentikCall,
    Lock,
    tally_minute,
)
from imagecache.selectors.shield import KENTIK_WINDOW, kentik_status_of

# Past this many fetches not ready with live entries, the list of ready
# entries is read with a join on the fetch's state rather than by leaving
# those fetches out.
_INFO_EXCLUDE_MAX = 500

_ENTRIES = Entry._meta.db_table
_FETCHES = Fetch._meta.db_table

# `/info` is what dashboards and probes poll, so its three statements are
# written out: building them was most of its time in the ORM. The live
# entries are the tally's minutes after this one and this minute's rows, read
# along `entry_expires`: a count of all the rows grows with the cache.
_INFO_TOTALS = f"""
SELECT totals.live, totals.stored, totals.calls,
       gate.paused_until, gate.pause_reason, gate.probe_owner
FROM (
    SELECT (SELECT COALESCE(SUM(n), 0) FROM {ENTRY_TALLY} WHERE minute > %s)
           + (SELECT COUNT(*) FROM {_ENTRIES} WHERE expires_at > %s AND expires_at < %s)
           AS live,
           (SELECT COALESCE(SUM(size), 0) FROM {_FETCHES} WHERE state = %s) AS stored,
           (SELECT COUNT(*) FROM {KentikCall._meta.db_table} WHERE at > %s) AS calls
) AS totals
LEFT JOIN {Lock._meta.db_table} AS gate ON gate.name = %s
"""
# The few live entries not ready, counted by fetch (from `fetch_state_lease`).
_INFO_NOT_READY = f"""
SELECT e.fetch_id, f.state, COUNT(*)
FROM {_ENTRIES} AS e JOIN {_FETCHES} AS f ON f.id = e.fetch_id
WHERE e.expires_at > %s AND f.state IN ({{states}})
GROUP BY e.fetch_id, f.state
"""
# The newest live entries, along `entry_created`, each fetch read by key;
# those of the fetches not ready are left out by key (NOT IN, added below).
# CROSS JOIN keeps the entries the outer loop on SQLite, whose planner would
# otherwise scan the fetches and sort every live entry (PostgreSQL plans it
# as the inner join it is).
_INFO_READY = f"""
SELECT e.id, {{expiration}}, f.media_type, f.size, f.error_status, f.state
FROM {_ENTRIES} AS e CROSS JOIN {_FETCHES} AS f
WHERE f.id = e.fetch_id AND e.expires_at > %s{{not_ready}}
ORDER BY e.created_at DESC
LIMIT %s
"""


def cache_info(*, limit: int) -> dict[str, Any]:
    """Counts by state and the newest live entries, from the database only.

    Most live entries are ready, and the other states are few: they are
    counted and listed from their fetches, the ready ones as the rest, and
    listed newest first without a filter on their fetches, stopping at
    `limit`. Each figure is its own statement, as before: under concurrent
    changes they may disagree by the entries that changed between two of them.
    """
    now = timezone.now()
    minute = tally_minute(now)
    at = connection.ops.adapt_datetimefield_value
    not_ready_states = [*IN_FLIGHT, FetchState.FAILED]
    with connection.cursor() as cursor:
        cursor.execute(
            _INFO_TOTALS,
            [
                at(minute),
                at(now),
                at(minute + timedelta(minutes=1)),
                FetchState.READY,
                at(now - KENTIK_WINDOW),
                KENTIK_LOCK,
            ],
        )
        total, ready_bytes, calls, paused_until, pause_reason, probe_owner = cursor.fetchone()
        total = int(total)  # PostgreSQL sums to numeric
        cursor.execute(
            _INFO_NOT_READY.format(states=", ".join(["%s"] * len(not_ready_states))),
            [at(now), *not_ready_states],
        )
        others = cursor.fetchall()
    pending = failed = 0
    not_ready: set[int] = set()
    for fetch_id, state, n in others:
        not_ready.add(fetch_id)
        if state == FetchState.FAILED:
            failed += n
        else:
            pending += n
    paused_until = _read_datetime(paused_until)
    kentik = kentik_status_of(
        calls=calls,
        paused_until=paused_until,
        pause_reason=pause_reason or "",
        probe_owner=probe_owner or "",
    )

    # Built only when needed: most often nothing is pending or failed, and
    # building a queryset is a cost every /info would pay.
    def live() -> Any:
        return Entry.objects.filter(expires_at__gt=now)

    return {
        "active_count": max(0, total - pending - failed),
        "pending_count": pending,
        "failed_count": failed,
        "stale_count": _stale_entries(live(), now).count() if failed else 0,
        "stored_bytes": int(ready_bytes),  # PostgreSQL sums to numeric
        "kentik": {**kentik, "paused_until": paused_until and paused_until.timestamp()},
        "active_entries": _ready_entries(live, now, not_ready, limit)
        if total > pending + failed
        else [],
        "pending_entries": _entries(live().filter(fetch__state__in=IN_FLIGHT), limit)
        if pending
        else [],
        "failed_entries": _entries(live().filter(fetch__state=FetchState.FAILED), limit)
        if failed
        else [],
    }


def _read_datetime(value: datetime | None) -> datetime | None:
    """A datetime column as written-out SQL reads it: aware on PostgreSQL;
    naive in the connection's time zone on SQLite (Django's converter for
    the column's declared type), as Django stores it."""
    if value is not None and timezone.is_naive(value):
        value = timezone.make_aware(value, connection.timezone)
    return value


def _expiration(value: float | datetime) -> float:
    """An entry's expiry as written-out SQL reads it: a number on PostgreSQL,
    a datetime on SQLite."""
    if isinstance(value, datetime):
        read = _read_datetime(value)
        assert read is not None
        return read.timestamp()
    return float(value)


def _entry_row(
    pk: str, expiration: float, media_type: str, size: int | None, status: int | None
) -> dict[str, Any]:
    return {
        "id": pk,
        "type": media_type or None,
        "size": size,
        "expiration": expiration,
        **({"status": status} if status else {}),
    }


def _stale_entries(live: Any, now: Any) -> Any:
    """The live entries whose fetch failed for a transient cause and that an
    older image of their query answers (STALE_IF_ERROR)."""
    if not settings.STALE_IF_ERROR:
        return live.none()
    older = Fetch.objects.filter(
        query_hash=OuterRef("fetch__query_hash"),
        state=FetchState.READY,
        finished_at__gte=now - timedelta(seconds=settings.STALE_IF_ERROR),
    )
    return live.filter(fetch__state=FetchState.FAILED, fetch__error_transient=True).filter(
        Exists(older)
    )


def _entries(entries: Any, limit: int) -> list[dict[str, Any]]:
    if not limit:
        return []
    rows = entries.order_by("-created_at").values_list(
        "pk", "expires_at", "fetch__media_type", "fetch__size", "fetch__error_status"
    )[:limit]
    return [
        _entry_row(pk, expires_at.timestamp(), media_type, size, status)
        for pk, expires_at, media_type, size, status in rows
    ]


def _ready_entries(
    live: Callable[[], Any], now: datetime, not_ready: set[int], limit: int
) -> list[dict[str, Any]]:
    """The newest live entries of ready fetches: those of no fetch in `not_ready`."""
    if not limit:
        return []
    if len(not_ready) > _INFO_EXCLUDE_MAX:
        return _entries(live().filter(fetch__state=FetchState.READY), limit)
    left_out = f" AND e.fetch_id NOT IN ({', '.join(['%s'] * len(not_ready))})" if not_ready else ""
    # PostgreSQL sends the expiry as a number, much cheaper to read row by row
    # than its time zone aware datetimes. SQLite keeps its text, which Django
    # reads as it stored it.
    expiration = (
        "CAST(EXTRACT(EPOCH FROM e.expires_at) AS DOUBLE PRECISION)"
        if connection.vendor == "postgresql"
        else "e.expires_at"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            _INFO_READY.format(expiration=expiration, not_ready=left_out),
            [connection.ops.adapt_datetimefield_value(now), *not_ready, limit],
        )
        rows = cursor.fetchall()
    # A fetch that left the ready state meanwhile (evicted) leaves its entries out.
    return [
        _entry_row(pk, _expiration(expires_at), media_type, size, status)
        for pk, expires_at, media_type, size, status, state in rows
        if state == FetchState.READY
    ]
