"""Writes: everything that changes the cache goes through here."""

import enum
import functools
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import F, Q, Sum
from django.utils import timezone
from django_q.brokers import Broker, get_broker
from django_q.tasks import async_task

from imagecache import kentik, leases, links, metrics, notify
from imagecache.hashing import query_hash
from imagecache.ids import entry_id_make
from imagecache.media import EXTENSIONS
from imagecache.models import IN_FLIGHT, KENTIK_LOCK, Entry, Fetch, FetchState, Lock

logger = logging.getLogger(__name__)


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
        fetch, created = _fetch_for_query(query_key=key, api_query=api_query, now=now)
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
            transaction.on_commit(lambda: _task_enqueue(fetch_id=fetch.pk))
        elif fetch.state == FetchState.READY:
            transaction.on_commit(
                lambda: links.entries_link(entry_ids=[entry.pk], file_name=fetch.file_name)
            )
    (metrics.CACHE_MISSES if created else metrics.SHARED_FETCHES).inc()
    logger.info("entry %s: %s fetch %s", entry.id, "new" if created else "shares", fetch.pk)
    return entry


def _reusable(now: datetime, prefix: str = "") -> Q:
    """Fetches a new request may share: in flight, or ready within REUSE_MAX_AGE."""
    reusable = Q(**{f"{prefix}state__in": IN_FLIGHT})
    if settings.REUSE_MAX_AGE > 0:
        reusable |= Q(
            **{
                f"{prefix}state": FetchState.READY,
                f"{prefix}finished_at__gte": now - timedelta(seconds=settings.REUSE_MAX_AGE),
            }
        )
    return reusable


def _fetch_for_query(
    *, query_key: str, api_query: dict[str, Any], now: datetime
) -> tuple[Fetch, bool]:
    candidates = Fetch.objects.filter(_reusable(now), query_hash=query_key)
    # Newest ready image first; an in-flight fetch (no finish time) after it.
    fetch = candidates.order_by(F("finished_at").desc(nulls_last=True)).first()
    if fetch is not None:
        return fetch, False
    try:
        with transaction.atomic():
            fetch = Fetch.objects.create(
                query_hash=query_key,
                query_json=json.dumps(api_query),
                created_at=now,
                enqueued_at=now,
            )
        return fetch, True
    except IntegrityError:
        # Another request created the in-flight fetch of this query first.
        return Fetch.objects.get(query_hash=query_key, state__in=IN_FLIGHT), False


def fetch_enqueue(*, fetch_id: int) -> None:
    """Put a fetch's task on the queue (again), noting when."""
    Fetch.objects.filter(pk=fetch_id).update(enqueued_at=timezone.now())
    _task_enqueue(fetch_id=fetch_id)


def _task_enqueue(*, fetch_id: int) -> None:
    async_task(
        "imagecache.tasks.fetch_image",
        fetch_id,
        task_name=f"fetch-{fetch_id}",
        timeout=settings.FETCH_TASK_TIMEOUT,
        broker=_broker(),
    )


@functools.cache
def _broker() -> Broker:
    """One broker per process. Without one, `async_task` makes a broker per
    task, and with Redis a new connection: 2 ms of each new request's 6."""
    return get_broker()


# A forked process (gunicorn's and django-q2's workers) makes its own.
os.register_at_fork(after_in_child=_broker.cache_clear)


class ClaimOutcome(enum.Enum):
    CLAIMED = "claimed"
    BUSY = "busy"  # KENTIK_MAX_CONCURRENCY calls are in flight: wait for a slot
    SKIPPED = "skipped"  # done, gone, failed for good, or held by a live worker


@dataclass(frozen=True)
class Claim:
    outcome: ClaimOutcome
    fetch: Fetch | None = None


def fetch_claim(*, fetch_id: int) -> Claim:
    """Take a fetch for this worker: a pending one, or one whose lease ran out.

    Claims are serialized on a lock row, so that the count of live leases
    bounds Kentik calls across the deployment; the conditional update makes a
    claim that lost a race a no-op.
    """
    now = timezone.now()
    with transaction.atomic():
        Lock.objects.select_for_update().filter(name=KENTIK_LOCK).first()
        fetch = Fetch.objects.filter(pk=fetch_id).first()
        if fetch is None or not _claimable(fetch, now):
            return Claim(ClaimOutcome.SKIPPED)
        if fetch.attempts >= settings.FETCH_MAX_ATTEMPTS:
            _fetch_fail(
                fetch=fetch,
                states=IN_FLIGHT,
                status=502,
                message=f"Gave up after {fetch.attempts} attempts that did not finish",
            )
            logger.warning(
                "fetch %s: failed (502), given up after %s attempts", fetch.pk, fetch.attempts
            )
            return Claim(ClaimOutcome.SKIPPED)
        live = Fetch.objects.filter(state=FetchState.FETCHING, lease_until__gt=now)
        if live.count() >= settings.KENTIK_MAX_CONCURRENCY:
            return Claim(ClaimOutcome.BUSY)
        lease = {
            "state": FetchState.FETCHING,
            "started_at": now,
            "lease_until": now + timedelta(seconds=settings.FETCH_LEASE),
            "lease_owner": leases.owner_id(),
            "attempts": fetch.attempts + 1,
        }
        claimed = Fetch.objects.filter(
            pk=fetch_id, state=fetch.state, attempts=fetch.attempts
        ).update(**lease)
    if not claimed:
        return Claim(ClaimOutcome.SKIPPED)
    for field, value in lease.items():
        setattr(fetch, field, value)
    return Claim(ClaimOutcome.CLAIMED, fetch)


def _claimable(fetch: Fetch, now: datetime) -> bool:
    if fetch.state == FetchState.PENDING:
        return True
    return fetch.state == FetchState.FETCHING and leases.abandoned(
        fetch.lease_owner, fetch.lease_until, now
    )


def fetch_run(*, fetch_id: int) -> None:
    """Fetch a chart from Kentik and store it; safe to run more than once."""
    deadline = time.monotonic() + settings.KENTIK_SLOT_WAIT
    claim = fetch_claim(fetch_id=fetch_id)
    while claim.outcome == ClaimOutcome.BUSY and time.monotonic() < deadline:
        time.sleep(0.2)
        claim = fetch_claim(fetch_id=fetch_id)
    if claim.fetch is None:
        logger.info("fetch %s: %s", fetch_id, claim.outcome.value)
        return
    fetch = claim.fetch
    started = time.monotonic()
    with leases.kept(fetch_id=fetch.pk, attempt=fetch.attempts):
        try:
            chart = kentik.fetch_chart(fetch.query_json)
        except kentik.KentikError as exc:
            _fetch_fail(fetch=fetch, status=exc.status, message=exc.message)
            _fetch_observe(fetch=fetch, status=exc.status, started=started, message=exc.message)
            return
        except Exception:
            # Whatever a query does to the client, the fetch ends recorded as
            # failed rather than retried forever by the task queue.
            logger.exception("fetch %s: unexpected error", fetch.pk)
            message = "Kentik's answer could not be processed"
            _fetch_fail(fetch=fetch, status=502, message=message)
            _fetch_observe(fetch=fetch, status=502, started=started, message=message)
            return
        # Room first, so that the directory never holds more than the bound.
        cache_evict(incoming=len(chart.data))
        _fetch_store(fetch=fetch, chart=chart)
    _fetch_observe(fetch=fetch, status=200, started=started, chart=chart)


def _fetch_observe(
    *,
    fetch: Fetch,
    status: int,
    started: float,
    chart: kentik.Chart | None = None,
    message: str = "",
) -> None:
    """The one log line and the metrics of a fetch that called Kentik."""
    duration = time.monotonic() - started
    outcome = "ready" if status == 200 else "failed"
    metrics.KENTIK_CALLS.labels(str(status)).inc()
    metrics.FETCH_DURATION.labels(outcome).observe(duration)
    fields = {
        "fetch_id": fetch.pk,
        "outcome": outcome,
        "status": status,
        "duration_ms": round(duration * 1000, 1),
    }
    if chart is not None:
        logger.info(
            "fetch %s: ready (200), %s, %d bytes in %.2f s",
            fetch.pk,
            chart.media_type,
            len(chart.data),
            duration,
            extra={**fields, "media_type": chart.media_type, "size": len(chart.data)},
        )
    else:
        logger.warning(
            "fetch %s: failed (%s) in %.2f s: %s", fetch.pk, status, duration, message, extra=fields
        )


def _fetch_store(*, fetch: Fetch, chart: kentik.Chart) -> None:
    extension = EXTENSIONS.get(chart.media_type, ".bin")
    content_hash = hashlib.sha256(chart.data).hexdigest()
    # The content hash in the name gives the fast path its ETag.
    name = f"images/{fetch.query_hash[:2]}/{fetch.query_hash}-{fetch.pk}-{content_hash}{extension}"
    saved_name = default_storage.save(name, ContentFile(chart.data))
    now = timezone.now()
    if links.enabled():
        # The file's time is the image's Last-Modified on the fast path.
        os.utime(default_storage.path(saved_name), (now.timestamp(), now.timestamp()))
    with transaction.atomic():
        stored = Fetch.objects.filter(pk=fetch.pk, state=FetchState.FETCHING).update(
            state=FetchState.READY,
            file_name=saved_name,
            media_type=chart.media_type,
            size=len(chart.data),
            content_hash=content_hash,
            finished_at=now,
            last_read_at=now,
            lease_until=None,
            lease_owner="",
        )
        if stored:
            notify.fetch_done(fetch.pk)
    if not stored:
        # Purged, or finished by a worker that took the fetch over meanwhile.
        default_storage.delete(saved_name)
        logger.info("fetch %s: finished elsewhere or purged, image dropped", fetch.pk)
        return
    _entries_link(fetch_id=fetch.pk, file_name=saved_name)


def _entries_link(*, fetch_id: int, file_name: str) -> None:
    """Link the entries of a ready fetch for the fast path; then unlink any
    that went meanwhile (their delete may have run before their link)."""
    if not links.enabled():
        return
    entry_ids = set(Entry.objects.filter(fetch_id=fetch_id).values_list("pk", flat=True))
    links.entries_link(entry_ids=entry_ids, file_name=file_name)
    still = set(Entry.objects.filter(fetch_id=fetch_id).values_list("pk", flat=True))
    links.entries_unlink(entry_ids=entry_ids - still)


def _fetch_fail(
    *,
    fetch: Fetch,
    status: int,
    message: str,
    states: tuple[str, ...] = (FetchState.FETCHING,),
) -> None:
    with transaction.atomic():
        failed = Fetch.objects.filter(pk=fetch.pk, state__in=states).update(
            state=FetchState.FAILED,
            error_status=status,
            error_message=message,
            finished_at=timezone.now(),
            lease_until=None,
            lease_owner="",
        )
        if failed:
            notify.fetch_done(fetch.pk)


def fetch_reap(*, fetch_ids: list[int] | None = None) -> list[int]:
    """Enqueue again the fetches nobody is working on.

    That is every pending fetch whose task was enqueued longer ago than the
    broker takes to hand a task out again (a broker may lose a task whose
    worker died), and every fetching one whose worker died (lease run out, or
    its process gone from this host). `fetch_ids` limits the look to those.
    """
    now = timezone.now()
    stale_enqueue = now - timedelta(seconds=settings.Q_CLUSTER["retry"])
    candidates = Fetch.objects.filter(
        Q(state=FetchState.PENDING, enqueued_at__isnull=True)
        | Q(state=FetchState.PENDING, enqueued_at__lt=stale_enqueue)
        | Q(state=FetchState.FETCHING)
    )
    if fetch_ids is not None:
        candidates = candidates.filter(pk__in=fetch_ids)
    reaped = []
    for fetch in candidates.only("pk", "state", "lease_owner", "lease_until", "attempts"):
        if fetch.state == FetchState.FETCHING:
            if not leases.abandoned(fetch.lease_owner, fetch.lease_until, now):
                continue
            # Back to pending, so that the next reap does not enqueue it again.
            if not Fetch.objects.filter(
                pk=fetch.pk, state=FetchState.FETCHING, attempts=fetch.attempts
            ).update(state=FetchState.PENDING, lease_until=None, lease_owner=""):
                continue
            logger.warning(
                "fetch %s: its worker %s is gone, taken over", fetch.pk, fetch.lease_owner
            )
        fetch_enqueue(fetch_id=fetch.pk)
        reaped.append(fetch.pk)
    return reaped


def fetch_recover() -> list[int]:
    """At start-up: enqueue every pending fetch, and every one whose worker died.

    Pending ones are enqueued even if their task may still be queued: a
    broker without persistence lost it, and a duplicate task is a no-op.
    """
    reaped = fetch_reap()
    pending = Fetch.objects.filter(state=FetchState.PENDING).exclude(pk__in=reaped)
    others = list(pending.values_list("pk", flat=True))
    for fetch_id in others:
        fetch_enqueue(fetch_id=fetch_id)
    return reaped + others


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


@dataclass(frozen=True)
class PruneResult:
    entries: int = 0
    fetches: int = 0
    files: int = 0
    bytes_freed: int = 0

    def __add__(self, other: "PruneResult") -> "PruneResult":
        return PruneResult(
            self.entries + other.entries,
            self.fetches + other.fetches,
            self.files + other.files,
            self.bytes_freed + other.bytes_freed,
        )


def cache_prune(*, dry_run: bool = False) -> PruneResult:
    """Remove expired entries, the fetches no live entry uses, their files,
    and files no row needs (temp files and images left by a crash)."""
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
    _delete_files(files, dry_run=dry_run)
    strays = _stray_files(now=now)
    _delete_files(strays, dry_run=dry_run)
    if not dry_run:
        _stray_links_remove()
    return PruneResult(
        entries=entry_count,
        fetches=len(doomed),
        files=len(files) + len(strays),
        bytes_freed=sum(size for _, size in files + strays),
    )


def _stray_files(*, now: datetime) -> list[tuple[str, int]]:
    """Files under images/ that no fetch names, old enough not to be a fetch
    about to be marked ready."""
    known = set(Fetch.objects.exclude(file_name="").values_list("file_name", flat=True))
    cutoff = now - timedelta(seconds=settings.STRAY_FILE_AGE)
    strays = []
    for name in _storage_walk("images"):
        if name in known:
            continue
        try:
            if default_storage.get_modified_time(name) > cutoff:
                continue
            strays.append((name, default_storage.size(name)))
        except FileNotFoundError:
            continue
    return strays


def _stray_links_remove() -> None:
    """Fast-path links of entries that are gone (removed behind Django's back)
    and temp links a crash left."""
    if not links.enabled():
        return
    directory = links.directory()
    if not directory.is_dir():
        return
    names = [p.name for p in directory.iterdir()]
    temps = [name for name in names if name.startswith(".")]
    ids = [name for name in names if not name.startswith(".")]
    live: set[str] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        live |= set(Entry.objects.filter(pk__in=chunk).values_list("pk", flat=True))
    links.entries_unlink(entry_ids=[*temps, *(set(ids) - live)])


def _storage_walk(directory: str) -> Iterator[str]:
    try:
        directories, files = default_storage.listdir(directory)
    except FileNotFoundError:
        return
    for file_name in files:
        yield f"{directory}/{file_name}"
    for sub in directories:
        yield from _storage_walk(f"{directory}/{sub}")


def _delete_files(files: list[tuple[str, int]], *, dry_run: bool) -> None:
    if dry_run:
        return
    for name, _ in files:
        default_storage.delete(name)


def cache_evict(*, incoming: int = 0, dry_run: bool = False) -> PruneResult:
    """Past CACHE_MAX_BYTES (counting an `incoming` image about to be stored),
    remove the least recently read ready images, and their entries, until the
    total is under 90% of it. Pending fetches stay."""
    limit = settings.CACHE_MAX_BYTES
    if not limit:
        return PruneResult()
    ready = Fetch.objects.filter(state=FetchState.READY)
    total = ready.aggregate(total=Sum("size"))["total"] or 0
    if total + incoming <= limit:
        return PruneResult()
    target = int(limit * 0.9) - incoming
    victims: list[tuple[int, str, int]] = []
    oldest_first = ready.order_by(F("last_read_at").asc(nulls_first=True), "finished_at")
    for pk, name, size in oldest_first.values_list("pk", "file_name", "size").iterator():
        if total <= target:
            break
        victims.append((pk, name, size or 0))
        total -= size or 0
    entries = Entry.objects.filter(fetch__in=[pk for pk, _, _ in victims]).count()
    if not dry_run:
        Fetch.objects.filter(pk__in=[pk for pk, _, _ in victims], state=FetchState.READY).delete()
    files = [(name, size) for _, name, size in victims if name]
    _delete_files(files, dry_run=dry_run)
    logger.info("evicted %d images, %d bytes", len(victims), sum(s for _, _, s in victims))
    return PruneResult(
        entries=entries,
        fetches=len(victims),
        files=len(files),
        bytes_freed=sum(size for _, size in files),
    )


# --- Operators' actions (the admin) ---------------------------------------------


# What a purge removed: the same counts as a prune.
PurgeResult = PruneResult


def entry_purge(*, entry_ids: list[str]) -> PurgeResult:
    """Delete entries now, and each fetch (with its file) that no other entry uses.

    A fetch in flight that is purged is harmless: its task finds no row to
    claim, or stores nothing and drops its file (`_fetch_store`).
    """
    with transaction.atomic():
        entries = Entry.objects.filter(pk__in=entry_ids)
        fetch_ids = set(entries.values_list("fetch_id", flat=True))
        _, deleted = entries.delete()
        entry_count = deleted.get(Entry._meta.label, 0)
        orphans = _fetches_unused(fetch_ids)
    files = [(name, size or 0) for _, name, size in orphans if name]
    transaction.on_commit(lambda: _delete_files(files, dry_run=False))
    logger.info("purged %d entries, %d fetches", entry_count, len(orphans))
    return PurgeResult(
        entries=entry_count,
        fetches=len(orphans),
        files=len(files),
        bytes_freed=sum(size for _, size in files),
    )


def _fetches_unused(fetch_ids: set[int]) -> list[tuple[int, str, int | None]]:
    """Delete those of the fetches that no entry uses; their (pk, file, size).

    The delete applies the condition again, so a fetch that a new entry took
    up meanwhile is kept (the same rule as `cache_prune`).
    """
    unused = Fetch.objects.filter(pk__in=fetch_ids, entries__isnull=True)
    doomed = list(unused.values_list("pk", "file_name", "size"))
    unused.filter(pk__in=[pk for pk, _, _ in doomed]).delete()
    return doomed


@dataclass(frozen=True)
class RefetchResult:
    entries: int = 0  # re-pointed to a fetch in flight
    fetches_created: int = 0  # new fetches, enqueued
    fetches_joined: int = 0  # fetches of the same query already in flight
    fetches_deleted: int = 0  # old fetches no entry used any more
    expired: int = 0  # selected entries skipped: they serve nobody


def entry_refetch(*, entry_ids: list[str]) -> RefetchResult:
    """Fetch the selected entries' images from Kentik again, now.

    Each live entry is pointed at a new pending fetch of its query, or at the
    one already in flight for that query (one fetch in flight per query is a
    constraint), so entries of one query share one new Kentik call. New
    fetches are enqueued once the transaction commits, and pending ones that
    were joined are enqueued again (the task is idempotent; their task may be
    lost). Old fetches that no entry uses any more are deleted with their files.
    """
    now = timezone.now()
    created: set[int] = set()
    joined: set[int] = set()
    with transaction.atomic():
        entries = list(
            Entry.objects.filter(pk__in=entry_ids).select_related("fetch").order_by("pk")
        )
        live = [entry for entry in entries if entry.expires_at > now]
        old_fetch_ids = {entry.fetch_id for entry in live}
        for entry in live:
            fetch, is_new = _fetch_in_flight(old=entry.fetch, now=now)
            (created if is_new else joined).add(fetch.pk)
            if entry.fetch_id != fetch.pk:
                Entry.objects.filter(pk=entry.pk).update(fetch=fetch)
                links.entries_unlink(entry_ids=[entry.pk])
        joined -= created
        orphans = _fetches_unused(old_fetch_ids - created - joined)
        waiting = Fetch.objects.filter(pk__in=joined, state=FetchState.PENDING)
        again = sorted(waiting.values_list("pk", flat=True))
        files = [(name, size or 0) for _, name, size in orphans if name]
        transaction.on_commit(lambda: _refetch_enqueue(sorted(created), again, files))
    logger.info(
        "refetch: %d entries, %d new fetches, %d joined, %d old fetches deleted",
        len(live),
        len(created),
        len(joined),
        len(orphans),
    )
    return RefetchResult(
        entries=len(live),
        fetches_created=len(created),
        fetches_joined=len(joined),
        fetches_deleted=len(orphans),
        expired=len(entries) - len(live),
    )


def _fetch_in_flight(*, old: Fetch, now: datetime) -> tuple[Fetch, bool]:
    """The fetch in flight for `old`'s query: an existing one, or a new one
    (True) with the same query text, sent to Kentik as the client wrote it."""
    existing = Fetch.objects.filter(query_hash=old.query_hash, state__in=IN_FLIGHT).first()
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            fetch = Fetch.objects.create(
                query_hash=old.query_hash,
                query_json=old.query_json,
                created_at=now,
                enqueued_at=now,
            )
        return fetch, True
    except IntegrityError:
        # A client's request created the in-flight fetch of this query first.
        return Fetch.objects.get(query_hash=old.query_hash, state__in=IN_FLIGHT), False


def _refetch_enqueue(created: list[int], again: list[int], files: list[tuple[str, int]]) -> None:
    _delete_files(files, dry_run=False)
    for fetch_id in created:
        _task_enqueue(fetch_id=fetch_id)  # enqueued_at was set at creation
    for fetch_id in again:
        fetch_enqueue(fetch_id=fetch_id)


def entry_extend(*, entry_ids: list[str], seconds: int) -> int:
    """Push the expiry of the selected live entries `seconds` later; how many.

    The id keeps its number: clients already hold it, and the id is only a
    key. After an extension that number no longer equals the expiry, which
    is `expires_at` (what every read checks, and what `/info` reports).
    Expired entries are left to pruning: their fetch may be gone already.
    """
    if seconds < 1:
        raise ValueError("seconds must be at least 1")
    extended = Entry.objects.filter(pk__in=entry_ids, expires_at__gt=timezone.now()).update(
        expires_at=F("expires_at") + timedelta(seconds=seconds)
    )
    logger.info("extended %d entries by %d s", extended, seconds)
    return extended
