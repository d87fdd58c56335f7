import importlib
import logging
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import DatabaseError, connection
from django_q.cluster import Cluster

from imagecache.services import workers

logger = logging.getLogger("imagecache.worker")


class Command(BaseCommand):
    help = "Run django-q2's cluster (as qcluster does), with this worker's heartbeat for /readyz."

    def handle(self, *args: Any, **options: Any) -> None:
        settings.SECRET_KEY  # noqa: B018 - as qcluster: the cluster signs its tasks
        # The tasks, and with them the fetch pipeline and the Kentik client,
        # imported once here, before the cluster forks its workers: they
        # share those pages, and no worker's first fetch waits for the
        # imports (0.2-0.35 s; bench/NOTES.md).
        importlib.import_module("imagecache.tasks")
        # Cluster() takes SIGTERM and SIGINT: its handler stops the sentinel,
        # which ends the loop below.
        cluster = Cluster()
        cluster.start()
        try:
            while cluster.sentinel.is_alive():
                if cluster.is_running and not cluster.is_stopping:
                    self.beat()
                cluster.sentinel.join(settings.WORKER_HEARTBEAT_INTERVAL)
        finally:
            try:
                workers.worker_gone()
            except DatabaseError:
                logger.warning("The worker's heartbeat could not be removed; it expires")
            connection.close()
        self.stdout.write("Worker stopped")

    def beat(self) -> None:
        try:
            workers.worker_beat()
        except DatabaseError as exc:
            # The database is down: /readyz will say so; the cluster goes on.
            logger.warning("The worker's heartbeat was not written: %s", exc)
            connection.close()
