"""What the cache holds.

A `Fetch` is one call to Kentik for one query and the image it brought; an
`Entry` is what a client holds: an id with its own expiry, pointing at the
fetch that serves it. Identical queries share a fetch, so one Kentik call can
serve many entries.
"""

from collections.abc import Iterable
from datetime import datetime
from typing import TypeVar

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from imagecache.ids import CHART_SLUG_RE
from imagecache.ops import request_ids


class FetchState(models.TextChoices):
    PENDING = "pending", "Pending"  # queued, no worker holds it
    FETCHING = "fetching", "Fetching"  # a worker holds it until `lease_until`
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


class FetchPriority(models.IntegerChoices):
    """The order in which pending fetches get Kentik calls: lowest first, and
    within one class the oldest first."""

    WAITED = 0, "A client waits"
    NORMAL = 1, "Normal"
    REFRESH = 2, "Refresh-ahead"


IN_FLIGHT = (FetchState.PENDING, FetchState.FETCHING)
# The Lock row that claims serialize on (created by migration 0002).
KENTIK_LOCK = "kentik-calls"


class Fetch(models.Model):
    query_hash = models.CharField(max_length=64)
    # The client's JSON as received (key order and nulls kept), sent as is.
    query_json = models.TextField()
    state = models.CharField(max_length=16, choices=FetchState.choices, default=FetchState.PENDING)
    created_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # A worker's claim, renewed by its heartbeat: past it, or once its owner
    # ("host:pid") is seen dead on its own host, the fetch is abandoned.
    lease_until = models.DateTimeField(null=True, blank=True)
    lease_owner = models.CharField(max_length=255, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # Calls of this fetch as the probe that failed on its query (a timeout, a
    # 500): each spends one of its retries (KENTIK_API_RETRIES) and puts it
    # behind the others for the next probe. A 429, a pause or the budget
    # spends none: they speak of the deployment, not of the query.
    probe_failures = models.PositiveSmallIntegerField(default=0)
    # WAITED once a client waits on it; REFRESH while only refresh-ahead wants it.
    priority = models.PositiveSmallIntegerField(
        choices=FetchPriority.choices, default=FetchPriority.NORMAL
    )
    # When the fetch task was last put on the queue (the reaper's clock for
    # tasks a broker lost).
    enqueued_at = models.DateTimeField(null=True, blank=True)
    # When a client last read the image, at most once a minute (eviction's clock).
    last_read_at = models.DateTimeField(null=True, blank=True)
    # Set when READY.
    file_name = models.CharField(max_length=255, blank=True)
    media_type = models.CharField(max_length=64, blank=True)
    size = models.PositiveBigIntegerField(null=True, blank=True)
    content_hash = models.CharField(max_length=64, blank=True)
    # Set when FAILED: the status we answer with and Kentik's message.
    error_status = models.PositiveSmallIntegerField(null=True, blank=True)
    error_message = models.TextField(blank=True)
    # Kentik was overloaded or failing (429, 5xx, timeout, unreachable), not
    # refusing the query: the entry may be answered with an older image.
    error_transient = models.BooleanField(default=False)
    # The X-Request-ID of the request that started the fetch: the worker's
    # lines about it carry it, so that they can be traced to that request.
    request_id = models.CharField(max_length=request_ids.MAX_LENGTH, blank=True)

    class Meta:
        verbose_name_plural = "fetches"
        constraints = [
            # Coalescing rests on this: one fetch in flight per query, so
            # concurrent identical requests cannot start a second Kentik call.
            models.UniqueConstraint(
                fields=["query_hash"],
                condition=Q(state__in=IN_FLIGHT),
                name="one_fetch_in_flight_per_query",
            ),
        ]
        indexes = [
            # services.entries.fetch_share: the newest reusable fetch of a query.
            models.Index(fields=["query_hash", "-finished_at"], name="fetch_query_finished"),
            # services.housekeeping.fetch_reap: fetches by state and lease.
            models.Index(fields=["state", "lease_until"], name="fetch_state_lease"),
            # services.housekeeping.cache_evict: the least recently read ready images.
            models.Index(fields=["state", "last_read_at"], name="fetch_state_read"),
            # services.claims.fetch_claim: the next pending fetch in line.
            models.Index(fields=["state", "priority", "created_at"], name="fetch_state_line"),
            # selectors.info.cache_info: the bytes stored, summed from the index alone
            # (a table scan took 12 ms of /info's 51 with 100,000 fetches).
            models.Index(fields=["state", "size"], name="fetch_state_size"),
        ]

    def __str__(self) -> str:
        return f"{self.query_hash[:12]}… #{self.pk} ({self.state})"


class Lock(models.Model):
    """A row to lock (SELECT ... FOR UPDATE) around claims, so that the bound
    on Kentik calls in flight holds across every worker of the deployment.

    The Kentik lock row also holds the deployment's pause (see
    imagecache/services/shield.py): read with the lock that every claim takes.
    """

    name = models.CharField(primary_key=True, max_length=64)
    # No Kentik call until then (a 429, or Kentik failing); null: not paused.
    paused_until = models.DateTimeField(null=True, blank=True)
    # Why, as the log and /info say it ("429", "503", "unreachable").
    pause_reason = models.CharField(max_length=64, blank=True)
    # The pause without a Retry-After after this one: doubled each time.
    pause_backoff = models.FloatField(default=0)
    # Once the pause is over, one fetch goes first: the others wait until
    # `probe_until` for its answer.
    probe_owner = models.CharField(max_length=255, blank=True)
    probe_until = models.DateTimeField(null=True, blank=True)
    # When the last pause ended (a call succeeded): the fetches in line since
    # before then wait behind each other, and their clients get an older image.
    resumed_at = models.DateTimeField(null=True, blank=True)
    # The query (its hash) whose call last failed on the query (a timeout, a
    # 500), until Kentik answers a call: another query failing so meanwhile
    # makes it an outage; the same one again, a heavy query.
    failed_query = models.CharField(max_length=64, blank=True)

    def __str__(self) -> str:
        return self.name

    def probing(self, now: datetime) -> bool:
        """The pause is over and its one call that goes first is out."""
        return bool(self.probe_owner) and self.probe_until is not None and self.probe_until > now

    def probe_next(self, now: datetime) -> bool:
        """The pause is over and its one call that goes first is not out yet."""
        return self.paused_until is not None and self.paused_until <= now and not self.probing(now)

    def pause_holds(self, now: datetime) -> bool:
        """No Kentik call may go for now: paused, or waiting for the probe."""
        return self.paused_until is not None and (self.paused_until > now or self.probing(now))


class KentikCall(models.Model):
    """One HTTP call to Kentik (each attempt), for KENTIK_RATE_LIMIT's sliding
    window; rows older than the window are deleted as calls are made."""

    at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"Kentik call at {self.at:%H:%M:%S}"


class WorkerHeartbeat(models.Model):
    """A queue worker (`manage.py worker`) saying it runs: one row per process,
    written every WORKER_HEARTBEAT_INTERVAL, removed when it stops. /readyz
    reads them, so that every host of a deployment sees every worker."""

    # "host:pid", as fetch leases name their owner.
    name = models.CharField(primary_key=True, max_length=255)
    seen_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.name


class Entry(models.Model):
    id = models.CharField(primary_key=True, max_length=96)
    fetch = models.ForeignKey(Fetch, on_delete=models.CASCADE, related_name="entries")
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    class Meta:
        verbose_name_plural = "entries"
        indexes = [
            # services.housekeeping.cache_prune and selectors.info.cache_info: expiry scans.
            models.Index(fields=["expires_at"], name="entry_expires"),
            # selectors.info.cache_info: newest first.
            models.Index(fields=["-created_at"], name="entry_created"),
        ]

    def __str__(self) -> str:
        return self.id


def _default_max_age() -> int:
    return int(settings.REUSE_MAX_AGE)


class Chart(models.Model):
    """A saved Kentik query with a name: `GET /charts/{slug}.{png,jpg,svg,pdf}`
    answers its newest image, refreshed once it is older than `max_age`.

    `query` is what `api_query` is for `POST /requests`, usually without
    `imageType` (the URL's extension sets it). `params` declares the
    parameters whose `{{name}}` placeholders the query may hold:
    `[{"name": ..., "kind": "string" | "integer" | "choice", ...}]`.
    """

    slug = models.CharField(
        max_length=64,
        unique=True,
        validators=[
            RegexValidator(CHART_SLUG_RE, "Lower-case letters, digits and '-' only, at most 64.")
        ],
    )
    title = models.CharField(max_length=200)
    query = models.JSONField()
    # Seconds: how old its image may grow before it is refreshed.
    max_age = models.PositiveIntegerField(default=_default_max_age)
    params = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class ChartImage(models.Model):
    """One chart in one image type with one set of parameter values: its own
    Kentik query (`query_hash`), its newest ready image, and when someone
    last viewed it (what keeps it warm)."""

    chart = models.ForeignKey(Chart, on_delete=models.CASCADE, related_name="images")
    # The URL's extension: png, jpg, svg or pdf.
    image_type = models.CharField(max_length=8)
    # The parameters' values as canonical JSON ("{}" for a chart without).
    values_json = models.TextField(default="{}")
    # Of the query sent to Kentik (placeholders filled in, imageType set).
    query_hash = models.CharField(max_length=64)
    # The newest ready image; null until the first render (or once evicted).
    fetch = models.ForeignKey(
        Fetch, on_delete=models.SET_NULL, null=True, blank=True, related_name="chart_images"
    )
    # The last view, written at most once per READ_MARK_INTERVAL.
    viewed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["chart", "query_hash"], name="one_image_per_query"),
        ]
        indexes = [
            # The keep-warm schedule: the images viewed within CHART_KEEP_WARM.
            models.Index(fields=["viewed_at"], name="chart_image_viewed"),
            # Labels of entries and fetches: the chart a query belongs to.
            models.Index(fields=["query_hash"], name="chart_image_query"),
        ]

    def __str__(self) -> str:
        return f"{self.chart.slug}.{self.image_type} {self.values_json}"


class ChartActivity(models.Model):
    """A chart's views and refreshes (Kentik calls) per hour, for the admin's
    "last day" columns: counted in each process and added here in batches."""

    chart = models.ForeignKey(Chart, on_delete=models.CASCADE, related_name="activity")
    hour = models.DateTimeField()
    views = models.PositiveIntegerField(default=0)
    refreshes = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name_plural = "chart activity"
        constraints = [
            models.UniqueConstraint(fields=["chart", "hour"], name="one_activity_per_hour"),
        ]

    def __str__(self) -> str:
        return f"{self.chart_id} {self.hour:%Y-%m-%d %H}:00"


class PortalLink(models.Model):
    """Kentik's portal link of a query ("Open in Kentik"), asked once and kept:
    a link does not change as the query's image does (services.portal)."""

    # Of the query without its imageType: one link serves every image type.
    query_hash = models.CharField(max_length=64, unique=True)
    # That query, as the task sends it to Kentik's query/url.
    query_json = models.TextField()
    # Empty until Kentik answered one (an http(s) URL, checked by the seam).
    url = models.CharField(max_length=2048, blank=True)
    fetched_at = models.DateTimeField(null=True, blank=True)
    # When it was last asked for (its task enqueued): asked again only past
    # services.portal.ASK_AGAIN, so that a failure is never retried in a loop.
    asked_at = models.DateTimeField(null=True, blank=True)
    # Why the last ask failed, for operators.
    error_message = models.TextField(blank=True)

    def __str__(self) -> str:
        return self.url or f"{self.query_hash[:12]}… (no link yet)"


# How many entries expire in each minute (UTC), in rows of `shard`s to sum:
# a table that the database's triggers keep (migration 0006), no model.
ENTRY_TALLY = "imagecache_entry_tally"


def tally_minute(at: datetime) -> datetime:
    """The minute of ENTRY_TALLY that holds the entries expiring at `at`."""
    return at.replace(second=0, microsecond=0)


_M = TypeVar("_M", bound=models.Model)


def first(rows: Iterable[_M]) -> _M | None:
    """The first of `rows` (a raw query's, say), or None."""
    return next(iter(rows), None)
