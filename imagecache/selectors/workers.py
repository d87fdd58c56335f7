"""The queue workers that say they run, for /readyz."""

from datetime import timedelta
from typing import Any

from django.utils import timezone

from imagecache.models import WorkerHeartbeat


def worker_heartbeats(*, seconds: float) -> list[tuple[str, Any]]:
    """The queue workers ("host:pid") whose last heartbeat is younger than
    `seconds`, with its time."""
    since = timezone.now() - timedelta(seconds=seconds)
    return list(WorkerHeartbeat.objects.filter(seen_at__gt=since).values_list("name", "seen_at"))
