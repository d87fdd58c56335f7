"""Queue workers' heartbeats: written by `manage.py worker`, read by /readyz
(`selectors.workers.worker_heartbeats`)."""

from datetime import timedelta

from django.utils import timezone

from imagecache import leases
from imagecache.models import WorkerHeartbeat


def worker_beat() -> None:
    """This process is a worker, and runs now."""
    WorkerHeartbeat.objects.update_or_create(
        name=leases.owner_id(), defaults={"seen_at": timezone.now()}
    )


def worker_gone() -> None:
    """This process stops being a worker."""
    WorkerHeartbeat.objects.filter(name=leases.owner_id()).delete()


def workers_forget(*, older_than: float = 3600) -> int:
    """Remove the heartbeats of workers gone without a word (kill -9): how many."""
    since = timezone.now() - timedelta(seconds=older_than)
    deleted, _ = WorkerHeartbeat.objects.filter(seen_at__lt=since).delete()
    return deleted
