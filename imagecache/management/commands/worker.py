import importlib
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from multiprocessing import util as multiprocessing_util
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import DatabaseError, connection
from django_q.cluster import Cluster

from imagecache.processes import die_with_parent, supervisor_gone
from imagecache.services import charts, workers

logger = logging.getLogger("imagecache.worker")


class Command(BaseCommand):
    help = "Run django-q2's cluster (as qcluster does), with this worker's heartbeat for /readyz."

    def handle(self, *args: Any, **options: Any) -> None:
        settings.SECRET_KEY  # noqa: B018 - as qcluster: the cluster signs its tasks
        # The tasks, and with them the fetch pipeline and the Kentik client,
        # imported once here, before the cluster forks its workers: they
        # share those pages, and no worker's first fetch waits for the
        # imports.
        importlib.import_module("imagecache.tasks")
        cluster = Cluster()
        # Cluster() takes SIGTERM and SIGINT, and its handler waits, in this
        # thread, for the sentinel to stop, which waits for the fetches in
        # flight. A signal in the middle of a heartbeat left the heartbeat's
        # transaction open meanwhile: on SQLite its write lock kept those
        # fetches from recording their images until the busy timeout (30 s).
        # Here the handler only says to stop, and the loop stops the cluster
        # between two heartbeats. (A SimpleQueue, whose put may be called
        # from a signal handler: an Event's set would wait for the lock its
        # wait holds, in the same thread.) It is in before the cluster
        # starts: Cluster's own, during its start, lost a stop that came
        # before the sentinel was running, and the cluster ran on.
        signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda signum, _frame: signals.put(signum))
        # Every process of the cluster (the sentinel, and its workers, monitor
        # and pusher) ends with its parent: killed, this process would leave
        # them waiting on their queues for ever, and no one can stop them.
        multiprocessing_util.register_after_fork(cluster, _die_with_parent)
        cluster.start()
        stopping = False
        next_beat = next_warm = 0.0
        try:
            while cluster.sentinel.is_alive() and not stopping:
                # Where the kernel does not signal an orphan (not Linux).
                if supervisor_gone():
                    stopping = True
                    break
                now = time.monotonic()
                if cluster.is_running and not cluster.is_stopping:
                    if now >= next_beat:
                        self.beat()
                        next_beat = now + settings.WORKER_HEARTBEAT_INTERVAL
                    # Every couple of seconds: django-q2's schedules are whole
                    # minutes, far coarser than a chart's max_age.
                    if now >= next_warm:
                        self.keep_warm()
                        next_warm = now + charts.KEEP_WARM_INTERVAL
                try:
                    signals.get(timeout=max(0.05, min(next_beat, next_warm) - time.monotonic()))
                    stopping = True
                except queue.Empty:
                    pass
            if stopping:
                deadline = _orphan_deadline(cluster)
                cluster.stop()
                if deadline is not None:
                    deadline.cancel()
        finally:
            try:
                workers.worker_gone()
            except DatabaseError:
                logger.warning("The worker's heartbeat could not be removed; it expires")
            connection.close()
        self.stdout.write("Worker stopped")

    def keep_warm(self) -> None:
        try:
            charts.chart_images_keep_warm()
        except Exception:  # the loop runs the cluster: it must outlive a bad look
            logger.exception("Watched charts were not kept warm")
            connection.close()

    def beat(self) -> None:
        try:
            workers.worker_beat()
        except DatabaseError as exc:
            # The database is down: /readyz will say so; the cluster goes on.
            logger.warning("The worker's heartbeat was not written: %s", exc)
            connection.close()


# How long a cluster whose supervisor is gone may take to stop: a fetch in
# flight is taken up again (by the next start's recover_pending, or by
# another host once its lease runs out), and no one else would end it.
ORPHAN_STOP_TIMEOUT = 5.0


def _orphan_deadline(cluster: Cluster) -> threading.Timer | None:
    """When `manage.py serve` is gone, kill the cluster's sentinel (and with
    it, by their parent-death signal, its processes) if it has not stopped
    in ORPHAN_STOP_TIMEOUT."""
    if not supervisor_gone():
        return None
    logger.warning("manage.py serve is gone; the cluster has %s s to stop", ORPHAN_STOP_TIMEOUT)
    timer = threading.Timer(ORPHAN_STOP_TIMEOUT, os.kill, (cluster.sentinel.pid, signal.SIGKILL))
    timer.daemon = True
    timer.start()
    return timer


def _die_with_parent(cluster: Cluster) -> None:
    """In each process of the cluster, just forked."""
    parent = multiprocessing.parent_process()
    if parent is not None and parent.pid is not None:
        die_with_parent(signal.SIGKILL, parent.pid)
