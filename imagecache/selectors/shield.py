"""The deployment's Kentik budget and pause, as readers see them (the
waits, /info, /metrics, the admin); `imagecache.services.shield` keeps them."""

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from imagecache.models import KENTIK_LOCK, Fetch, FetchState, KentikCall, Lock

# The window of KENTIK_RATE_LIMIT (services.shield counts calls in it).
KENTIK_WINDOW = timedelta(seconds=60)


def kentik_holds(*, fetch: Fetch) -> bool:
    """Whether the deployment's Kentik pause holds this fetch back: until the
    pause's end, while the one call that went first has not answered, and,
    once Kentik answers again, for a fetch still in line since before then
    (behind the others that waited)."""
    now = timezone.now()
    gate = Lock.objects.filter(name=KENTIK_LOCK).only(
        "paused_until", "probe_owner", "probe_until", "resumed_at"
    )
    row = gate.first()
    if row is None:
        return False
    if row.pause_holds(now):
        return True
    return (
        fetch.state == FetchState.PENDING
        and row.resumed_at is not None
        and fetch.created_at <= row.resumed_at
    )


def kentik_status(*, now: datetime | None = None) -> dict[str, Any]:
    """The deployment's Kentik budget and pause, for /info, /metrics and the admin."""
    now = now or timezone.now()
    paused_until, pause_reason, probe_owner = Lock.objects.filter(name=KENTIK_LOCK).values_list(
        "paused_until", "pause_reason", "probe_owner"
    ).first() or (None, "", "")
    return kentik_status_of(
        calls=KentikCall.objects.filter(at__gt=now - KENTIK_WINDOW).count(),
        paused_until=paused_until,
        pause_reason=pause_reason,
        probe_owner=probe_owner,
    )


def kentik_status_of(
    *, calls: int, paused_until: datetime | None, pause_reason: str, probe_owner: str
) -> dict[str, Any]:
    """`kentik_status` from figures read elsewhere (`/info` reads them in its totals)."""
    return {
        "calls_last_minute": calls,
        "rate_limit": settings.KENTIK_RATE_LIMIT,
        "paused": paused_until is not None,
        "paused_until": paused_until,
        "pause_reason": pause_reason if paused_until else "",
        "probing": bool(paused_until and probe_owner),
    }
