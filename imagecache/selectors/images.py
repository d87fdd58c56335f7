"""Reads of an entry and of the images that may answer for it: its own, an
older one of its query (stale-if-error), a fetch's for the admin."""

from datetime import timedelta

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.utils import timezone

from imagecache.errors import EntryNotFound
from imagecache.ids import ENTRY_ID_RE
from imagecache.models import Entry, Fetch, FetchState


def entry_get(*, entry_id: str) -> Entry:
    """A live entry with its fetch; EntryNotFound if unknown, malformed or expired."""
    if not ENTRY_ID_RE.match(entry_id):
        raise EntryNotFound()
    entry = Entry.objects.select_related("fetch").filter(pk=entry_id).first()
    if entry is None or entry.expires_at <= timezone.now():
        raise EntryNotFound()
    return entry


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
