"""The Kentik shield: one budget of Kentik calls and one pause for the whole
deployment, kept in the database, beside the lock that claims serialize on.

- The budget: at most KENTIK_RATE_LIMIT calls (each attempt, retries
  included) in any 60 s window. Every call is a `KentikCall` row, written in
  the claim's transaction; a claim that finds the window full waits until
  its oldest call leaves it.
- The pause: a 429 (or a 503 with Retry-After) stops every fetch of the
  deployment until its Retry-After (capped by KENTIK_RETRY_AFTER_MAX); so do
  Kentik failing (502, 503, unreachable), for a backoff that doubles each
  time. When a pause is over one call goes first (the probe), and the others
  follow only once it succeeds.
- The deployment or the query: a timeout, a 504 or a 500 is Kentik failing
  on the query it took. One query that keeps failing so is a heavy query and
  must not hold the others back; two different queries failing so in a row,
  with no answer of Kentik's between them, is an outage (a Kentik at its hard
  limit may answer slowly rather than 429), and pauses the deployment.

Why the database and not Redis: every claim already takes the lock row in a
transaction of the database, so the budget costs one indexed count and one
insert there, and no second store has to agree with the first (the cost,
measured by bench/budget.py, is in the README).

Callers hold the lock row (`gate_lock`) inside a transaction.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from imagecache.models import KENTIK_LOCK, KentikCall, Lock, first
from imagecache.ops import metrics
from imagecache.selectors.shield import KENTIK_WINDOW as WINDOW

logger = logging.getLogger(__name__)

# How often a fetch that waits behind the probe looks again.
PROBE_POLL = 0.2


@dataclass(frozen=True)
class Admission:
    """Whether a Kentik call may go now; if not, why and for how long to wait."""

    open: bool
    # This call goes first after a pause: the others wait for its answer.
    probe: bool = False
    reason: str = ""
    wait: float = 0.0


# Written out as the rest of the claim's SQL (services.claims), which claims
# under contention queue behind. SQLite has no FOR UPDATE: its claims hold
# the write lock from their start (transaction_mode IMMEDIATE).
_GATE = f"SELECT * FROM {Lock._meta.db_table} WHERE name = %s"


def gate_lock() -> Lock:
    """The Kentik lock row, locked until the transaction ends."""
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    gate = first(Lock.objects.raw(_GATE + lock, [KENTIK_LOCK]))
    if gate is None:  # a database whose migration 0002 row was deleted by hand
        gate, _ = Lock.objects.get_or_create(name=KENTIK_LOCK)
    return gate


def admit(*, gate: Lock, now: datetime) -> Admission:
    """Whether a call may go now, under the pause and the budget."""
    if gate.paused_until is not None:
        if gate.paused_until > now:
            return Admission(False, reason="paused", wait=(gate.paused_until - now).total_seconds())
        if gate.probing(now):
            return Admission(False, reason="probing", wait=PROBE_POLL)
        return Admission(True, probe=True)
    wait = budget_wait(now=now)
    if wait:
        return Admission(False, reason="budget", wait=wait)
    return Admission(True)


def budget_wait(*, now: datetime) -> float:
    """0 when the window has room for a call, else the seconds until it has."""
    limit = settings.KENTIK_RATE_LIMIT
    if not limit:
        return 0.0
    # The limit-th newest call in the window: while it is in, the window is
    # full, and it leaves first among those that fill it (one indexed row).
    window = KentikCall.objects.filter(at__gt=now - WINDOW).order_by("-at")
    full = window.values_list("at", flat=True)[limit - 1 : limit].first()
    if full is None:
        return 0.0
    return max((full + WINDOW - now).total_seconds(), 0.001)


def call_record(*, now: datetime) -> None:
    """Count one call in the window. Those that left it are harmless (the
    budget and /info look at the window alone) and go with the maintenance
    (`calls_forget`): a DELETE in every claim held the lock row a
    millisecond longer on the path of every new image."""
    KentikCall.objects.create(at=now)


def calls_forget(*, now: datetime) -> int:
    """Forget the calls that left the window: how many."""
    deleted, _ = KentikCall.objects.filter(at__lte=now - WINDOW).delete()
    return deleted


def probe_begin(*, gate: Lock, now: datetime, owner: str) -> None:
    gate.probe_owner = owner
    # Past this, the probe's worker is taken for dead and another goes first.
    gate.probe_until = now + timedelta(seconds=settings.KENTIK_API_TIMEOUT + 10)
    gate.save(update_fields=["probe_owner", "probe_until"])
    logger.info("Kentik: the pause is over; one call goes first")


def query_failed(*, query_hash: str) -> bool:
    """Record a call that Kentik failed on its query (a timeout, a 504, a
    500): whether it is an outage, i.e. another query failed so last and
    Kentik answered no call since."""
    with transaction.atomic():
        gate = gate_lock()
        outage = gate.failed_query not in ("", query_hash)
        if gate.failed_query != query_hash:
            gate.failed_query = query_hash
            gate.save(update_fields=["failed_query"])
    if outage:
        logger.warning("Kentik: two queries in a row failed on their own; taken for an outage")
    return outage


def probe_pass(*, owner: str) -> None:
    """The probe failed on its own query, which says nothing of Kentik: the
    next call goes first in its place, at once."""
    with transaction.atomic():
        gate = gate_lock()
        if gate.probe_owner != owner:
            return
        gate.probe_owner = ""
        gate.probe_until = None
        gate.save(update_fields=["probe_owner", "probe_until"])
    logger.info("Kentik: the call that went first failed on its query; another goes first")


def pause(*, reason: str, retry_after: float | None) -> datetime:
    """Stop every Kentik call of the deployment: for `retry_after` seconds
    (Kentik's Retry-After) or, without one, for a backoff that doubles with
    each pause until a call succeeds. When the pause ends."""
    cap = settings.KENTIK_RETRY_AFTER_MAX
    with transaction.atomic():
        gate = gate_lock()
        now = timezone.now()
        backoff = min(max(gate.pause_backoff * 2, settings.KENTIK_API_BACKOFF, 0.5), cap)
        seconds = min(max(retry_after, 0.0), cap) if retry_after is not None else backoff
        until = now + timedelta(seconds=seconds)
        began = gate.paused_until is None or bool(gate.probe_owner)
        if gate.paused_until is None or until > gate.paused_until or gate.probe_owner:
            gate.paused_until = until
        gate.pause_reason = reason
        gate.pause_backoff = backoff
        gate.probe_owner = ""
        gate.probe_until = None
        gate.save()
    if began:
        metrics.KENTIK_PAUSES.inc()
    logger.warning(
        "Kentik: every fetch paused for %.1f s (%s)",
        seconds,
        reason,
        extra={"pause_seconds": seconds, "pause_reason": reason},
    )
    return gate.paused_until


def resume() -> None:
    """Kentik answered (a chart, or a refusal that is not about load): no
    pause, and the next backoff starts from the first again.

    A database that does not answer does not fail the caller, which holds an
    image that cost a Kentik call: the next call that succeeds resumes."""
    try:
        resumed = _resume()
    except DatabaseError:
        logger.warning("Kentik: no pause ended (the database is down); the next success ends it")
        connection.close()
        return
    if resumed:
        logger.info("Kentik: answering again; fetches resume")


def _resume() -> int:
    row = (
        Lock.objects.filter(name=KENTIK_LOCK)
        .exclude(paused_until=None, pause_backoff=0, probe_owner="", failed_query="")
        .values_list("paused_until", "pause_backoff", "probe_owner")
        .first()
    )
    # Read first: on SQLite an UPDATE takes the write lock even when it
    # changes nothing, and most calls end with nothing to resume.
    if row is None:
        return 0
    gate = Lock.objects.filter(name=KENTIK_LOCK)
    if row == (None, 0, ""):
        # Only a query's failure to forget: no pause ended, and the fetches
        # in line keep their turns (`resumed_at` would put them behind).
        gate.update(failed_query="")
        return 0
    return gate.update(
        paused_until=None,
        pause_reason="",
        pause_backoff=0,
        probe_owner="",
        probe_until=None,
        failed_query="",
        resumed_at=timezone.now(),
    )
