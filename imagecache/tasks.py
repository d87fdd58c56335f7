"""django-q2 tasks: they take ids and call services."""

from imagecache import services


def fetch_image(fetch_id: int) -> None:
    services.fetch_run(fetch_id=fetch_id)


def maintain_cache() -> str:
    """The periodic work: prune, evict past CACHE_MAX_BYTES, reap abandoned fetches."""
    result = services.cache_prune() + services.cache_evict()
    reaped = services.fetch_reap()
    return (
        f"pruned {result.entries} entries, {result.fetches} fetches, {result.files} files, "
        f"{result.bytes_freed} bytes; re-enqueued {len(reaped)} fetches"
    )
