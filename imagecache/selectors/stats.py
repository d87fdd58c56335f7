"""The cache at a glance and its Kentik calls by the hour: the admin's entries
page and /metrics."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Avg, Count, DurationField, ExpressionWrapper, F, Max, Min, Q, Sum
from django.db.models.functions import TruncHour
from django.utils import timezone

from imagecache.models import IN_FLIGHT, Entry, Fetch, FetchState


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


@dataclass(frozen=True)
class HourActivity:
    """Kentik calls (fetches that finished) in one hour, for the admin's chart."""

    start: datetime
    calls: int
    failures: int
    mean_duration: timedelta | None  # from the claim to the image stored or the failure
    max_duration: timedelta | None


def fetch_activity(*, hours: int = 24) -> list[HourActivity]:
    """The fetches that finished in each of the last `hours` hours, oldest
    first, the current hour last (so far), in one aggregate query; an hour
    without any has zeros."""
    now = timezone.now()
    current = now.replace(minute=0, second=0, microsecond=0)
    since = current - timedelta(hours=hours - 1)
    took = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
    rows = (
        Fetch.objects.filter(finished_at__gte=since, finished_at__lte=now)
        .annotate(hour=TruncHour("finished_at"))
        .values("hour")
        .annotate(
            calls=Count("pk"),
            failures=Count("pk", filter=Q(state=FetchState.FAILED)),
            mean=Avg(took, filter=Q(started_at__isnull=False)),
            longest=Max(took, filter=Q(started_at__isnull=False)),
        )
    )
    by_hour: dict[datetime, dict[str, Any]] = {row["hour"]: dict(row) for row in rows}
    activity = []
    for n in range(hours):
        start = since + timedelta(hours=n)
        row: dict[str, Any] = by_hour.get(start, {})
        activity.append(
            HourActivity(
                start=start,
                calls=row.get("calls", 0),
                failures=row.get("failures", 0),
                mean_duration=row.get("mean"),
                max_duration=row.get("longest"),
            )
        )
    return activity
