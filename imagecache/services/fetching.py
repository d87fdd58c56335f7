"""The fetch pipeline, run by django-q2's workers: a queued fetch claimed
(services.claims), its chart asked of Kentik under the shield's decisions,
and its image stored and linked for the fast path (services.storing).

With `storing`, which only it imports, the one services module that imports
the Kentik seam (and so kentik-api): the task module imports it, and web
processes never do. Its logger writes the one line per fetch that called
Kentik.
"""

import logging
import time

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from imagecache import kentik, leases
from imagecache.models import Fetch, FetchState
from imagecache.ops import metrics, request_ids
from imagecache.services import housekeeping, queue, shield
from imagecache.services.claims import ClaimOutcome, fetch_claim
from imagecache.services.finishing import fetch_fail
from imagecache.services.storing import fetch_record, file_save, store_failure, stored_image

logger = logging.getLogger(__name__)


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
        stored = stored_image(fetch) if fetch.attempts > 1 else None
        if stored is not None:
            logger.info("fetch %s: recording the image an earlier attempt stored", fetch.pk)
            chart, saved_name, content_hash = stored
            fetch_record(fetch=fetch, chart=chart, saved_name=saved_name, content_hash=content_hash)
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
            _fetch_requeue(fetch, why=f"Kentik answered {exc.status}", answered=exc)
            return False
        except kentik.CallWithheld:
            _fetch_requeue(fetch, why="the deployment paused")
            return False
        except kentik.KentikError as exc:
            if not exc.transient:
                shield.resume()
            elif _kentik_failed(fetch, exc, probe=probe):
                return False
            fetch_fail(fetch=fetch, status=exc.status, message=exc.message, transient=exc.transient)
            _fetch_observe(fetch=fetch, status=exc.status, started=started, message=exc.message)
            return True
        except Exception:
            # Whatever a query does to the client, the fetch ends recorded as
            # failed rather than retried forever by the task queue.
            logger.exception("fetch %s: unexpected error", fetch.pk)
            message = "Kentik's answer could not be processed"
            fetch_fail(fetch=fetch, status=502, message=message)
            _fetch_observe(fetch=fetch, status=502, started=started, message=message)
            return True
        # Room first, so that the directory never holds more than the bound.
        housekeeping.cache_evict(incoming=len(chart.data))
        try:
            saved_name, content_hash = file_save(fetch=fetch, chart=chart)
        except OSError as exc:
            shield.resume()
            # The image cannot be kept: fail at once (asking Kentik again
            # would not help), saying why without a path.
            message = store_failure(exc)
            fetch_fail(fetch=fetch, status=507, message=message)
            _fetch_observe(fetch=fetch, status=507, started=started, message=message)
            return True
        fetch_record(fetch=fetch, chart=chart, saved_name=saved_name, content_hash=content_hash)
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
        _fetch_requeue(fetch, why=f"the probe failed ({exc.status})", answered=exc)
        return True
    # It failed on its own query: one of its retries is spent, and another
    # fetch goes first next, so that it cannot hold every other one back.
    if not outage:
        shield.probe_pass(owner=fetch.lease_owner)
    if fetch.probe_failures >= settings.KENTIK_API_RETRIES:
        return False
    _fetch_requeue(
        fetch,
        why=f"the probe failed on its query ({exc.status})",
        probe_failed=True,
        answered=exc,
    )
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


def _fetch_requeue(
    fetch: Fetch,
    *,
    why: str,
    probe_failed: bool = False,
    answered: kentik.KentikError | None = None,
) -> None:
    """Back in line, as if this attempt had not been claimed (but for a probe
    that failed on its query, counted). Kentik's answer, if it gave one, is
    kept: a client whose wait runs out meanwhile is told it."""
    said = (
        {"error_status": answered.status, "error_message": answered.message}
        if answered is not None
        else {}
    )
    Fetch.objects.filter(pk=fetch.pk, state=FetchState.FETCHING, attempts=fetch.attempts).update(
        state=FetchState.PENDING,
        attempts=fetch.attempts - 1,
        probe_failures=fetch.probe_failures + int(probe_failed),
        started_at=None,
        lease_until=None,
        lease_owner="",
        **said,
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
