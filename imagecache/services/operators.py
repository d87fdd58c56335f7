"""The operators' actions (the admin): purge, refetch, extend."""

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from imagecache.files import links
from imagecache.models import Entry, Fetch, FetchState
from imagecache.services import queue
from imagecache.services.entries import fetch_share
from imagecache.services.housekeeping import (
    Files,
    RemovalResult,
    fetch_files,
    fetches_delete_unused,
    files_delete,
)

logger = logging.getLogger(__name__)


def entry_purge(*, entry_ids: list[str]) -> RemovalResult:
    """Delete entries now, and each fetch (with its file) that no other entry uses.

    A fetch in flight that is purged is harmless: its task finds no row to
    claim, or stores nothing and drops its file (see `services.storing`).
    """
    with transaction.atomic():
        entries = Entry.objects.filter(pk__in=entry_ids)
        fetch_ids = set(entries.values_list("fetch_id", flat=True))
        _, deleted = entries.delete()
        entry_count = deleted.get(Entry._meta.label, 0)
        orphans = fetches_delete_unused(fetch_ids=fetch_ids)
    files = fetch_files(orphans)
    transaction.on_commit(lambda: files_delete(files))
    logger.info("purged %d entries, %d fetches", entry_count, len(orphans))
    return RemovalResult.of(entries=entry_count, fetches=len(orphans), files=files)


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
            fetch, is_new = fetch_share(
                query_key=entry.fetch.query_hash,
                query_json=entry.fetch.query_json,
                now=now,
                ready_too=False,
            )
            (created if is_new else joined).add(fetch.pk)
            if entry.fetch_id != fetch.pk:
                Entry.objects.filter(pk=entry.pk).update(fetch=fetch)
                links.entries_unlink(entry_ids=[entry.pk])
        joined -= created
        orphans = fetches_delete_unused(fetch_ids=old_fetch_ids - created - joined)
        waiting = Fetch.objects.filter(pk__in=joined, state=FetchState.PENDING)
        again = sorted(waiting.values_list("pk", flat=True))
        files = fetch_files(orphans)
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


def _refetch_enqueue(created: list[int], again: list[int], files: Files) -> None:
    files_delete(files)
    for fetch_id in created:
        queue.task_enqueue(fetch_id=fetch_id)  # enqueued_at was set at creation
    for fetch_id in again:
        queue.fetch_enqueue(fetch_id=fetch_id)


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
