"""Writes: everything that changes the cache goes through here."""

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone
from django_q.tasks import async_task

from imagecache import kentik
from imagecache.hashing import query_hash
from imagecache.models import IN_FLIGHT, Entry, Fetch, FetchState

logger = logging.getLogger(__name__)

EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/svg+xml": ".svg",
    "application/pdf": ".pdf",
}


def entry_id_make(*, query_key: str, expires_at: float) -> str:
    """The id clients hold: `<query sha256>_<expiry as unix epoch>`."""
    return f"{query_key}_{expires_at:.6f}"


def entry_create(*, api_query: dict[str, Any], ttl: int | None = None) -> Entry:
    """Register a client's request and make sure a fetch will serve it.

    Reuses a fetch of the same query that is in flight, or that succeeded
    less than REUSE_MAX_AGE seconds ago; otherwise creates one and enqueues
    it once the transaction commits.
    """
    now = timezone.now()
    key = query_hash(api_query)
    entry_id = entry_id_make(
        query_key=key, expires_at=now.timestamp() + (ttl or settings.DEFAULT_TTL)
    )
    # The expiry stored is the one written in the id, to the microsecond.
    expires_at = datetime.fromtimestamp(float(entry_id.rsplit("_", 1)[1]), tz=UTC)
    with transaction.atomic():
        fetch, created = _fetch_for_query(query_key=key, api_query=api_query, now=now)
        entry, _ = Entry.objects.get_or_create(
            id=entry_id, defaults={"fetch": fetch, "created_at": now, "expires_at": expires_at}
        )
        if created:
            transaction.on_commit(lambda: fetch_enqueue(fetch_id=fetch.pk))
    logger.info("entry %s: %s fetch %s", entry.id, "new" if created else "shares", fetch.pk)
    return entry


def _fetch_for_query(
    *, query_key: str, api_query: dict[str, Any], now: datetime
) -> tuple[Fetch, bool]:
    reusable = Q(state__in=IN_FLIGHT)
    if settings.REUSE_MAX_AGE > 0:
        reusable |= Q(
            state=FetchState.READY,
            finished_at__gte=now - timedelta(seconds=settings.REUSE_MAX_AGE),
        )
    candidates = Fetch.objects.filter(reusable, query_hash=query_key)
    # Newest ready image first; an in-flight fetch (no finish time) after it.
    fetch = candidates.order_by(F("finished_at").desc(nulls_last=True)).first()
    if fetch is not None:
        return fetch, False
    try:
        with transaction.atomic():
            fetch = Fetch.objects.create(
                query_hash=query_key, query_json=json.dumps(api_query), created_at=now
            )
        return fetch, True
    except IntegrityError:
        # Another request created the in-flight fetch of this query first.
        return Fetch.objects.get(query_hash=query_key, state__in=IN_FLIGHT), False


def fetch_enqueue(*, fetch_id: int) -> None:
    async_task(
        "imagecache.tasks.fetch_image",
        fetch_id,
        task_name=f"fetch-{fetch_id}",
        timeout=settings.FETCH_TASK_TIMEOUT,
    )


def fetch_claim(*, fetch_id: int) -> Fetch | None:
    """Take a fetch for this worker: a pending one, or one whose lease ran out.

    The conditional update is the lock: 0 rows means someone else holds it or
    it is done.
    """
    now = timezone.now()
    claimable = Q(state=FetchState.PENDING) | Q(state=FetchState.FETCHING, lease_until__lt=now)
    claimed = Fetch.objects.filter(claimable, pk=fetch_id).update(
        state=FetchState.FETCHING,
        started_at=now,
        lease_until=now + timedelta(seconds=settings.FETCH_TASK_TIMEOUT),
        attempts=F("attempts") + 1,
    )
    if not claimed:
        return None
    return Fetch.objects.get(pk=fetch_id)


def fetch_run(*, fetch_id: int) -> None:
    """Fetch a chart from Kentik and store it; safe to run more than once."""
    fetch = fetch_claim(fetch_id=fetch_id)
    if fetch is None:
        logger.info("fetch %s: not pending, skipped", fetch_id)
        return
    started = timezone.now()
    try:
        chart = kentik.fetch_chart(fetch.query_json)
    except kentik.KentikError as exc:
        _fetch_fail(fetch=fetch, status=exc.status, message=exc.message)
        return
    except Exception:
        # Whatever a query does to the client, the fetch ends recorded as
        # failed rather than retried forever by the task queue.
        logger.exception("fetch %s: unexpected error", fetch.pk)
        _fetch_fail(fetch=fetch, status=502, message="Kentik's answer could not be processed")
        return
    _fetch_store(fetch=fetch, chart=chart)
    logger.info(
        "fetch %s: ready, %s, %d bytes in %.2f s",
        fetch.pk,
        chart.media_type,
        len(chart.data),
        (timezone.now() - started).total_seconds(),
    )


def _fetch_store(*, fetch: Fetch, chart: kentik.Chart) -> None:
    extension = EXTENSIONS.get(chart.media_type, ".bin")
    name = f"images/{fetch.query_hash[:2]}/{fetch.query_hash}-{fetch.pk}{extension}"
    saved_name = default_storage.save(name, ContentFile(chart.data))
    stored = Fetch.objects.filter(pk=fetch.pk, state=FetchState.FETCHING).update(
        state=FetchState.READY,
        file_name=saved_name,
        media_type=chart.media_type,
        size=len(chart.data),
        content_hash=hashlib.sha256(chart.data).hexdigest(),
        finished_at=timezone.now(),
        lease_until=None,
    )
    if not stored:
        # Purged, or finished by a worker that took the fetch over meanwhile.
        default_storage.delete(saved_name)
        logger.info("fetch %s: finished elsewhere or purged, image dropped", fetch.pk)


def _fetch_fail(*, fetch: Fetch, status: int, message: str) -> None:
    Fetch.objects.filter(pk=fetch.pk, state=FetchState.FETCHING).update(
        state=FetchState.FAILED,
        error_status=status,
        error_message=message,
        finished_at=timezone.now(),
        lease_until=None,
    )
    logger.warning("fetch %s: failed with %s: %s", fetch.pk, status, message)


def fetch_recover() -> list[int]:
    """Enqueue again every fetch that is pending or whose worker's lease ran out."""
    now = timezone.now()
    stalled = Fetch.objects.filter(
        Q(state=FetchState.PENDING) | Q(state=FetchState.FETCHING, lease_until__lt=now)
    )
    fetch_ids = list(stalled.values_list("pk", flat=True))
    for fetch_id in fetch_ids:
        fetch_enqueue(fetch_id=fetch_id)
    return fetch_ids


@dataclass(frozen=True)
class PruneResult:
    entries: int
    fetches: int
    files: int
    bytes_freed: int


def cache_prune(*, dry_run: bool = False) -> PruneResult:
    """Remove expired entries, the fetches no live entry uses, and their files."""
    now = timezone.now()
    with transaction.atomic():
        expired = Entry.objects.filter(expires_at__lte=now)
        # The condition is applied again by the delete itself, so a fetch that
        # a new entry took up meanwhile is kept.
        orphans = Fetch.objects.exclude(entries__expires_at__gt=now)
        entry_count = expired.count()
        doomed = list(orphans.values_list("pk", "file_name", "size"))
        if not dry_run:
            expired.delete()
            orphans.filter(pk__in=[pk for pk, _, _ in doomed]).delete()
    files = [(name, size or 0) for _, name, size in doomed if name]
    if not dry_run:
        for name, _ in files:
            default_storage.delete(name)
    return PruneResult(
        entries=entry_count,
        fetches=len(doomed),
        files=len(files),
        bytes_freed=sum(size for _, size in files),
    )
