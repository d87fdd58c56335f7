"""Housekeeping: expired entries pruned, images evicted past CACHE_MAX_BYTES,
files no row needs removed, and fetches nobody works on enqueued again.

Run by the maintenance schedule (`imagecache.tasks.maintain_cache`), the
`prune_cache` and `recover_pending` commands, and the waiters of the web
processes (which reap the fetches they wait on).
"""

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, Q, Sum
from django.utils import timezone

from imagecache import leases
from imagecache.files import links
from imagecache.files.names import IMAGES
from imagecache.models import (
    ENTRY_TALLY,
    ChartImage,
    Entry,
    Fetch,
    FetchPriority,
    FetchState,
    tally_minute,
)
from imagecache.services import queue

logger = logging.getLogger(__name__)

# Removed fetches: (pk, file name, size), as their rows said.
FetchRows = Iterable[tuple[int, str, int | None]]
# Files to delete: (storage name, size).
Files = list[tuple[str, int]]


@dataclass(frozen=True)
class RemovalResult:
    """What a prune, an eviction or a purge removed."""

    entries: int = 0
    fetches: int = 0
    files: int = 0
    bytes_freed: int = 0

    def __add__(self, other: "RemovalResult") -> "RemovalResult":
        return RemovalResult(
            self.entries + other.entries,
            self.fetches + other.fetches,
            self.files + other.files,
            self.bytes_freed + other.bytes_freed,
        )

    @classmethod
    def of(cls, *, entries: int, fetches: int, files: Files) -> "RemovalResult":
        return cls(entries, fetches, len(files), sum(size for _, size in files))


def fetch_files(fetches: FetchRows) -> Files:
    """The image files of removed fetches (those that had one)."""
    return [(name, size or 0) for _, name, size in fetches if name]


def files_delete(files: Files) -> None:
    for name, _ in files:
        default_storage.delete(name)


def fetches_delete_unused(*, fetch_ids: set[int]) -> list[tuple[int, str, int | None]]:
    """Delete those of the fetches that no entry uses; their (pk, file, size).

    The delete applies the condition again, so a fetch that a new entry took
    up meanwhile is kept (the same rule as `cache_prune`).
    """
    unused = Fetch.objects.filter(pk__in=fetch_ids, entries__isnull=True)
    doomed = list(unused.values_list("pk", "file_name", "size"))
    unused.filter(pk__in=[pk for pk, _, _ in doomed]).delete()
    return doomed


def fetch_reap(*, fetch_ids: list[int] | None = None) -> list[int]:
    """Enqueue again the fetches nobody is working on.

    That is every pending fetch whose task was enqueued longer ago than the
    broker takes to hand a task out again (a broker may lose a task whose
    worker died), and every fetching one whose worker died (lease run out, or
    its process gone from this host). `fetch_ids` limits the look to those.
    """
    now = timezone.now()
    stale_enqueue = now - timedelta(seconds=settings.Q_CLUSTER["retry"])
    # The states first, on their own, for an index on the state.
    candidates = Fetch.objects.filter(state__in=[FetchState.PENDING, FetchState.FETCHING]).filter(
        Q(state=FetchState.FETCHING)
        | Q(enqueued_at__isnull=True)
        | Q(enqueued_at__lt=stale_enqueue)
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
        queue.fetch_enqueue(fetch_id=fetch.pk)
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
        queue.fetch_enqueue(fetch_id=fetch_id)
    return reaped + others


# Rows removed per transaction by a prune: each batch holds SQLite's write
# lock (or PostgreSQL's row locks) for milliseconds, not for the whole prune,
# so that a POST arriving meanwhile is held up by one batch at most.
PRUNE_BATCH = 500


def cache_prune(*, dry_run: bool = False) -> RemovalResult:
    """Remove expired entries, the fetches no live entry uses (but for those
    of `prune_kept`), their files, and files no row needs (temp files and
    images left by a crash).

    In batches of PRUNE_BATCH rows, each its own transaction: the expired
    entries first, then the fetches left without any entry."""
    now = timezone.now()
    if dry_run:
        expired = Entry.objects.filter(expires_at__lte=now)
        orphans = Fetch.objects.exclude(entries__expires_at__gt=now).exclude(prune_kept(now=now))
        entry_count = expired.count()
        doomed = list(orphans.values_list("pk", "file_name", "size"))
    else:
        entry_count, fetch_ids = _expired_entries_delete(now=now)
        _tally_forget(now=now)
        _chart_images_forget(now=now)
        doomed = _orphan_fetches_delete(candidates=fetch_ids, now=now)
    files = fetch_files(doomed)
    if not dry_run:
        files_delete(files)
    # Once the pruned fetches' files are gone, which would be strays now.
    strays = _stray_files(now=now)
    if not dry_run:
        files_delete(strays)
        _stray_links_remove()
    files += strays
    return RemovalResult.of(entries=entry_count, fetches=len(doomed), files=files)


# The longest sleep of SQLite's busy handler between two tries of a writer
# waiting for the lock (sqlite3.c, sqliteDefaultBusyCallback).
SQLITE_BUSY_SLEEP_MAX = 0.1


def _yield_write_lock(held: float) -> None:
    """On SQLite, leave the write lock free between two batches for at least
    as long as a waiting writer sleeps between its tries, and as long as the
    last batch held it: otherwise a POST could find it taken at every try."""
    if connection.vendor == "sqlite":
        time.sleep(max(held, SQLITE_BUSY_SLEEP_MAX))


def _expired_entries_delete(*, now: datetime) -> tuple[int, set[int]]:
    """Delete the entries expired at `now`; how many, and their fetches."""
    count = 0
    fetch_ids: set[int] = set()
    while True:
        # Read before the write transaction: a reader takes no lock (SQLite's
        # WAL, PostgreSQL). In expiry order: along `entry_expires`, which
        # stops at the batch. Without an order PostgreSQL may scan the table
        # for the first rows it finds, and every batch scans past those
        # deleted before.
        batch = list(
            Entry.objects.filter(expires_at__lte=now)
            .order_by("expires_at")
            .values_list("pk", "fetch_id")[:PRUNE_BATCH]
        )
        if not batch:
            return count, fetch_ids
        pks = [pk for pk, _ in batch]
        # Their fast-path links first, as every way an entry goes; then the
        # rows, by key, in a transaction that holds the write lock for the
        # DELETE alone: `_raw_delete` is Django's own fast delete, without
        # the collector, which would read the rows again and send each one's
        # post_delete signal (which unlinks it) under the lock.
        links.entries_unlink(entry_ids=pks)
        started = time.perf_counter()
        with transaction.atomic():
            expired = Entry.objects.filter(pk__in=pks, expires_at__lte=now)
            count += expired._raw_delete(expired.db)
        fetch_ids.update(fetch_id for _, fetch_id in batch)
        if len(batch) < PRUNE_BATCH:
            return count, fetch_ids
        _yield_write_lock(time.perf_counter() - started)


def _tally_forget(*, now: datetime) -> None:
    """Drop the tally of the minutes gone by: `/info` sums only those after
    the current one. An expired entry deleted later, by the next prune,
    adds a negative row there again, for that prune to drop.

    On PostgreSQL, rows that another statement holds are left for the next
    prune: a second prune at once (the schedule's and `prune_cache`) holds
    rows of these minutes until its batch commits, and waiting for them here
    could deadlock with it. SQLite has one writer at a time."""
    # Written out: the tally is the triggers' table (migration 0006), with no model.
    condition = "minute < %s"
    if connection.vendor == "postgresql":
        condition = (
            f"(minute, shard) IN (SELECT minute, shard FROM {ENTRY_TALLY}"
            " WHERE minute < %s FOR UPDATE SKIP LOCKED)"
        )
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {ENTRY_TALLY} WHERE {condition}",
            [connection.ops.adapt_datetimefield_value(tally_minute(now))],
        )


def chart_watched_since(now: datetime) -> datetime:
    """Chart images viewed since then are kept, with the image they point at:
    kept warm for CHART_KEEP_WARM, and then still the image that answers
    (stale-if-error) for STALE_IF_ERROR."""
    return now - timedelta(seconds=settings.CHART_KEEP_WARM + settings.STALE_IF_ERROR)


def stale_kept(*, now: datetime) -> Q:
    """The fetches a prune keeps without a live entry: the newest ready image
    of each query within STALE_IF_ERROR, which answers for the query's next
    fetch if Kentik fails it; and the image of each chart image viewed
    since `chart_watched_since`."""
    watched = ChartImage.objects.filter(
        fetch=OuterRef("pk"), viewed_at__gte=chart_watched_since(now)
    )
    if not settings.STALE_IF_ERROR:
        return Q(Exists(watched))
    newer = Fetch.objects.filter(
        query_hash=OuterRef("query_hash"),
        state=FetchState.READY,
        finished_at__gt=OuterRef("finished_at"),
    )
    return (
        Q(
            state=FetchState.READY,
            finished_at__gte=now - timedelta(seconds=settings.STALE_IF_ERROR),
        )
        & ~Q(Exists(newer))
    ) | Q(Exists(watched))


def prune_kept(*, now: datetime) -> Q:
    """The fetches a prune keeps though no live entry uses them: those of
    `stale_kept`, any whose Kentik call is under way (dropping its image
    would cost a second call), and the refreshes waiting in line. A refresh
    has no entry of its own and may wait long: through a Kentik outage, the
    refreshes of every watched chart do, and Kentik must see each one once
    it is back."""
    in_use = Q(state=FetchState.FETCHING) | Q(
        state=FetchState.PENDING, priority=FetchPriority.REFRESH
    )
    return stale_kept(now=now) | in_use


def _chart_images_forget(*, now: datetime) -> int:
    """Delete the chart images nobody viewed since `chart_watched_since`: a
    value set asked for once is not kept for ever. Their fetches are then
    pruned as any other."""
    unwatched = ChartImage.objects.filter(viewed_at__lt=chart_watched_since(now))
    deleted, _ = unwatched.delete()
    return deleted


def _orphan_fetches_delete(
    *, candidates: set[int], now: datetime
) -> list[tuple[int, str, int | None]]:
    """Delete the fetches that no entry uses (once the expired entries are
    gone: those that no live entry uses), in batches; their (pk, file, size).

    First those of the entries just deleted, by key; then one look for any
    other (the pruned ones of a prune that stopped half-way)."""
    doomed: list[tuple[int, str, int | None]] = []
    ordered = sorted(candidates)
    for start in range(0, len(ordered), PRUNE_BATCH):
        doomed += _fetches_delete_unused_batch(ordered[start : start + PRUNE_BATCH], now=now)
    while True:
        others = list(
            Fetch.objects.filter(entries__isnull=True)
            .exclude(prune_kept(now=now))
            .values_list("pk", flat=True)[:PRUNE_BATCH]
        )
        if not others:
            return doomed
        batch = _fetches_delete_unused_batch(others, now=now)
        doomed += batch
        # Fewer than asked: that was all. None deleted: each was taken up
        # meanwhile, and the next look would find them again.
        if len(others) < PRUNE_BATCH or not batch:
            return doomed


def _fetches_delete_unused_batch(
    fetch_ids: list[int], *, now: datetime
) -> list[tuple[int, str, int | None]]:
    started = time.perf_counter()
    with transaction.atomic():
        # Locked first (PostgreSQL; SQLite's write lock covers it), then
        # looked at again: a fetch that a new entry took up meanwhile is
        # kept, and none can take up a locked one until the delete commits.
        locked = list(
            Fetch.objects.select_for_update().filter(pk__in=fetch_ids).values_list("pk", flat=True)
        )
        batch = list(
            Fetch.objects.filter(pk__in=locked, entries__isnull=True)
            .exclude(prune_kept(now=now))
            .values_list("pk", "file_name", "size")
        )
        if batch:
            Fetch.objects.filter(pk__in=[pk for pk, _, _ in batch]).delete()
    _yield_write_lock(time.perf_counter() - started)
    return batch


def _stray_files(*, now: datetime) -> Files:
    """Files under images/ that no fetch names, old enough not to be a fetch
    about to be marked ready."""
    known = set(Fetch.objects.exclude(file_name="").values_list("file_name", flat=True))
    cutoff = now - timedelta(seconds=settings.STRAY_FILE_AGE)
    strays = []
    for name in _storage_walk(IMAGES):
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


def cache_evict(*, incoming: int = 0, room: int = 0, dry_run: bool = False) -> RemovalResult:
    """Past CACHE_MAX_BYTES (counting an `incoming` image about to be stored),
    remove the least recently read ready images, and their entries, until the
    total is under 90% of it; or, with `room`, until that many bytes are freed
    (a disk that filled up below the bound). Pending fetches stay."""
    limit = settings.CACHE_MAX_BYTES
    if not limit:
        return RemovalResult()
    ready = Fetch.objects.filter(state=FetchState.READY)
    total = ready.aggregate(total=Sum("size"))["total"] or 0
    if not room and total + incoming <= limit:
        return RemovalResult()
    target = total - room if room else int(limit * 0.9) - incoming
    victims: list[tuple[int, str, int | None]] = []
    oldest_first = ready.order_by(F("last_read_at").asc(nulls_first=True), "finished_at")
    for pk, name, size in oldest_first.values_list("pk", "file_name", "size").iterator():
        if total <= target:
            break
        victims.append((pk, name, size))
        total -= size or 0
    entries = Entry.objects.filter(fetch__in=[pk for pk, _, _ in victims]).count()
    if not dry_run:
        Fetch.objects.filter(pk__in=[pk for pk, _, _ in victims], state=FetchState.READY).delete()
    files = fetch_files(victims)
    if not dry_run:
        files_delete(files)
    logger.info(
        "evicted %d images, %d bytes", len(victims), sum(size or 0 for _, _, size in victims)
    )
    return RemovalResult.of(entries=entries, fetches=len(victims), files=files)
