"""Entries: a client's request registered, sharing a fetch where it can,
and the reads of its image recorded (web processes)."""

import json
import logging
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from imagecache.files import links
from imagecache.hashing import query_hash
from imagecache.ids import entry_id_make
from imagecache.models import IN_FLIGHT, Entry, Fetch, FetchState
from imagecache.ops import metrics
from imagecache.services import queue

# The name the service's log lines have always carried.
logger = logging.getLogger("imagecache.services")


def entry_create(*, api_query: dict[str, Any], ttl: int | None = None) -> Entry:
    """Register a client's request and make sure a fetch will serve it.

    The expiry is rounded up to the second, so identical requests (same
    query, same ttl) within one second get the same id and share one entry:
    a dashboard polled by many viewers costs one read each, not one write.
    Otherwise reuses a fetch of the same query that is in flight, or that
    succeeded less than REUSE_MAX_AGE seconds ago; or creates one and
    enqueues it once the transaction commits.
    """
    now = timezone.now()
    key = query_hash(api_query)
    expiry = math.ceil(now.timestamp() + (ttl or settings.DEFAULT_TTL))
    entry_id = entry_id_make(query_key=key, expires_at=expiry)
    shared = Entry.objects.filter(_reusable(now, prefix="fetch__"), pk=entry_id).first()
    if shared is not None:
        metrics.SHARED_FETCHES.inc()
        return shared
    with transaction.atomic():
        fetch, created = fetch_share(
            query_key=key, query_json=json.dumps(api_query), now=now, ready_too=True
        )
        entry, new = Entry.objects.get_or_create(
            id=entry_id,
            defaults={
                "fetch": fetch,
                "created_at": now,
                "expires_at": datetime.fromtimestamp(expiry, tz=UTC),
            },
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
    (metrics.CACHE_MISSES if created else metrics.SHARED_FETCHES).inc()
    logger.info("entry %s: %s fetch %s", entry.id, "new" if created else "shares", fetch.pk)
    return entry


def _reusable(now: datetime, prefix: str = "", ready_too: bool = True) -> Q:
    """Fetches a new request may share: in flight, or ready within REUSE_MAX_AGE."""
    reusable = Q(**{f"{prefix}state__in": IN_FLIGHT})
    if ready_too and settings.REUSE_MAX_AGE > 0:
        reusable |= Q(
            **{
                f"{prefix}state": FetchState.READY,
                f"{prefix}finished_at__gte": now - timedelta(seconds=settings.REUSE_MAX_AGE),
            }
        )
    return reusable


def fetch_share(
    *, query_key: str, query_json: str, now: datetime, ready_too: bool
) -> tuple[Fetch, bool]:
    """The fetch that serves a query: the one in flight, or (`ready_too`) the
    newest ready within REUSE_MAX_AGE; else a new pending one (True), created
    with `query_json`, the query text sent to Kentik as the client wrote it.

    One fetch in flight per query is a constraint: a request that loses the
    race to create it joins the winner's. The caller enqueues a new fetch.
    """
    candidates = Fetch.objects.filter(_reusable(now, ready_too=ready_too), query_hash=query_key)
    # Newest ready image first; an in-flight fetch (no finish time) after it.
    fetch = candidates.order_by(F("finished_at").desc(nulls_last=True)).first()
    if fetch is not None:
        return fetch, False
    try:
        with transaction.atomic():
            fetch = Fetch.objects.create(
                query_hash=query_key, query_json=query_json, created_at=now, enqueued_at=now
            )
        return fetch, True
    except IntegrityError:
        # Another request created the in-flight fetch of this query first.
        return Fetch.objects.get(query_hash=query_key, state__in=IN_FLIGHT), False


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
