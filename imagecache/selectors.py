"""Reads: what the API and the admin show, taken from the database alone.

Nothing here blocks or writes: the wait for a pending image is
`imagecache.waiting.ready`."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import connection
from django.db.models import (
    Avg,
    Count,
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    Max,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Window,
)
from django.db.models.functions import Coalesce, RowNumber, TruncHour
from django.utils import timezone

from imagecache.errors import ChartNotFound, EntryNotFound
from imagecache.ids import ENTRY_ID_RE
from imagecache.models import (
    ENTRY_TALLY,
    IN_FLIGHT,
    KENTIK_LOCK,
    Chart,
    ChartActivity,
    ChartImage,
    Entry,
    Fetch,
    FetchState,
    KentikCall,
    Lock,
    WorkerHeartbeat,
    tally_minute,
)


def entry_get(*, entry_id: str) -> Entry:
    """A live entry with its fetch; EntryNotFound if unknown, malformed or expired."""
    if not ENTRY_ID_RE.match(entry_id):
        raise EntryNotFound()
    entry = Entry.objects.select_related("fetch").filter(pk=entry_id).first()
    if entry is None or entry.expires_at <= timezone.now():
        raise EntryNotFound()
    return entry


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
    return _kentik_status(
        calls=KentikCall.objects.filter(at__gt=now - KENTIK_WINDOW).count(),
        paused_until=paused_until,
        pause_reason=pause_reason,
        probe_owner=probe_owner,
    )


def _kentik_status(
    *, calls: int, paused_until: datetime | None, pause_reason: str, probe_owner: str
) -> dict[str, Any]:
    return {
        "calls_last_minute": calls,
        "rate_limit": settings.KENTIK_RATE_LIMIT,
        "paused": paused_until is not None,
        "paused_until": paused_until,
        "pause_reason": pause_reason if paused_until else "",
        "probing": bool(paused_until and probe_owner),
    }


def fetch_stale(*, fetch: Fetch) -> Fetch | None:
    """The newest ready image of the fetch's query, other than its own, that
    finished within STALE_IF_ERROR: what may answer for it when Kentik fails."""
    if not settings.STALE_IF_ERROR:
        return None
    since = timezone.now() - timedelta(seconds=settings.STALE_IF_ERROR)
    return (
        Fetch.objects.filter(
            query_hash=fetch.query_hash, state=FetchState.READY, finished_at__gte=since
        )
        .exclude(pk=fetch.pk)
        .order_by("-finished_at")
        .first()
    )


def fetch_last_failed_transient(*, fetch: Fetch) -> bool:
    """Whether the query's last finished fetch before this one failed for a
    transient cause (Kentik overloaded or failing)."""
    last = (
        Fetch.objects.filter(query_hash=fetch.query_hash, finished_at__isnull=False)
        .exclude(pk=fetch.pk)
        .order_by("-finished_at")
        .values_list("state", "error_transient")
        .first()
    )
    return last is not None and last == (FetchState.FAILED, True)


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
    kentik = _kentik_status(
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


# --- Charts by URL --------------------------------------------------------


def chart_get(*, slug: str) -> Chart:
    """A saved chart by its slug; ChartNotFound if there is none."""
    chart = Chart.objects.filter(slug=slug).first()
    if chart is None:
        raise ChartNotFound()
    return chart


def chart_image_find(*, chart: Chart, query_key: str) -> ChartImage | None:
    """The image of a chart for one query (format and values), with its
    newest ready fetch."""
    return (
        ChartImage.objects.select_related("fetch").filter(chart=chart, query_hash=query_key).first()
    )


@dataclass(frozen=True)
class WarmImage:
    """A chart image that viewers watch, with what its refresh needs."""

    image_id: int
    chart_id: int
    query_hash: str
    image_type: str
    values_json: str
    finished_at: datetime
    max_age: int


def chart_images_watched(*, now: datetime) -> list[WarmImage]:
    """The rendered chart images viewed within CHART_KEEP_WARM, at most
    CHART_WARM_MAX per chart (the most recently viewed), oldest image first."""
    since = now - timedelta(seconds=settings.CHART_KEEP_WARM)
    ranked = (
        ChartImage.objects.filter(viewed_at__gte=since, fetch__state=FetchState.READY)
        .annotate(
            rank=Window(
                RowNumber(), partition_by=[F("chart_id")], order_by=[F("viewed_at").desc(), "pk"]
            )
        )
        .filter(rank__lte=settings.CHART_WARM_MAX)
        .order_by("fetch__finished_at")
        .values_list(
            "pk",
            "chart_id",
            "query_hash",
            "image_type",
            "values_json",
            "fetch__finished_at",
            "chart__max_age",
        )
    )
    return [
        WarmImage(pk, chart_id, key, image_type, values, finished, max_age)
        for pk, chart_id, key, image_type, values, finished, max_age in ranked
        if finished is not None  # a ready fetch has one
    ]


def fetch_refresh_due(*, query_key: str, since: datetime, failed_since: datetime) -> bool:
    """Whether a query may be refreshed now: none of its fetches is in flight,
    none finished ready after `since` (another worker refreshed it
    meanwhile), and Kentik did not refuse it (not a transient failure) after
    `failed_since`."""
    recent = Fetch.objects.filter(query_hash=query_key).filter(
        Q(state__in=IN_FLIGHT)
        | Q(state=FetchState.READY, finished_at__gt=since)
        | Q(state=FetchState.FAILED, error_transient=False, finished_at__gt=failed_since)
    )
    return not recent.exists()


def charts_list() -> list[Chart]:
    """Every saved chart, by slug."""
    return list(Chart.objects.order_by("slug"))


@dataclass(frozen=True)
class ChartRender:
    """A chart's last render in one format with one set of values, for its page."""

    image_type: str
    state: str  # of its newest fetch: pending, fetching, ready, failed; "never"
    rendered_at: datetime | None  # of its newest ready image
    size: int | None
    media_type: str | None


def chart_renders(*, chart: Chart, values_json: str, image_types: list[str]) -> list[ChartRender]:
    """Per format, the last render of a chart with these values (canonical JSON)."""
    images = {
        image.image_type: image
        for image in ChartImage.objects.select_related("fetch").filter(
            chart=chart, values_json=values_json, image_type__in=image_types
        )
    }
    # Oldest first: the newest fetch of each query is the one the dict keeps.
    newest = dict(
        Fetch.objects.filter(query_hash__in=[image.query_hash for image in images.values()])
        .order_by("created_at", "pk")
        .values_list("query_hash", "state")
    )
    renders = []
    for image_type in image_types:
        image = images.get(image_type)
        fetch = image.fetch if image is not None else None
        renders.append(
            ChartRender(
                image_type=image_type,
                state=newest.get(image.query_hash, "never") if image is not None else "never",
                rendered_at=fetch.finished_at if fetch is not None else None,
                size=fetch.size if fetch is not None else None,
                media_type=fetch.media_type if fetch is not None else None,
            )
        )
    return renders


def charts_with_activity(*, since: datetime) -> QuerySet[Chart]:
    """The charts with, for the admin's list: views and refreshes (Kentik
    calls) since `since`, the last render, and the state of the newest fetch
    of any of their images. Subqueries, not joins: two joined sums would
    multiply each other's rows."""
    activity = ChartActivity.objects.filter(chart=OuterRef("pk"), hour__gte=since).values("chart")
    images = ChartImage.objects.filter(chart=OuterRef(OuterRef("pk"))).values("query_hash")
    return Chart.objects.annotate(
        views_day=Coalesce(Subquery(activity.annotate(n=Sum("views")).values("n")), 0),
        refreshes_day=Coalesce(Subquery(activity.annotate(n=Sum("refreshes")).values("n")), 0),
        last_render=Subquery(
            ChartImage.objects.filter(chart=OuterRef("pk"), fetch__isnull=False)
            .order_by("-fetch__finished_at")
            .values("fetch__finished_at")[:1]
        ),
        newest_state=Subquery(
            Fetch.objects.filter(query_hash__in=Subquery(images))
            .order_by("-created_at", "-pk")
            .values("state")[:1]
        ),
    )
