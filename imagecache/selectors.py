"""Reads: what the API and the admin show, taken from the database alone.

Nothing here blocks or writes: the wait for a pending image is
`imagecache.waiting.ready`."""

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.core.files import File
from django.core.files.storage import default_storage
from django.db.models import Count, Min, Q, Sum
from django.utils import timezone

from imagecache.errors import EntryNotFound
from imagecache.ids import ENTRY_ID_RE
from imagecache.models import IN_FLIGHT, Entry, Fetch, FetchState, WorkerHeartbeat


def entry_get(*, entry_id: str) -> Entry:
    """A live entry with its fetch; EntryNotFound if unknown, malformed or expired."""
    if not ENTRY_ID_RE.match(entry_id):
        raise EntryNotFound()
    entry = Entry.objects.select_related("fetch").filter(pk=entry_id).first()
    if entry is None or entry.expires_at <= timezone.now():
        raise EntryNotFound()
    return entry


# Past this many fetches not ready with live entries, the list of ready
# entries is read with a join rather than by leaving those fetches out.
_INFO_EXCLUDE_MAX = 500


def cache_info(*, limit: int) -> dict[str, Any]:
    """Counts by state and the newest live entries, from the database only.

    Most live entries are ready, and the other states are few: they are
    counted and listed from their fetches (`fetch_state_lease`, then the
    entries' `fetch_id`), the ready ones as the rest (`entry_expires`, an
    index-only count) and listed newest first along `entry_created` without a
    join, stopping at `limit`. The plans are in bench/NOTES.md. Each figure
    is its own statement, as before: under concurrent changes they may
    disagree by the entries that changed between two of them.
    """
    now = timezone.now()
    live = Entry.objects.filter(expires_at__gt=now)
    total = live.count()
    others = (
        live.filter(fetch__state__in=[*IN_FLIGHT, FetchState.FAILED])
        .values("fetch_id", "fetch__state")
        .annotate(n=Count("pk"))
        .values_list("fetch_id", "fetch__state", "n")
    )
    pending = failed = 0
    not_ready: set[int] = set()
    for fetch_id, state, n in others:
        not_ready.add(fetch_id)
        if state == FetchState.FAILED:
            failed += n
        else:
            pending += n
    ready_bytes = (
        Fetch.objects.filter(state=FetchState.READY).aggregate(total=Sum("size"))["total"] or 0
    )
    return {
        "active_count": max(0, total - pending - failed),
        "pending_count": pending,
        "failed_count": failed,
        "stored_bytes": ready_bytes,
        "active_entries": _ready_entries(live, not_ready, limit)
        if total > pending + failed
        else [],
        "pending_entries": _entries(live.filter(fetch__state__in=IN_FLIGHT), limit)
        if pending
        else [],
        "failed_entries": _entries(live.filter(fetch__state=FetchState.FAILED), limit)
        if failed
        else [],
    }


def _entry_row(
    pk: str, expires_at: Any, media_type: str, size: int | None, status: int | None
) -> dict[str, Any]:
    return {
        "id": pk,
        "type": media_type or None,
        "size": size,
        "expiration": expires_at.timestamp(),
        **({"status": status} if status else {}),
    }


def _entries(entries: Any, limit: int) -> list[dict[str, Any]]:
    if not limit:
        return []
    rows = entries.order_by("-created_at").values_list(
        "pk", "expires_at", "fetch__media_type", "fetch__size", "fetch__error_status"
    )[:limit]
    return [_entry_row(*row) for row in rows]


def _ready_entries(live: Any, not_ready: set[int], limit: int) -> list[dict[str, Any]]:
    """The newest live entries of ready fetches: those of no fetch in
    `not_ready`, their fetches read afterwards (at most `limit` of them)."""
    if not limit:
        return []
    if len(not_ready) > _INFO_EXCLUDE_MAX:
        return _entries(live.filter(fetch__state=FetchState.READY), limit)
    rows = list(
        live.exclude(fetch_id__in=not_ready)
        .order_by("-created_at")
        .values_list("pk", "expires_at", "fetch_id")[:limit]
    )
    fetches = {
        pk: (media_type, size, status)
        for pk, media_type, size, status in Fetch.objects.filter(
            pk__in={fetch_id for _, _, fetch_id in rows}, state=FetchState.READY
        ).values_list("pk", "media_type", "size", "error_status")
    }
    # A fetch that changed meanwhile (evicted) leaves its entries out.
    return [
        _entry_row(pk, expires_at, *fetches[fetch_id])
        for pk, expires_at, fetch_id in rows
        if fetch_id in fetches
    ]


# --- The admin ----------------------------------------------------------------


@dataclass(frozen=True)
class CacheStats:
    """The cache at a glance, for the admin's entries page."""

    entries_by_state: dict[str, int]  # live entries, by the state of their fetch
    expired_entries: int  # expired, not pruned yet
    fetches_by_state: dict[str, int]
    stored_bytes: int
    kentik_calls_last_hour: int  # fetches that finished in the last hour
    kentik_failures_last_hour: int  # ... and failed
    oldest_pending_age: timedelta | None  # of the oldest fetch in flight


def cache_stats() -> CacheStats:
    """Counts by state, bytes stored, Kentik calls in the last hour and the
    oldest fetch in flight, in a handful of aggregate queries."""
    now = timezone.now()
    live = dict(
        Entry.objects.filter(expires_at__gt=now)
        .values("fetch__state")
        .annotate(n=Count("pk"))
        .values_list("fetch__state", "n")
    )
    fetches = dict(Fetch.objects.values("state").annotate(n=Count("pk")).values_list("state", "n"))
    totals = Fetch.objects.aggregate(
        stored=Sum("size", filter=Q(state=FetchState.READY)),
        calls=Count("pk", filter=Q(finished_at__gte=now - timedelta(hours=1))),
        failures=Count(
            "pk",
            filter=Q(state=FetchState.FAILED, finished_at__gte=now - timedelta(hours=1)),
        ),
        oldest=Min("created_at", filter=Q(state__in=IN_FLIGHT)),
    )
    return CacheStats(
        entries_by_state={state: live.get(state, 0) for state in FetchState.values},
        expired_entries=Entry.objects.filter(expires_at__lte=now).count(),
        fetches_by_state={state: fetches.get(state, 0) for state in FetchState.values},
        stored_bytes=totals["stored"] or 0,
        kentik_calls_last_hour=totals["calls"],
        kentik_failures_last_hour=totals["failures"],
        oldest_pending_age=now - totals["oldest"] if totals["oldest"] else None,
    )


def fetch_image_open(*, fetch_id: int) -> tuple[File, str]:
    """A ready fetch's image file, opened from storage, and its media type.

    For operators: unlike `entry_get_ready`, it neither waits nor looks at
    expiry, and it does not count as a read. EntryNotFound when the fetch is
    not ready or its file is gone.
    """
    fetch = (
        Fetch.objects.filter(pk=fetch_id, state=FetchState.READY)
        .only("file_name", "media_type")
        .first()
    )
    if fetch is None or not fetch.file_name:
        raise EntryNotFound()
    try:
        return default_storage.open(fetch.file_name, "rb"), fetch.media_type
    except FileNotFoundError:
        raise EntryNotFound() from None  # pruned or evicted meanwhile


def worker_heartbeats(*, seconds: float) -> list[tuple[str, Any]]:
    """The queue workers ("host:pid") whose last heartbeat is younger than
    `seconds`, with its time."""
    since = timezone.now() - timedelta(seconds=seconds)
    return list(WorkerHeartbeat.objects.filter(seen_at__gt=since).values_list("name", "seen_at"))
