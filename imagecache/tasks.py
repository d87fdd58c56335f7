"""django-q2 tasks: they take ids and call services."""

from imagecache import services


def fetch_image(fetch_id: int) -> None:
    services.fetch_run(fetch_id=fetch_id)


def prune_cache() -> str:
    result = services.cache_prune()
    return f"pruned {result.entries} entries, {result.files} files, {result.bytes_freed} bytes"
