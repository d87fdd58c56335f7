"""The image of a fetch stored and recorded, run by django-q2's workers: its
file saved (making room on a full disk), the fetch marked ready, its entries
linked for the fast path and its chart images pointed at it; and the image an
earlier attempt stored but did not record, found again.
"""

import errno
import hashlib
import logging
import os
import time

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import DatabaseError, connection
from django.utils import timezone

from imagecache import kentik
from imagecache.files import links
from imagecache.files.names import image_name_make, image_name_parse, image_prefix
from imagecache.media import BY_EXTENSION
from imagecache.models import Entry, Fetch
from imagecache.services import charts, housekeeping
from imagecache.services.finishing import fetch_mark_ready

logger = logging.getLogger(__name__)


def file_save(*, fetch: Fetch, chart: kentik.Chart) -> tuple[str, str]:
    """Store the image; its storage name and content hash. A full disk with
    CACHE_MAX_BYTES set evicts the least recently read images to make room."""
    content_hash = hashlib.sha256(chart.data).hexdigest()
    name = image_name_make(
        query_hash=fetch.query_hash,
        fetch_id=fetch.pk,
        content_hash=content_hash,
        media_type=chart.media_type,
    )
    for attempt in range(4):
        try:
            return default_storage.save(name, ContentFile(chart.data)), content_hash
        except OSError as exc:
            if (
                exc.errno not in (errno.ENOSPC, errno.EDQUOT)
                or not settings.CACHE_MAX_BYTES
                or attempt == 3
            ):
                raise
            # Blocks are rounded up: ask for a little more than the image.
            freed = housekeeping.cache_evict(room=len(chart.data) + 64 * 1024)
            if not freed.files:
                raise
            logger.warning("fetch %s: the disk was full; evicted %d images", fetch.pk, freed.files)
    raise AssertionError("unreachable: the last attempt returns or raises")


def store_failure(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "The cache's disk is full: the image could not be stored"
    # strerror alone: the exception's text would name the path.
    return f"The image could not be stored: {exc.strerror or type(exc).__name__}"


def fetch_record(*, fetch: Fetch, chart: kentik.Chart, saved_name: str, content_hash: str) -> None:
    """Mark the fetch ready with its stored image. The image has cost a Kentik
    call: while the database does not answer, keep trying (up to
    FETCH_RECORD_PATIENCE) rather than let the task fail and call Kentik again.
    A worker that dies meanwhile leaves the file, which the next attempt
    finds (`stored_image`)."""
    now = timezone.now()
    if links.enabled():
        # The file's time is the image's Last-Modified on the fast path.
        os.utime(default_storage.path(saved_name), (now.timestamp(), now.timestamp()))
    deadline = time.monotonic() + settings.FETCH_RECORD_PATIENCE
    pause = 0.1
    while True:
        try:
            stored = fetch_mark_ready(
                fetch=fetch,
                saved_name=saved_name,
                media_type=chart.media_type,
                size=len(chart.data),
                content_hash=content_hash,
                now=now,
            )
            break
        except DatabaseError:
            if time.monotonic() + pause > deadline:
                raise
            logger.warning("fetch %s: the database did not answer; recording again", fetch.pk)
            connection.close()
            time.sleep(pause)
            pause = min(pause * 2, 2.0)
    if not stored:
        # Purged, or finished by a worker that took the fetch over meanwhile.
        default_storage.delete(saved_name)
        logger.info("fetch %s: finished elsewhere or purged, image dropped", fetch.pk)
        return
    _entries_link(fetch_id=fetch.pk, file_name=saved_name)
    fetch.finished_at, fetch.file_name = now, saved_name
    try:
        charts.chart_images_point(fetch=fetch)
    except DatabaseError:
        # The image is recorded; its chart images point at it after the next render.
        logger.warning("fetch %s: its chart images were not pointed at it", fetch.pk)


def stored_image(fetch: Fetch) -> tuple[kentik.Chart, str, str] | None:
    """An image an earlier attempt of this fetch stored but did not record (the
    database or the worker went away), with its storage name and content hash:
    recorded now, without asking Kentik again."""
    prefix = image_prefix(query_hash=fetch.query_hash, fetch_id=fetch.pk)
    directory, _, start = prefix.rpartition("/")
    try:
        names = default_storage.listdir(directory)[1]
    except (FileNotFoundError, NotADirectoryError):
        return None
    for name in names:
        named = image_name_parse(name) if name.startswith(start) else None
        if named is None:
            continue
        content_hash, media_type = named.content_hash, BY_EXTENSION[named.extension]
        saved_name = f"{directory}/{name}"
        with default_storage.open(saved_name, "rb") as image:
            data = image.read()
        if hashlib.sha256(data).hexdigest() == content_hash:
            return kentik.Chart(media_type=media_type, data=data), saved_name, content_hash
    return None


def _entries_link(*, fetch_id: int, file_name: str) -> None:
    """Link the entries of a ready fetch for the fast path; then unlink any
    that went meanwhile (their delete may have run before their link)."""
    if not links.enabled():
        return
    entry_ids = set(Entry.objects.filter(fetch_id=fetch_id).values_list("pk", flat=True))
    links.entries_link(entry_ids=entry_ids, file_name=file_name)
    still = set(Entry.objects.filter(fetch_id=fetch_id).values_list("pk", flat=True))
    links.entries_unlink(entry_ids=entry_ids - still)
