"""django-q2 tasks: they take ids and call services.

Queued tasks and `Schedule` rows store these functions' dotted paths
(`imagecache.tasks.fetch_image`, `imagecache.tasks.fetch_portal_link`,
`imagecache.tasks.maintain_cache`): they stay
here. Only queue workers import this module, and with it the fetch pipeline
and the Kentik client; web processes enqueue by name.
"""

from django.utils import timezone

from imagecache.services import fetching, housekeeping, portal_fetch, shield, workers


def fetch_image(fetch_id: int) -> None:
    fetching.fetch_run(fetch_id=fetch_id)


def fetch_portal_link(link_id: int) -> str:
    return portal_fetch.portal_link_fetch(link_id=link_id)


def maintain_cache() -> str:
    """The periodic work: prune, evict past CACHE_MAX_BYTES, reap abandoned
    fetches, forget the heartbeats of workers long gone and the Kentik calls
    that left the budget's window."""
    result = housekeeping.cache_prune() + housekeeping.cache_evict()
    reaped = housekeeping.fetch_reap()
    workers.workers_forget()
    shield.calls_forget(now=timezone.now())
    return (
        f"pruned {result.entries} entries, {result.fetches} fetches, {result.files} files, "
        f"{result.bytes_freed} bytes; re-enqueued {len(reaped)} fetches"
    )
