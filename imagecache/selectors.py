"""Reads: what the API answers, taken from the database alone."""

import math
import re
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count, Sum
from django.utils import timezone

from imagecache import waiting
from imagecache.errors import EntryNotFound, FetchFailed, FetchPending, FetchStillPending
from imagecache.models import IN_FLIGHT, Entry, Fetch, FetchState

ENTRY_ID_RE = re.compile(r"^[0-9a-f]{64}_[0-9]{1,12}(\.[0-9]{1,9})?$")
# The Retry-After of a 202 to a client that asked not to wait: it polls, and
# most charts take Kentik a few seconds.
POLL_RETRY_AFTER = 1


def entry_get(*, entry_id: str) -> Entry:
    """A live entry with its fetch; EntryNotFound if unknown, malformed or expired."""
    if not ENTRY_ID_RE.match(entry_id):
        raise EntryNotFound()
    entry = Entry.objects.select_related("fetch").filter(pk=entry_id).first()
    if entry is None or entry.expires_at <= timezone.now():
        raise EntryNotFound()
    return entry


def entry_get_ready(*, entry_id: str, wait: float | None = None) -> Entry:
    """The entry once its image is ready.

    `wait` caps how long a pending image is waited for: ENTRY_WAIT_TIMEOUT when
    None, never more. `wait=0` never blocks: a pending image raises
    FetchStillPending (202) at once. Otherwise raises FetchPending when the
    wait ran out, FetchFailed with Kentik's status, EntryNotFound when the
    entry is gone or expired meanwhile.
    """
    entry = entry_get(entry_id=entry_id)
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
        waiting.waiter.wait(entry.fetch_id, timeout)
        entry = entry_get(entry_id=entry_id)
    fetch = entry.fetch
    if fetch.state == FetchState.READY:
        return entry
    if fetch.state == FetchState.FAILED:
        raise FetchFailed(fetch.error_status or 502, fetch.error_message)
    raise FetchPending(retry_after=max(1, math.ceil(settings.KENTIK_API_TIMEOUT / 4)))


def cache_info(*, limit: int) -> dict[str, Any]:
    """Counts by state and the newest live entries, from the database only."""
    now = timezone.now()
    live = Entry.objects.filter(expires_at__gt=now)
    counts = dict(
        live.values("fetch__state").annotate(n=Count("pk")).values_list("fetch__state", "n")
    )
    ready_bytes = (
        Fetch.objects.filter(state=FetchState.READY).aggregate(total=Sum("size"))["total"] or 0
    )
    return {
        "active_count": counts.get(FetchState.READY, 0),
        "pending_count": sum(counts.get(state, 0) for state in IN_FLIGHT),
        "failed_count": counts.get(FetchState.FAILED, 0),
        "stored_bytes": ready_bytes,
        "active_entries": _entries(live.filter(fetch__state=FetchState.READY), limit),
        "pending_entries": _entries(live.filter(fetch__state__in=IN_FLIGHT), limit),
        "failed_entries": _entries(live.filter(fetch__state=FetchState.FAILED), limit),
    }


def _entries(entries: Any, limit: int) -> list[dict[str, Any]]:
    rows = entries.order_by("-created_at").values_list(
        "pk", "expires_at", "fetch__media_type", "fetch__size", "fetch__error_status"
    )[:limit]
    return [
        {
            "id": pk,
            "type": media_type or None,
            "size": size,
            "expiration": expires_at.timestamp(),
            **({"status": status} if status else {}),
        }
        for pk, expires_at, media_type, size, status in rows
    ]
