"""The claim of the next fetch in line, run by django-q2's workers: under the
deployment's bound on Kentik calls in flight, its pause and its budget, with
the line read and the lease taken in written-out SQL, serialized on the
shield's lock row.
"""

import enum
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from imagecache import leases
from imagecache.models import IN_FLIGHT, Fetch, FetchState
from imagecache.services import shield
from imagecache.services.finishing import fetch_fail, sql_update

logger = logging.getLogger(__name__)


class ClaimOutcome(enum.Enum):
    CLAIMED = "claimed"
    WAIT = "wait"  # no call may go now (slots, pause, budget): ask again later
    SKIPPED = "skipped"  # nothing left in line: done, gone, or held by live workers


@dataclass(frozen=True)
class Claim:
    outcome: ClaimOutcome
    fetch: Fetch | None = None
    # This call goes first after a pause (see services.shield).
    probe: bool = False
    reason: str = ""
    wait: float = 0.0


# How many of the first in line a claim looks at (the first may have been
# taken over meanwhile by a live worker on another host, and so on).
LINE_LOOK = 8


def fetch_claim(*, fetch_id: int, waited: bool = False) -> Claim:
    """Take the first fetch in line for this worker, under the deployment's
    bound on calls in flight, its pause and its budget.

    A task is a right to make one call, not a call for its own fetch: every
    pending fetch has a task of its own, and whichever runs first takes the
    first in line (waited on by a client, then normal, then refresh-ahead;
    the oldest first), so that tasks stuck behind the budget serve the line
    in its order. A task that has not `waited` yet (no call was held back)
    takes its own fetch before the others of its class.

    Claims are serialized on the lock row, so that the count of live leases
    bounds Kentik calls across the deployment; the conditional update makes a
    claim that lost a race a no-op.
    """
    now = timezone.now()
    owner = leases.owner_id()
    with transaction.atomic():
        gate = shield.gate_lock()
        first = _line_first(fetch_id=fetch_id, now=now, waited=waited, probe=gate.probe_next(now))
        if first is None:
            return Claim(ClaimOutcome.SKIPPED)
        fetch, live = first
        if live >= settings.KENTIK_MAX_CONCURRENCY:
            return Claim(ClaimOutcome.WAIT, reason="busy", wait=SLOT_POLL)
        admission = shield.admit(gate=gate, now=now)
        if not admission.open:
            return Claim(ClaimOutcome.WAIT, reason=admission.reason, wait=admission.wait)
        lease = {  # in _LEASE's order
            "state": FetchState.FETCHING,
            "started_at": now,
            "lease_until": now + timedelta(seconds=settings.FETCH_LEASE),
            "lease_owner": owner,
            "attempts": fetch.attempts + 1,
        }
        claimed = sql_update(_LEASE, [*lease.values(), fetch.pk, fetch.state, fetch.attempts])
        if not claimed:
            return Claim(ClaimOutcome.WAIT, reason="raced", wait=0)
        if admission.probe:
            shield.probe_begin(gate=gate, now=now, owner=owner)
        shield.call_record(now=now)
    for field, value in lease.items():
        setattr(fetch, field, value)
    return Claim(ClaimOutcome.CLAIMED, fetch, probe=admission.probe)


# The claim's line read, and its own fetch's, written out as the ORM built
# them: it built them anew in every claim, on the path of every new image.
# Each counts the calls in flight (the live leases) in a scalar subquery.
_FETCHES = Fetch._meta.db_table
_LIVE = f"SELECT COUNT(*) FROM {_FETCHES} AS held WHERE held.state = %s AND held.lease_until > %s"
_LINE = f"""
SELECT f.*, ({_LIVE}) AS live FROM {_FETCHES} AS f
WHERE f.state = %s OR (f.state = %s AND f.lease_until <= %s)
ORDER BY f.priority, f.created_at, f.id
LIMIT %s
"""
_OWN = f"""
SELECT f.*, ({_LIVE}) AS live FROM {_FETCHES} AS f
WHERE f.id = %s AND f.state IN ({", ".join(["%s"] * len(IN_FLIGHT))})
"""

# The claim's lease, written out as well, for the same reason.
_LEASE = f"""
UPDATE {_FETCHES} SET state = %s, started_at = %s, lease_until = %s, lease_owner = %s, attempts = %s
WHERE id = %s AND state = %s AND attempts = %s
"""


def _line_first(
    *, fetch_id: int, now: datetime, waited: bool, probe: bool = False
) -> tuple[Fetch, int] | None:
    """The first claimable fetch in line, failing on the way those that used
    up FETCH_MAX_ATTEMPTS, with the count of the calls in flight (live
    leases, read in the same statement: one fewer under the lock row, and
    counted before the failures, so that a claim may wait a SLOT_POLL more);
    None when there is none. For the `probe`, those that failed as the probe
    on their own query go behind the others: a query Kentik cannot render
    must not stand for Kentik."""
    live = [FetchState.FETCHING, connection.ops.adapt_datetimefield_value(now)]
    line = [FetchState.PENDING, FetchState.FETCHING, live[1], LINE_LOOK]
    first = list(Fetch.objects.raw(_LINE, [*live, *line]))
    if all(fetch.pk != fetch_id for fetch in first):
        # Its own fetch, read only when not among them (most often it is the
        # only one in line): held by a worker that may have died, or far back.
        first += Fetch.objects.raw(_OWN, [*live, fetch_id, *IN_FLIGHT])
    candidates = sorted(
        {fetch.pk: fetch for fetch in first}.values(),
        key=lambda fetch: (
            probe and fetch.probe_failures,
            fetch.priority,
            waited and fetch.created_at,
            fetch.pk != fetch_id,
            fetch.created_at,
            fetch.pk,
        ),
    )
    for fetch in candidates:
        if not _claimable(fetch, now):
            continue
        if fetch.attempts >= settings.FETCH_MAX_ATTEMPTS:
            fetch_fail(
                fetch=fetch,
                states=IN_FLIGHT,
                status=502,
                message=f"Gave up after {fetch.attempts} attempts that did not finish",
            )
            logger.warning(
                "fetch %s: failed (502), given up after %s attempts", fetch.pk, fetch.attempts
            )
            continue
        return fetch, cast(Any, fetch).live
    return None


def _claimable(fetch: Fetch, now: datetime) -> bool:
    if fetch.state == FetchState.PENDING:
        return True
    return fetch.state == FetchState.FETCHING and leases.abandoned(
        fetch.lease_owner, fetch.lease_until, now
    )


# How often a task that waits for one of the KENTIK_MAX_CONCURRENCY slots looks again.
SLOT_POLL = 0.2
