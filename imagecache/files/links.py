"""Per-entry links for the fast path (`imagecache.api.fastpath`).

For every live entry whose image is ready, `CACHE_PATH/by-id/<entry id>` is a
symbolic link to the image file. The fast path answers `GET /image/{id}` from
that link alone, before Django runs, so every way an entry stops being served
removes its link first: deleting an entry (pruning, purging, eviction: the
`post_delete` signal) or pointing it at another fetch (refetch). A missing
link is never wrong, only slower: the request falls through to Django.

Filesystem storage only; with object storage there are no links and every
request goes through Django.
"""

import contextlib
import logging
import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import cast

from django.conf import settings
from django.core.files.storage import FileSystemStorage, default_storage

logger = logging.getLogger(__name__)

BY_ID = "by-id"


def enabled() -> bool:
    return settings.FAST_PATH and isinstance(default_storage, FileSystemStorage)


def directory() -> Path:
    # Only called once enabled() holds: the default storage is a FileSystemStorage.
    return Path(cast(FileSystemStorage, default_storage).location) / BY_ID


def entries_link(*, entry_ids: Iterable[str], file_name: str) -> None:
    """Point each entry's link at an image file (a storage name)."""
    if not enabled():
        return
    links = directory()
    links.mkdir(parents=True, exist_ok=True)
    target = os.path.join("..", file_name)
    for entry_id in entry_ids:
        # A name of this call's own: threads and processes link at once.
        temp = links / f".{entry_id}.{uuid.uuid4().hex}.tmp"
        try:
            temp.symlink_to(target)
            # Atomic: a reader sees the old link or the new one, never none.
            os.replace(temp, links / entry_id)
        except OSError:
            # A missing link is only slower (Django answers): never fail for it.
            logger.exception("No fast-path link for entry %s", entry_id)
            with contextlib.suppress(OSError):
                temp.unlink()


def entries_unlink(*, entry_ids: Iterable[str]) -> None:
    if not enabled():
        return
    links = directory()
    for entry_id in entry_ids:
        with contextlib.suppress(FileNotFoundError):
            (links / entry_id).unlink()
