"""Entries: a client's request registered, sharing a fetch where it can,
and the reads of its image recorded (web processes)."""

import json
import logging
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import BooleanField, F
from django.db.models.expressions import RawSQL
from django.utils import timezone
from prometheus_client import Counter

from imagecache.files import links
from imagecache.hashing import query_hash
from imagecache.ids import entry_id_make
from imagecache.models import IN_FLIGHT, Entry, Fetch, FetchPriority, FetchState, first
from imagecache.ops import metrics, request_ids
from imagecache.services import queue

logger = logging.getLogger(__name__)


def entry_create(*, api_query: dict[str, Any], ttl: int | None = None) -> Entry:
    """Register a client's request and make sure a fetch will serve it.

    The expiry is rounded up to the second, so identical requests (same
    query, same ttl) within one second get the same id and share one entry:
    a dashboard polled by many viewers costs one read each, not one write.
    Otherwise reuses a fetch of the same query that is in flight, that
    succeeded less than REUSE_MAX_AGE seconds ago, or that Kentik refused as
    bad less than NEGATIVE_TTL seconds ago; or creates one and enqueues it
    once the transaction commits. A reused image older than REFRESH_AHEAD of
    REUSE_MAX_AGE starts a refresh of the query (`_refresh_ahead`).
    """
    now = timezone.now()
    key = query_hash(api_query)
    expiry = math.ceil(now.timestamp() + (ttl or settings.DEFAULT_TTL))
    entry_id = entry_id_make(query_key=key, expires_at=expiry)
    reusable, params = _reusable(now, table="f")
    shared = first(Entry.objects.raw(_SHARED.format(reusable=reusable), [entry_id, *params]))
    if shared is not None:
        metrics.SHARED_FETCHES.inc()
        return shared
    query_json = json.dumps(api_query)
    try:
        return _entry_register(
            entry_id=entry_id, key=key, query_json=query_json, now=now, expiry=expiry, raced=False
        )
    except IntegrityError:
        # An identical request made the query's fetch, or this entry, between
        # this one's reads and its writes: once more, joining what it made.
        return _entry_register(
            entry_id=entry_id, key=key, query_json=query_json, now=now, expiry=expiry, raced=True
        )


def _entry_register(
    *, entry_id: str, key: str, query_json: str, now: datetime, expiry: int, raced: bool
) -> Entry:
    """`entry_create`'s transaction. A first try (most often alone: the lookup
    before it found no entry to share) inserts without savepoints, and a
    conflict rolls back the whole transaction: two statements fewer for each
    of its inserts (four round trips to PostgreSQL on the path of every new
    image). A try after a race reads what the other request made."""
    with transaction.atomic():
        fetch, created = fetch_share(
            query_key=key, query_json=query_json, now=now, ready_too=True, raced=raced
        )
        entry, new = _entry_make(
            entry_id=entry_id, fetch=fetch, now=now, expiry=expiry, raced=raced
        )
        if not new and entry.fetch_id != fetch.pk:
            # Asked again within the second, and the entry's fetch may not be
            # reused (it failed, or is older than REUSE_MAX_AGE): the entry
            # takes the fetch a new entry would get.
            entry.fetch = fetch
            entry.save(update_fields=["fetch"])
            links.entries_unlink(entry_ids=[entry.pk])
        if created:
            transaction.on_commit(lambda: queue.task_enqueue(fetch_id=fetch.pk))
        elif fetch.state == FetchState.READY:
            transaction.on_commit(
                lambda: links.entries_link(entry_ids=[entry.pk], file_name=fetch.file_name)
            )
            _refresh_ahead(fetch=fetch, now=now)
        if not created:
            fetch_refresh_used(fetch=fetch)
    (metrics.CACHE_MISSES if created else metrics.SHARED_FETCHES).inc()
    if fetch.state == FetchState.FAILED:
        metrics.NEGATIVE_HITS.inc()
    logger.info("entry %s: %s fetch %s", entry.id, "new" if created else "shares", fetch.pk)
    return entry


def _entry_make(
    *, entry_id: str, fetch: Fetch, now: datetime, expiry: int, raced: bool
) -> tuple[Entry, bool]:
    """The entry of this id, made now (True) unless it exists. Made first, the
    reverse of `get_or_create`: the lookup before the transaction found no
    entry to share, so it is most often new, and one statement fewer is on
    the path of every new image. A first try's conflict is the caller's to
    retry; a retry (`raced`) reads first, and joins an entry made after its
    read."""
    expires_at = datetime.fromtimestamp(expiry, tz=UTC)
    made = {"id": entry_id, "fetch": fetch, "created_at": now, "expires_at": expires_at}
    if not raced:
        return Entry.objects.create(**made), True
    if (entry := Entry.objects.filter(pk=entry_id).first()) is not None:
        return entry, False
    try:
        with transaction.atomic():
            return Entry.objects.create(**made), True
    except IntegrityError:
        # A third identical request made the entry after the read: its
        # insert has committed (this one waited for it), so it can be read.
        return Entry.objects.get(pk=entry_id), False


# The lookup that answers identical POSTs within their second, written out:
# the ORM took 0.5 ms to build it, most of such a POST's time in the view.
_SHARED = f"""
SELECT e.* FROM {Entry._meta.db_table} AS e JOIN {Fetch._meta.db_table} AS f ON f.id = e.fetch_id
WHERE e.id = %s AND {{reusable}}
"""


def _reusable(now: datetime, *, table: str, ready_too: bool = True) -> tuple[str, list[Any]]:
    """Fetches a new request may share: in flight, ready within REUSE_MAX_AGE,
    or refused by Kentik as bad (400) within NEGATIVE_TTL; as an SQL condition
    on the fetches' `table` (a name or an alias), with its parameters, since
    `entry_create`'s written-out lookup needs it so. Other failures are never
    shared: a transient one is worth asking again once its pause is over (and
    the pause keeps the new fetch waiting until then), and 401, 403 or 404
    may be mended (credentials, a device) at any time."""
    at = connection.ops.adapt_datetimefield_value
    terms = [f"{table}.state IN ({', '.join(['%s'] * len(IN_FLIGHT))})"]
    params: list[Any] = [*IN_FLIGHT]
    if ready_too and settings.REUSE_MAX_AGE > 0:
        terms.append(f"({table}.state = %s AND {table}.finished_at >= %s)")
        params += [FetchState.READY, at(now - timedelta(seconds=settings.REUSE_MAX_AGE))]
    if ready_too and settings.NEGATIVE_TTL > 0:
        terms.append(
            f"({table}.state = %s AND {table}.error_status = %s AND {table}.finished_at >= %s)"
        )
        params += [FetchState.FAILED, 400, at(now - timedelta(seconds=settings.NEGATIVE_TTL))]
    return f"({' OR '.join(terms)})", params


def _refresh_ahead(*, fetch: Fetch, now: datetime) -> None:
    """A reused image older than REFRESH_AHEAD of REUSE_MAX_AGE: one refresh of
    its query, last in line, unless one is in flight already. A query nobody
    asks for again is never refreshed."""
    if not settings.REFRESH_AHEAD or fetch.finished_at is None:
        return
    age = (now - fetch.finished_at).total_seconds()
    if age < settings.REFRESH_AHEAD * settings.REUSE_MAX_AGE:
        return
    refresh = fetch_refresh(query_key=fetch.query_hash, query_json=fetch.query_json, now=now)
    if refresh is not None:
        metrics.REFRESHES_STARTED.inc()
        logger.info("fetch %s: refresh ahead of fetch %s, %.0f s old", refresh.pk, fetch.pk, age)


def fetch_refresh(*, query_key: str, query_json: str, now: datetime) -> Fetch | None:
    """A new fetch of the query, last in line (REFRESH), enqueued once the
    transaction commits; None when one is in flight already, or another
    process started one first (the one-in-flight constraint)."""
    if Fetch.objects.filter(query_hash=query_key, state__in=IN_FLIGHT).exists():
        return None
    try:
        with transaction.atomic():
            refresh = Fetch.objects.create(
                query_hash=query_key,
                query_json=query_json,
                created_at=now,
                enqueued_at=now,
                priority=FetchPriority.REFRESH,
                request_id=request_ids.current.get(),
            )
    except IntegrityError:
        return None  # another request started it first
    transaction.on_commit(lambda: queue.task_enqueue(fetch_id=refresh.pk))
    return refresh


def fetch_refresh_used(*, fetch: Fetch, counter: Counter = metrics.REFRESHES_USED) -> None:
    """A request took up a refresh fetch: it is a client's now (its place in
    line too), and counted once, on `counter`, as a refresh that paid."""
    if fetch.priority == FetchPriority.REFRESH and Fetch.objects.filter(
        pk=fetch.pk, priority=FetchPriority.REFRESH
    ).update(priority=FetchPriority.NORMAL):
        fetch.priority = FetchPriority.NORMAL
        counter.inc()


def fetch_share(
    *, query_key: str, query_json: str, now: datetime, ready_too: bool, raced: bool = True
) -> tuple[Fetch, bool]:
    """The fetch that serves a query: the one in flight, or (`ready_too`) the
    newest ready within REUSE_MAX_AGE; else a new pending one (True), created
    with `query_json`, the query text sent to Kentik as the client wrote it.

    One fetch in flight per query is a constraint: a request that loses the
    race to create it joins the winner's; unless `raced` is False, when the
    IntegrityError is the caller's, who retries its whole transaction (no
    savepoint around the insert). The caller enqueues a new fetch.
    """
    reusable, params = _reusable(
        now, table=connection.ops.quote_name(Fetch._meta.db_table), ready_too=ready_too
    )
    fetch = (
        Fetch.objects.filter(RawSQL(reusable, params, output_field=BooleanField()))
        .filter(query_hash=query_key)
        # Newest ready image first; an in-flight fetch (no finish time) after it.
        .order_by(F("finished_at").desc(nulls_last=True))
        .first()
    )
    if fetch is not None:
        return fetch, False
    made = {
        "query_hash": query_key,
        "query_json": query_json,
        "created_at": now,
        "enqueued_at": now,
        # The request being served, so that the worker's lines about its
        # fetch can be traced to it.
        "request_id": request_ids.current.get(),
    }
    if not raced:
        return Fetch.objects.create(**made), True
    try:
        with transaction.atomic():
            fetch = Fetch.objects.create(**made)
        return fetch, True
    except IntegrityError:
        # Another request created the query's in-flight fetch after the read:
        # the query's newest, which serves this request even if a quick
        # Kentik has taken it out of flight since.
        return Fetch.objects.filter(query_hash=query_key).latest("pk"), False


def fetch_mark_read(*, fetch: Fetch) -> None:
    """Record that a client read the image, at most once per READ_MARK_INTERVAL."""
    now = timezone.now()
    threshold = now - timedelta(seconds=settings.READ_MARK_INTERVAL)
    if fetch.last_read_at is None or fetch.last_read_at < threshold:
        Fetch.objects.filter(pk=fetch.pk).update(last_read_at=now)
        fetch.last_read_at = now


def fetches_mark_read(*, fetch_ids: set[int]) -> None:
    """Record that clients read these images (the fast path's batched reads)."""
    if fetch_ids:
        Fetch.objects.filter(pk__in=fetch_ids).update(last_read_at=timezone.now())
