"""Who holds a fetch, and whether they are still alive.

A worker that claims a fetch writes its owner id ("host:pid") and a lease
into the row, and a heartbeat renews the lease while Kentik renders. A fetch
is abandoned when its lease ran out, or, on the owner's own host, as soon as
the owner process is gone: after `kill -9` and a restart on the same host,
a fetch in flight is taken up at once rather than after its lease.
"""

import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

from imagecache.models import Fetch, FetchState
from imagecache.processes import process_alive

logger = logging.getLogger(__name__)

# The name this node's leases carry. Nodes that share a host name (containers
# with the host's network, tests) must set NODE_NAME apart, or one would take
# the other's processes for its own.
HOST = os.environ.get("NODE_NAME") or socket.gethostname()


def owner_id() -> str:
    return f"{HOST}:{os.getpid()}"


def abandoned(owner: str, lease_until: datetime | None, now: datetime) -> bool:
    if lease_until is None or lease_until <= now:
        return True
    host, _, pid = owner.rpartition(":")
    return host == HOST and pid.isdigit() and not process_alive(int(pid))


@contextmanager
def kept(*, fetch_id: int, attempt: int) -> Iterator[None]:
    """Renew this worker's lease on a fetch every third of FETCH_LEASE while
    the block runs; a claim taken over by someone else (another attempt) is
    not renewed."""
    stop = threading.Event()
    thread = threading.Thread(
        target=_heartbeat, args=(fetch_id, attempt, stop), name=f"lease-{fetch_id}", daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _heartbeat(fetch_id: int, attempt: int, stop: threading.Event) -> None:
    period = settings.FETCH_LEASE / 3
    try:
        while not stop.wait(period):
            try:
                renewed = Fetch.objects.filter(
                    pk=fetch_id, state=FetchState.FETCHING, attempts=attempt
                ).update(lease_until=timezone.now() + timedelta(seconds=settings.FETCH_LEASE))
            except DatabaseError:
                logger.exception("fetch %s: lease not renewed", fetch_id)
                continue
            if not renewed:
                return
    finally:
        connection.close()
