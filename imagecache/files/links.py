"""Per-entry links for the fast path (`imagecache.api.fastpath`).

For every live entry whose image is ready, `CACHE_PATH/by-id/<entry id>` is a
symbolic link to the image file. The fast path answers `GET /image/{id}` from
that link alone, before Django runs, so every way an entry stops being served
removes its link first: deleting an entry (pruning, purging, eviction: the
`post_delete` signal) or pointing it at another fetch (refetch). A missing
link is never wrong, only slower: the request falls through to Django.

Saved charts have links of their own: `CACHE_PATH/by-chart/<query hash>`
links to the newest ready image of a chart's query (what its `ChartImage`
rows point at), made by the worker as a fetch becomes ready and removed with
the rows. The fast path finds the query hash of a chart URL in what it learnt
from Django's answers, which `CACHE_PATH/charts.stamp` invalidates: every
write of a chart appends a byte to it, so its size changes with each.

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
BY_CHART = "by-chart"
CHARTS_STAMP = "charts.stamp"


def enabled() -> bool:
    return settings.FAST_PATH and isinstance(default_storage, FileSystemStorage)


def directory() -> Path:
    # Only called once enabled() holds: the default storage is a FileSystemStorage.
    return Path(cast(FileSystemStorage, default_storage).location) / BY_ID


def chart_directory() -> Path:
    return directory().with_name(BY_CHART)


def stamp_path() -> Path:
    return directory().with_name(CHARTS_STAMP)


def entries_link(*, entry_ids: Iterable[str], file_name: str) -> None:
    """Point each entry's link at an image file (a storage name)."""
    if enabled():
        _link(directory(), names=entry_ids, file_name=file_name)


def entries_unlink(*, entry_ids: Iterable[str]) -> None:
    if enabled():
        _unlink(directory(), names=entry_ids)


def chart_images_link(*, query_key: str, file_name: str) -> None:
    """Point the link of a chart query at its newest ready image."""
    if enabled():
        _link(chart_directory(), names=[query_key], file_name=file_name)


def chart_images_unlink(*, query_keys: Iterable[str]) -> None:
    if enabled():
        _unlink(chart_directory(), names=query_keys)


def charts_stamp() -> tuple[int, int, int] | None:
    """The version of the saved charts, as the fast path compares it."""
    return stamp_read(str(stamp_path())) if enabled() else None


def stamp_read(path: str) -> tuple[int, int, int] | None:
    """The version in the stamp at `path`: one stat."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    # The inode and time too: a stamp made anew (the cache wiped) starts small again.
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


def charts_stamp_touch() -> None:
    """Say that a chart changed: whatever a process learnt of charts before is
    forgotten. One byte appended, so that two writes within one tick of the
    file system's clock still differ."""
    if not enabled():
        return
    path = stamp_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, b".")
    finally:
        os.close(fd)


def _link(links: Path, *, names: Iterable[str], file_name: str) -> None:
    links.mkdir(parents=True, exist_ok=True)
    target = os.path.join("..", file_name)
    for name in names:
        # A name of this call's own: threads and processes link at once.
        temp = links / f".{name}.{uuid.uuid4().hex}.tmp"
        try:
            temp.symlink_to(target)
            # Atomic: a reader sees the old link or the new one, never none.
            os.replace(temp, links / name)
        except OSError:
            # A missing link is only slower (Django answers): never fail for it.
            logger.exception("No fast-path link %s", name)
            with contextlib.suppress(OSError):
                temp.unlink()


def _unlink(links: Path, *, names: Iterable[str]) -> None:
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            (links / name).unlink()
