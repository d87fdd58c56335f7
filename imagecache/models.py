"""What the cache holds.

A `Fetch` is one call to Kentik for one query and the image it brought; an
`Entry` is what a client holds: an id with its own expiry, pointing at the
fetch that serves it. Identical queries share a fetch, so one Kentik call can
serve many entries.
"""

import functools
from collections.abc import Iterable
from datetime import datetime
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, connections, models
from django.db.models import Q

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
            # services.fetching.fetch_claim: the next pending fetch in line.
            models.Index(fields=["state", "priority", "created_at"], name="fetch_state_line"),
            # selectors.cache_info: the bytes stored, summed from the index alone
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
            # services.housekeeping.cache_prune and selectors.cache_info: expiry scans.
            models.Index(fields=["expires_at"], name="entry_expires"),
            # selectors.cache_info: newest first.
            models.Index(fields=["-created_at"], name="entry_created"),
        ]

    def __str__(self) -> str:
        return self.id


# How many entries expire in each minute (UTC), in rows of `shard`s to sum:
# a table that the database's triggers keep (migration 0006), no model.
ENTRY_TALLY = "imagecache_entry_tally"


def tally_minute(at: datetime) -> datetime:
    """The minute of ENTRY_TALLY that holds the entries expiring at `at`."""
    return at.replace(second=0, microsecond=0)


_M = TypeVar("_M", bound=models.Model)


def insert(obj: _M, *, using: str = DEFAULT_DB_ALIAS) -> _M:
    """Save a new `obj` as `obj.save()` does (one INSERT, its pk read back),
    with the statement built once per model: the ORM built it anew in each of
    the four inserts on the path of every new image. No pre_save or post_save
    signal is sent: no model saved here has a receiver for them (Entry's one
    receiver is post_delete's, which deletes still send)."""
    connection = connections[using]
    fields, sql = _insert_statement(type(obj), using)
    params = [field.get_db_prep_save(field.pre_save(obj, True), connection) for field in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        if obj._meta.auto_field is not None:
            obj.pk = cursor.fetchone()[0]
    obj._state.adding, obj._state.db = False, using
    return obj


def first(rows: Iterable[_M]) -> _M | None:
    """The first of `rows` (a raw query's, say), or None."""
    return next(iter(rows), None)


@functools.cache
def _insert_statement(model: type[models.Model], using: str) -> tuple[list[Any], str]:
    meta = model._meta
    fields = [field for field in meta.concrete_fields if field is not meta.auto_field]
    quote = connections[using].ops.quote_name
    columns = [quote(str(field.column)) for field in fields]
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(columns)})"
        f" VALUES ({', '.join(['%s'] * len(fields))})"
    )
    if meta.auto_field is not None:
        sql += f" RETURNING {quote(str(meta.auto_field.column))}"
    return fields, sql
