"""The fetch pipeline, run by django-q2's workers: a queued fetch claimed
under the bound on Kentik calls, its chart asked of Kentik, and its image
stored and linked for the fast path.

The only services module that imports the Kentik seam (and so kentik-api):
the task module imports it, and web processes never do.
"""

import enum
import errno
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from imagecache import kentik, leases, notify
from imagecache.files import links
from imagecache.files.names import image_name_make, image_name_parse, image_prefix
from imagecache.media import BY_EXTENSION
from imagecache.models import IN_FLIGHT, Entry, Fetch, FetchState
from imagecache.ops import metrics, request_ids
from imagecache.services import charts, housekeeping, queue, shield

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
        claimed = _update(_LEASE, [*lease.values(), fetch.pk, fetch.state, fetch.attempts])
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

# The claim's lease and the ready mark, written out as well, for the same reason.
_LEASE = f"""
UPDATE {_FETCHES} SET state = %s, started_at = %s, lease_until = %s, lease_owner = %s, attempts = %s
WHERE id = %s AND state = %s AND attempts = %s
"""
# The mark matches its own row again once made (ready, with this attempt's
# file): a mark that committed but whose answer was lost, tried again, finds
# it made rather than taken for another worker's and its image dropped.
_READY = f"""
UPDATE {_FETCHES} SET state = %s, file_name = %s, media_type = %s, size = %s, content_hash = %s,
    finished_at = %s, last_read_at = %s, lease_until = NULL, lease_owner = ''
WHERE id = %s AND (state = %s OR (state = %s AND file_name = %s))
"""


def _update(sql: str, params: list[Any]) -> int:
    """Run a written-out UPDATE: how many rows it changed."""
    at = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        cursor.execute(sql, [at(p) if isinstance(p, datetime) else p for p in params])
        return cursor.rowcount


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
            _fetch_fail(
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
# The longest sleep between two looks, whatever the wait: a pause can end early.
WAIT_STEP = 1.0


def fetch_run(*, fetch_id: int) -> None:
    """Make one Kentik call for the first fetch in line, and store its image;
    safe to run more than once.

    Waits while no call may go (slots, pause, budget): up to KENTIK_SLOT_WAIT,
    then puts its task back on the queue, so that every fetch in line keeps a
    task. A fetch that Kentik asked to slow down goes back in line (its
    attempt not counted, however often) and this task waits for the pause
    with the others.
    """
    deadline = time.monotonic() + settings.KENTIK_SLOT_WAIT
    waited = False
    while True:
        claim = fetch_claim(fetch_id=fetch_id, waited=waited)
        if claim.outcome == ClaimOutcome.SKIPPED:
            logger.info("fetch %s: nothing left in line", fetch_id)
            return
        if claim.outcome == ClaimOutcome.WAIT:
            if time.monotonic() >= deadline:
                logger.info(
                    "fetch %s: still %s; its task goes back on the queue", fetch_id, claim.reason
                )
                # (A synchronous queue, the test profile's, would run it here
                # and now: the reaper takes the fetch up there.)
                if not settings.Q_CLUSTER.get("sync"):
                    queue.task_enqueue(fetch_id=fetch_id)
                return
            time.sleep(min(claim.wait, WAIT_STEP, max(deadline - time.monotonic(), 0)))
            waited = True
            continue
        assert claim.fetch is not None
        # The lines about the fetch carry the id of the request that started it.
        with request_ids.request_id_bound(claim.fetch.request_id):
            if _fetch_call(claim.fetch, probe=claim.probe):
                return
        waited = True


def _fetch_call(fetch: Fetch, *, probe: bool) -> bool:
    """One claimed fetch's Kentik call, its image stored and recorded, or its
    failure; False when it went back in line (Kentik asked to slow down)."""
    started = time.monotonic()
    with leases.kept(fetch_id=fetch.pk, attempt=fetch.attempts):
        stored = _stored_image(fetch) if fetch.attempts > 1 else None
        if stored is not None:
            logger.info("fetch %s: recording the image an earlier attempt stored", fetch.pk)
            chart, saved_name, content_hash = stored
            _fetch_record(
                fetch=fetch, chart=chart, saved_name=saved_name, content_hash=content_hash
            )
            return True
        try:
            # The probe makes one attempt: the others wait for its answer.
            # Calls that failed as the probe on the query were its retries.
            retries = 0 if probe else max(settings.KENTIK_API_RETRIES - fetch.probe_failures, 0)
            chart = kentik.fetch_chart(fetch.query_json, gate=_retry_admit, retries=retries)
        except kentik.RateLimited as exc:
            shield.pause(reason=str(exc.status), retry_after=exc.retry_after)
            # Kentik speaks of the deployment, not of this query: the fetch
            # waits its turn however long it lasts, and only its entries'
            # life (or its clients' waits, answered stale) ends it.
            _fetch_requeue(fetch, why=f"Kentik answered {exc.status}")
            return False
        except kentik.CallWithheld:
            _fetch_requeue(fetch, why="the deployment paused")
            return False
        except kentik.KentikError as exc:
            if not exc.transient:
                shield.resume()
            elif _kentik_failed(fetch, exc, probe=probe):
                return False
            _fetch_fail(
                fetch=fetch, status=exc.status, message=exc.message, transient=exc.transient
            )
            _fetch_observe(fetch=fetch, status=exc.status, started=started, message=exc.message)
            return True
        except Exception:
            # Whatever a query does to the client, the fetch ends recorded as
            # failed rather than retried forever by the task queue.
            logger.exception("fetch %s: unexpected error", fetch.pk)
            message = "Kentik's answer could not be processed"
            _fetch_fail(fetch=fetch, status=502, message=message)
            _fetch_observe(fetch=fetch, status=502, started=started, message=message)
            return True
        # Room first, so that the directory never holds more than the bound.
        housekeeping.cache_evict(incoming=len(chart.data))
        try:
            saved_name, content_hash = _file_save(fetch=fetch, chart=chart)
        except OSError as exc:
            shield.resume()
            # The image cannot be kept: fail at once (asking Kentik again
            # would not help), saying why without a path.
            message = _store_failure(exc)
            _fetch_fail(fetch=fetch, status=507, message=message)
            _fetch_observe(fetch=fetch, status=507, started=started, message=message)
            return True
        _fetch_record(fetch=fetch, chart=chart, saved_name=saved_name, content_hash=content_hash)
        # Kentik answered: once the image's waiters have been woken, not before
        # (a statement less between Kentik's answer and theirs).
        shield.resume()
    _fetch_observe(fetch=fetch, status=200, started=started, chart=chart)
    return True


def _kentik_failed(fetch: Fetch, exc: kentik.KentikError, *, probe: bool) -> bool:
    """Kentik failed a call for a transient cause: the deployment paused if
    the failure speaks of Kentik as a whole. True when the fetch went back
    in line, False when it is to fail."""
    outage = exc.deployment or shield.query_failed(query_hash=fetch.query_hash)
    if outage:
        shield.pause(reason=str(exc.status), retry_after=None)
    if not probe:
        return False
    if exc.deployment:
        # Kentik still fails: the fetch waits for the next probe, in its place.
        _fetch_requeue(fetch, why=f"the probe failed ({exc.status})")
        return True
    # It failed on its own query: one of its retries is spent, and another
    # fetch goes first next, so that it cannot hold every other one back.
    if not outage:
        shield.probe_pass(owner=fetch.lease_owner)
    if fetch.probe_failures >= settings.KENTIK_API_RETRIES:
        return False
    _fetch_requeue(fetch, why=f"the probe failed on its query ({exc.status})", probe_failed=True)
    return True


def _retry_admit() -> None:
    """Before a retry: CallWithheld if the deployment paused meanwhile; else
    wait for room in the budget (up to KENTIK_SLOT_WAIT) and count the call."""
    deadline = time.monotonic() + settings.KENTIK_SLOT_WAIT
    while True:
        with transaction.atomic():
            gate = shield.gate_lock()
            if gate.paused_until is not None:
                raise kentik.CallWithheld("paused")
            now = timezone.now()
            wait = shield.budget_wait(now=now)
            if not wait:
                shield.call_record(now=now)
                return
        if time.monotonic() + wait > deadline:
            raise kentik.CallWithheld("budget")
        time.sleep(min(wait, WAIT_STEP))


def _fetch_requeue(fetch: Fetch, *, why: str, probe_failed: bool = False) -> None:
    """Back in line, as if this attempt had not been claimed (but for a probe
    that failed on its query, counted)."""
    Fetch.objects.filter(pk=fetch.pk, state=FetchState.FETCHING, attempts=fetch.attempts).update(
        state=FetchState.PENDING,
        attempts=fetch.attempts - 1,
        probe_failures=fetch.probe_failures + int(probe_failed),
        started_at=None,
        lease_until=None,
        lease_owner="",
    )
    logger.info("fetch %s: back in line (%s)", fetch.pk, why)


def _fetch_observe(
    *,
    fetch: Fetch,
    status: int,
    started: float,
    chart: kentik.Chart | None = None,
    message: str = "",
) -> None:
    """The one log line and the metrics of a fetch that called Kentik."""
    duration = time.monotonic() - started
    outcome = "ready" if status == 200 else "failed"
    metrics.KENTIK_CALLS.labels(str(status)).inc()
    metrics.FETCH_DURATION.labels(outcome).observe(duration)
    fields = {
        "fetch_id": fetch.pk,
        "outcome": outcome,
        "status": status,
        "duration_ms": round(duration * 1000, 1),
    }
    if chart is not None:
        logger.info(
            "fetch %s: ready (200), %s, %d bytes in %.2f s",
            fetch.pk,
            chart.media_type,
            len(chart.data),
            duration,
            extra={**fields, "media_type": chart.media_type, "size": len(chart.data)},
        )
    else:
        logger.warning(
            "fetch %s: failed (%s) in %.2f s: %s", fetch.pk, status, duration, message, extra=fields
        )


def _file_save(*, fetch: Fetch, chart: kentik.Chart) -> tuple[str, str]:
    """Store the image; its storage name and content hash. A full disk with
    CACHE_MAX_BYTES set evicts the least recently read images to make room."""
    content_hash = hashlib.sha256(chart.data).hexdigest()
    name = image_name_make(
        query_hash=fetch.query_hash,
        fetch_id=fetch.pk,
        content_hash=content_hash,
        media_type=chart.media_type,
    )
    for attempt in range(4):
        try:
            return default_storage.save(name, ContentFile(chart.data)), content_hash
        except OSError as exc:
            if (
                exc.errno not in (errno.ENOSPC, errno.EDQUOT)
                or not settings.CACHE_MAX_BYTES
                or attempt == 3
            ):
                raise
            # Blocks are rounded up: ask for a little more than the image.
            freed = housekeeping.cache_evict(room=len(chart.data) + 64 * 1024)
            if not freed.files:
                raise
            logger.warning("fetch %s: the disk was full; evicted %d images", fetch.pk, freed.files)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _store_failure(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "The cache's disk is full: the image could not be stored"
    # strerror alone: the exception's text would name the path.
    return f"The image could not be stored: {exc.strerror or type(exc).__name__}"


def _fetch_record(*, fetch: Fetch, chart: kentik.Chart, saved_name: str, content_hash: str) -> None:
    """Mark the fetch ready with its stored image. The image has cost a Kentik
    call: while the database does not answer, keep trying (up to
    FETCH_RECORD_PATIENCE) rather than let the task fail and call Kentik again.
    A worker that dies meanwhile leaves the file, which the next attempt
    finds (`_stored_image`)."""
    now = timezone.now()
    if links.enabled():
        # The file's time is the image's Last-Modified on the fast path.
        os.utime(default_storage.path(saved_name), (now.timestamp(), now.timestamp()))
    deadline = time.monotonic() + settings.FETCH_RECORD_PATIENCE
    pause = 0.1
    while True:
        try:
            stored = _fetch_mark_ready(
                fetch=fetch,
                saved_name=saved_name,
                media_type=chart.media_type,
                size=len(chart.data),
                content_hash=content_hash,
                now=now,
            )
            break
        except DatabaseError:
            if time.monotonic() + pause > deadline:
                raise
            logger.warning("fetch %s: the database did not answer; recording again", fetch.pk)
            connection.close()
            time.sleep(pause)
            pause = min(pause * 2, 2.0)
    if not stored:
        # Purged, or finished by a worker that took the fetch over meanwhile.
        default_storage.delete(saved_name)
        logger.info("fetch %s: finished elsewhere or purged, image dropped", fetch.pk)
        return
    _entries_link(fetch_id=fetch.pk, file_name=saved_name)
    fetch.finished_at, fetch.file_name = now, saved_name
    try:
        charts.chart_images_point(fetch=fetch)
    except DatabaseError:
        # The image is recorded; its chart images point at it after the next render.
        logger.warning("fetch %s: its chart images were not pointed at it", fetch.pk)


def _fetch_mark_ready(
    *, fetch: Fetch, saved_name: str, media_type: str, size: int, content_hash: str, now: datetime
) -> bool:
    # One statement, committed on its own, and the waiters told: by it on
    # PostgreSQL, after it on SQLite. No transaction around them (BEGIN and
    # COMMIT were two round trips more between Kentik's answer and the waiters').
    ready = [FetchState.READY, saved_name, media_type, size, content_hash, now, now]
    mine = [fetch.pk, FetchState.FETCHING, FetchState.READY, saved_name]
    told = notify.told(_READY)
    if told is not None:
        return bool(_update(told, [*ready, *mine]))
    stored = _update(_READY, [*ready, *mine])
    if stored:
        _waiters_tell(fetch.pk)
    return bool(stored)


def _waiters_tell(fetch_id: int) -> None:
    """Tell the waiters that a fetch left flight. Inside a transaction, at its
    commit (a failure fails the transaction). Outside one the change is
    committed already, and a NOTIFY that fails must neither undo it nor pass
    for a failed change: the waiters find it at their poll, as they do when a
    worker dies between the two."""
    try:
        notify.fetch_done(fetch_id)
    except DatabaseError:
        if connection.in_atomic_block:
            raise
        logger.warning(
            "fetch %s: its waiters were not told (the database did not answer); they poll",
            fetch_id,
        )


def _stored_image(fetch: Fetch) -> tuple[kentik.Chart, str, str] | None:
    """An image an earlier attempt of this fetch stored but did not record (the
    database or the worker went away), with its storage name and content hash:
    recorded now, without asking Kentik again."""
    prefix = image_prefix(query_hash=fetch.query_hash, fetch_id=fetch.pk)
    directory, _, start = prefix.rpartition("/")
    try:
        names = default_storage.listdir(directory)[1]
    except (FileNotFoundError, NotADirectoryError):
        return None
    for name in names:
        named = image_name_parse(name) if name.startswith(start) else None
        if named is None:
            continue
        content_hash, media_type = named.content_hash, BY_EXTENSION[named.extension]
        saved_name = f"{directory}/{name}"
        with default_storage.open(saved_name, "rb") as image:
            data = image.read()
        if hashlib.sha256(data).hexdigest() == content_hash:
            return kentik.Chart(media_type=media_type, data=data), saved_name, content_hash
    return None


def _entries_link(*, fetch_id: int, file_name: str) -> None:
    """Link the entries of a ready fetch for the fast path; then unlink any
    that went meanwhile (their delete may have run before their link)."""
    if not links.enabled():
        return
    entry_ids = set(Entry.objects.filter(fetch_id=fetch_id).values_list("pk", flat=True))
    links.entries_link(entry_ids=entry_ids, file_name=file_name)
    still = set(Entry.objects.filter(fetch_id=fetch_id).values_list("pk", flat=True))
    links.entries_unlink(entry_ids=entry_ids - still)


def _fetch_fail(
    *,
    fetch: Fetch,
    status: int,
    message: str,
    states: tuple[str, ...] = (FetchState.FETCHING,),
    transient: bool = False,
) -> None:
    # As `_fetch_mark_ready`: the change committed, then told.
    failed = Fetch.objects.filter(pk=fetch.pk, state__in=states).update(
        state=FetchState.FAILED,
        error_status=status,
        error_message=message,
        error_transient=transient,
        finished_at=timezone.now(),
        lease_until=None,
        lease_owner="",
    )
    if failed:
        _waiters_tell(fetch.pk)
