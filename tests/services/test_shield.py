"""The Kentik shield, with the Kentik seam patched: the deployment's budget
(KENTIK_RATE_LIMIT, a sliding 60 s window), its pause on "slow down" and the
one call that goes first after it, the order of the line, stale-if-error,
refresh-ahead and negative caching. The clock is frozen for each whole test.
"""

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.db import OperationalError, connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client import REGISTRY

from imagecache import kentik, tasks
from imagecache.hashing import query_hash
from imagecache.models import (
    KENTIK_LOCK,
    Entry,
    Fetch,
    FetchPriority,
    FetchState,
    KentikCall,
    Lock,
)
from imagecache.selectors.shield import kentik_holds, kentik_status
from imagecache.services import claims, fetching, housekeeping, shield
from imagecache.services.entries import entry_create
from tests.harness.data import PNG, QUERY
from tests.harness.prometheus import parse, value
from tests.harness.service import wait_for

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
CLAIMED, WAIT = claims.ClaimOutcome.CLAIMED, claims.ClaimOutcome.WAIT


@pytest.fixture(autouse=True)
def clock() -> Iterator[Any]:
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture(autouse=True)
def _shield_settings(settings: Any) -> None:
    settings.KENTIK_API_RETRIES = 2
    settings.KENTIK_API_BACKOFF = 1.0
    settings.KENTIK_RETRY_AFTER_MAX = 30.0
    settings.KENTIK_SLOT_WAIT = 0
    settings.REUSE_MAX_AGE = 60
    settings.REFRESH_AHEAD = 0.8
    settings.STALE_IF_ERROR = 3600
    settings.NEGATIVE_TTL = 60


def counter(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def gate() -> Lock:
    return Lock.objects.get(name=KENTIK_LOCK)


def pending(n: int, **fields: Any) -> Fetch:
    fetch = entry_create(api_query={**QUERY, "n": n}).fetch
    if fields:
        Fetch.objects.filter(pk=fetch.pk).update(**fields)
        fetch.refresh_from_db()
    return fetch


def in_line(settings: Any, api_query: dict[str, Any]) -> Entry:
    """An entry whose fetch stays in line: Kentik's one slot is taken by a
    live worker elsewhere. (Its test's commits are real, and a new fetch runs
    at once, on commit: a wait closes the database connection, which a test's
    transaction would not survive on PostgreSQL.)"""
    settings.KENTIK_MAX_CONCURRENCY = 1
    with mock_chart(kentik.Chart(media_type="image/png", data=PNG)):
        pending(
            0,
            state=FetchState.FETCHING,
            lease_owner="elsewhere:1",
            lease_until=timezone.now() + timedelta(hours=1),
        )
        entry = entry_create(api_query=api_query)
    assert Fetch.objects.get(pk=entry.fetch_id).state == FetchState.PENDING
    return entry


def claim(fetch: Fetch) -> claims.Claim:
    return claims.fetch_claim(fetch_id=fetch.pk)


def ready(api_query: dict[str, Any], *, at: datetime, data: bytes = PNG) -> Entry:
    """An entry whose fetch Kentik answered at `at`."""
    with (
        time_machine.travel(at, tick=False),
        mock_chart(kentik.Chart(media_type="image/png", data=data)),
    ):
        # (A test whose commits are real runs the fetch at once, on commit.)
        entry = entry_create(api_query=api_query, ttl=3600)
        fetching.fetch_run(fetch_id=entry.fetch_id)
    entry.refresh_from_db()
    assert entry.fetch.state == FetchState.READY
    return entry


class mock_chart:
    """kentik.fetch_chart answering `outcome` (a Chart, or an exception to raise)."""

    def __init__(self, outcome: Any) -> None:
        from unittest import mock

        self._patch = mock.patch.object(kentik, "fetch_chart", autospec=True)
        self._outcome = outcome

    def __enter__(self) -> Any:
        patched = self._patch.__enter__()
        if isinstance(self._outcome, BaseException):
            patched.side_effect = self._outcome
        else:
            patched.return_value = self._outcome
        return patched

    def __exit__(self, *exc: Any) -> None:
        self._patch.__exit__(*exc)


# --- The budget ---------------------------------------------------------------


def test_budget_allows_the_limit_in_any_60_s_window_and_no_more(settings, clock):
    settings.KENTIK_RATE_LIMIT = 2
    first, second, third = pending(1), pending(2), pending(3)
    assert claim(first).outcome == CLAIMED
    clock.shift(30)
    assert claim(second).outcome == CLAIMED
    refused = claim(third)
    # The first call leaves the window 60 s after it went, 30 s from now.
    assert (refused.outcome, refused.reason, refused.wait) == (WAIT, "budget", 30.0)
    clock.shift(29.9)
    assert claim(third).outcome == WAIT
    clock.shift(0.2)
    assert claim(third).outcome == CLAIMED
    assert kentik_status()["calls_last_minute"] == 2


def test_no_limit_counts_calls_but_never_waits(settings):
    settings.KENTIK_RATE_LIMIT = 0
    settings.KENTIK_MAX_CONCURRENCY = 10
    for n in range(5):
        assert claim(pending(n)).outcome == CLAIMED
    assert kentik_status() == {
        "calls_last_minute": 5,
        "rate_limit": 0,
        "paused": False,
        "paused_until": None,
        "pause_reason": "",
        "probing": False,
    }


def test_calls_that_left_the_window_go_with_the_maintenance_not_the_claim(settings, clock):
    settings.KENTIK_RATE_LIMIT = 0
    settings.KENTIK_MAX_CONCURRENCY = 10
    first = claim(pending(1)).fetch
    assert first is not None
    # Done with, so that the maintenance has no fetch to take over.
    Fetch.objects.filter(pk=first.pk).update(state=FetchState.FAILED)
    clock.shift(61)
    claim(pending(2))
    # The second claim left the first call in the table; the window does not count it.
    assert KentikCall.objects.count() == 2
    assert kentik_status()["calls_last_minute"] == 1
    tasks.maintain_cache()
    assert list(KentikCall.objects.values_list("at", flat=True)) == [timezone.now()]


def test_a_retry_takes_its_call_from_the_budget(settings):
    settings.KENTIK_RATE_LIMIT = 2
    claim(pending(1))
    fetching._retry_admit()
    assert kentik_status()["calls_last_minute"] == 2
    # The budget is spent and the slot wait is 0: the retry is withheld.
    with pytest.raises(kentik.CallWithheld):
        fetching._retry_admit()


def test_a_retry_is_withheld_once_the_deployment_paused():
    claim(pending(1))
    shield.pause(reason="429", retry_after=5)
    with pytest.raises(kentik.CallWithheld):
        fetching._retry_admit()


# --- The pause and the probe ---------------------------------------------------


def test_429_pauses_every_fetch_for_its_retry_after_and_keeps_the_fetch(clock):
    fetch, other = pending(1), pending(2)
    pauses = counter("imagecache_kentik_pauses_total")
    with mock_chart(kentik.RateLimited(429, "Too many requests", retry_after=20)) as chart:
        fetching.fetch_run(fetch_id=fetch.pk)
    assert chart.call_count == 1
    fetch.refresh_from_db()
    # Back in line, its attempt not counted, none of its retries spent.
    assert (fetch.state, fetch.attempts, fetch.probe_failures) == (FetchState.PENDING, 0, 0)
    assert gate().paused_until == NOW + timedelta(seconds=20)
    assert counter("imagecache_kentik_pauses_total") == pauses + 1
    refused = claim(other)
    assert (refused.outcome, refused.reason, refused.wait) == (WAIT, "paused", 20.0)


def test_retry_after_is_capped_and_its_absence_means_a_doubling_backoff(settings, clock):
    settings.KENTIK_RETRY_AFTER_MAX = 10
    assert shield.pause(reason="429", retry_after=3600) == NOW + timedelta(seconds=10)
    shield.resume()
    assert shield.pause(reason="429", retry_after=None) == NOW + timedelta(seconds=1)
    clock.shift(1)
    assert shield.pause(reason="503", retry_after=None) == timezone.now() + timedelta(seconds=2)
    clock.shift(2)
    assert shield.pause(reason="503", retry_after=None) == timezone.now() + timedelta(seconds=4)
    shield.resume()
    assert shield.pause(reason="503", retry_after=None) == timezone.now() + timedelta(seconds=1)


def test_a_claim_whose_own_fetch_is_in_line_reads_the_fetches_once():
    fetch = pending(1)
    with CaptureQueriesContext(connection) as queries:
        assert claim(fetch).outcome == CLAIMED
    reads = [
        q["sql"]
        for q in queries.captured_queries
        if "AS live FROM imagecache_fetch AS f" in q["sql"]
    ]
    # The line, with its own fetch in it; not its own fetch again.
    assert len(reads) == 1
    # The calls in flight are counted in the same statement.
    assert not [q for q in queries.captured_queries if q["sql"].startswith("SELECT COUNT(")]


def test_a_call_that_ends_with_nothing_paused_writes_nothing():
    # On SQLite an UPDATE takes the write lock even when it changes nothing.
    with CaptureQueriesContext(connection) as queries:
        shield.resume()
    assert [q["sql"].split()[0] for q in queries.captured_queries] == ["SELECT"]


def test_after_a_pause_one_call_goes_first_and_the_others_follow_if_it_succeeds(clock):
    first, second = pending(1), pending(2)
    shield.pause(reason="429", retry_after=5)
    clock.shift(5)
    held_back = []

    def answer(query_json: str, **kwargs: Any) -> kentik.Chart:
        # While the probe waits for Kentik, every other fetch waits for it.
        held_back.append(claim(second))
        return kentik.Chart(media_type="image/png", data=PNG)

    with mock_chart(kentik.Chart(media_type="image/png", data=PNG)) as chart:
        chart.side_effect = answer
        fetching.fetch_run(fetch_id=first.pk)
    # The probe makes one attempt: no retries of its own.
    assert chart.call_args.kwargs["retries"] == 0
    assert [(c.outcome, c.reason) for c in held_back] == [(WAIT, "probing")]
    # Its answer was a chart: every fetch goes again.
    assert gate().paused_until is None
    assert claim(second).outcome == CLAIMED


def test_a_probe_that_fails_pauses_again_for_longer_and_its_fetch_waits(clock):
    fetch = pending(1)
    shield.pause(reason="503", retry_after=None)  # 1 s
    clock.shift(1)
    failure = kentik.KentikError(503, "Service unavailable", transient=True)
    with mock_chart(failure) as chart:
        fetching.fetch_run(fetch_id=fetch.pk)
    assert chart.call_count == 1
    fetch.refresh_from_db()
    assert (fetch.state, fetch.attempts) == (FetchState.PENDING, 0)
    assert gate().paused_until == timezone.now() + timedelta(seconds=2)
    assert gate().probe_owner == ""


def test_a_dead_probe_is_replaced_once_its_time_is_up(settings, clock):
    settings.KENTIK_API_TIMEOUT = 5
    first, second = pending(1), pending(2)
    shield.pause(reason="429", retry_after=1)
    clock.shift(1)
    assert claim(first).probe
    clock.shift(14)
    assert claim(second).outcome == WAIT
    clock.shift(2)
    assert claim(second).probe


def test_a_probe_told_to_slow_down_again_and_again_keeps_its_retries_and_gets_its_image(
    settings, clock
):
    settings.KENTIK_API_RETRIES = 1
    fetch = pending(1)
    # Ten seconds of 429 with Retry-After: 2, and the fetch goes first after each pause.
    with mock_chart(kentik.RateLimited(429, "Too many requests", retry_after=2)) as chart:
        for _ in range(5):
            fetching.fetch_run(fetch_id=fetch.pk)
            clock.shift(2)
    assert chart.call_count == 5
    fetch.refresh_from_db()
    assert (fetch.state, fetch.probe_failures) == (FetchState.PENDING, 0)
    with mock_chart(kentik.Chart(media_type="image/png", data=PNG)):
        fetching.fetch_run(fetch_id=fetch.pk)
    fetch.refresh_from_db()
    assert fetch.state == FetchState.READY


def test_charts_queued_during_a_stretch_of_429s_all_arrive_with_one_429_per_pause(settings, clock):
    settings.KENTIK_MAX_CONCURRENCY = 8
    fetches = [pending(n) for n in range(8)]
    answers: list[int] = []

    def answer(query_json: str, **kwargs: Any) -> kentik.Chart:
        if timezone.now() < NOW + timedelta(seconds=10):
            answers.append(429)
            raise kentik.RateLimited(429, "Too many requests", retry_after=2)
        answers.append(200)
        return kentik.Chart(media_type="image/png", data=PNG)

    pauses = counter("imagecache_kentik_pauses_total")
    with mock_chart(kentik.Chart(media_type="image/png", data=PNG)) as chart:
        chart.side_effect = answer
        # Each fetch's task, once a second, for as long as one is in line.
        while Fetch.objects.filter(state=FetchState.PENDING).exists():
            assert timezone.now() < NOW + timedelta(seconds=60), answers
            for fetch in fetches:
                fetching.fetch_run(fetch_id=fetch.pk)
            clock.shift(1)
    states = set(Fetch.objects.values_list("state", flat=True))
    assert states == {FetchState.READY}
    # One call after each pause: five 429s, five pauses, then eight charts.
    assert answers == [429] * 5 + [200] * 8
    assert counter("imagecache_kentik_pauses_total") == pauses + 5


def test_a_transient_failure_pauses_the_deployment_and_a_permanent_one_does_not():
    with mock_chart(kentik.KentikError(400, "Bad query")):
        fetching.fetch_run(fetch_id=pending(1).pk)
    assert gate().paused_until is None
    with mock_chart(kentik.KentikError(503, "Service unavailable", transient=True)):
        fetching.fetch_run(fetch_id=pending(2).pk)
    assert gate().paused_until == NOW + timedelta(seconds=1)
    assert Fetch.objects.get(query_json__contains='"n": 2').error_transient


# --- The deployment or the query ---------------------------------------------------

HEAVY = {**QUERY, "heavy": "a long lookback over every device"}


def test_one_query_kentik_cannot_render_in_time_holds_no_other_back(sim, settings):
    sim.add_rule(match="a long lookback", hang=True)
    heavy = entry_create(api_query=HEAVY).fetch
    # Timed out on every attempt (its retries included): it fails, and alone.
    fetching.fetch_run(fetch_id=heavy.pk)
    heavy.refresh_from_db()
    assert (heavy.state, heavy.error_status, heavy.error_transient) == (
        FetchState.FAILED,
        504,
        True,
    )
    assert gate().paused_until is None
    other = pending(1)
    fetching.fetch_run(fetch_id=other.pk)
    assert Fetch.objects.get(pk=other.pk).state == FetchState.READY


def test_a_probe_that_fails_on_its_query_lets_the_next_fetch_go_first(sim, settings):
    settings.KENTIK_API_RETRIES = 1
    sim.add_rule(match="a long lookback", hang=True)
    heavy, first, second = entry_create(api_query=HEAVY).fetch, pending(1), pending(2)
    shield.pause(reason="503", retry_after=0)
    fetching.fetch_run(fetch_id=heavy.pk)
    heavy.refresh_from_db()
    # Its one attempt as the probe timed out: not paused again, one retry spent.
    assert heavy.state == FetchState.PENDING
    assert not gate().pause_holds(timezone.now())
    assert heavy.probe_failures == 1
    # Its own task, next, sends another fetch first, which Kentik renders.
    fetching.fetch_run(fetch_id=heavy.pk)
    assert Fetch.objects.get(pk=first.pk).state == FetchState.READY
    assert gate().paused_until is None
    for fetch in (second, heavy):
        fetching.fetch_run(fetch_id=fetch.pk)
    assert Fetch.objects.get(pk=second.pk).state == FetchState.READY
    heavy.refresh_from_db()
    # Its retries spent: it fails, and the deployment is not paused for it.
    assert (heavy.state, heavy.error_status) == (FetchState.FAILED, 504)
    assert gate().paused_until is None
    assert sim.calls()["by_query"] == {
        query_hash(HEAVY): 2,
        query_hash({**QUERY, "n": 1}): 1,
        query_hash({**QUERY, "n": 2}): 1,
    }


def test_queries_that_fail_on_their_own_pause_only_when_two_fail_in_a_row(clock):
    timed_out = kentik.KentikError(504, "Kentik did not answer", transient=True, deployment=False)
    with mock_chart(timed_out):
        fetching.fetch_run(fetch_id=pending(1).pk)
        fetching.fetch_run(fetch_id=pending(1).pk)
    # The same query twice: a heavy query.
    assert gate().paused_until is None
    with mock_chart(kentik.Chart(media_type="image/png", data=PNG)):
        fetching.fetch_run(fetch_id=pending(2).pk)
    assert gate().resumed_at is None, "no pause ended: the fetches in line keep their turns"
    with mock_chart(timed_out):
        fetching.fetch_run(fetch_id=pending(3).pk)
    # Another query, but Kentik answered one in between: alive.
    assert gate().paused_until is None
    with mock_chart(timed_out):
        fetching.fetch_run(fetch_id=pending(4).pk)
    # Two queries in a row, nothing answered: every query fails so, an outage.
    assert (gate().paused_until, gate().pause_reason) == (NOW + timedelta(seconds=1), "504")


# --- The line ---------------------------------------------------------------------


def test_the_line_serves_waited_then_normal_then_refresh_oldest_first(settings, clock):
    settings.KENTIK_MAX_CONCURRENCY = 1
    refresh = pending(1, priority=FetchPriority.REFRESH)
    clock.shift(1)
    normal_old = pending(2)
    clock.shift(1)
    normal_new = pending(3)
    clock.shift(1)
    waited = pending(4, priority=FetchPriority.WAITED)
    order = []
    for _ in range(4):
        # Whichever task runs takes the first in line: here always the refresh's.
        taken = claim(refresh)
        assert taken.outcome == CLAIMED and taken.fetch is not None
        order.append(taken.fetch.pk)
        Fetch.objects.filter(pk=taken.fetch.pk).update(state=FetchState.READY)
    assert order == [waited.pk, normal_old.pk, normal_new.pk, refresh.pk]


def test_a_task_that_waited_serves_its_class_oldest_first(clock):
    older = pending(1)
    clock.shift(1)
    newer = pending(2)
    # Before it waited, a task takes its own; once it waited, the oldest.
    assert claim(newer).fetch == newer
    Fetch.objects.filter(pk=newer.pk).update(state=FetchState.PENDING)
    assert claims.fetch_claim(fetch_id=newer.pk, waited=True).fetch == older


@pytest.mark.django_db(transaction=True)
def test_a_client_that_waits_puts_the_fetch_first_in_line(settings):
    settings.ENTRY_WAIT_TIMEOUT = 0.01
    entry = in_line(settings, QUERY)
    response = Client().get(f"/image/{entry.pk}")
    assert response.status_code == 500  # still pending after the wait
    assert Fetch.objects.get(pk=entry.fetch_id).priority == FetchPriority.WAITED


# --- Stale-if-error -----------------------------------------------------------------


def stale_setup(clock: Any, failure: Exception) -> tuple[Entry, Entry]:
    """A ready image at NOW, and a later entry of the same query whose fetch
    (past REUSE_MAX_AGE) failed with `failure`."""
    old = ready(QUERY, at=NOW, data=PNG + b"old")
    clock.shift(120)
    entry = entry_create(api_query=QUERY, ttl=600)
    assert entry.fetch_id != old.fetch_id
    with mock_chart(failure):
        fetching.fetch_run(fetch_id=entry.fetch_id)
    shield.resume()
    return old, entry


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_a_transient_failure_is_answered_with_the_last_good_image(clock, status):
    old, entry = stale_setup(clock, kentik.KentikError(status, "Kentik failed", transient=True))
    answers = counter("imagecache_stale_answers_total")
    response = Client().get(f"/image/{entry.pk}")
    assert response.status_code == 200
    assert response.getvalue() == PNG + b"old"
    assert response["ETag"] == f'"{old.fetch.content_hash}"'
    assert response["Age"] == "120"
    assert response["X-Image-Stale"] == f"error={status}"
    assert response["Cache-Control"] == "no-cache"
    assert counter("imagecache_stale_answers_total") == answers + 1
    info = Client().get("/info").json()
    assert (info["stale_count"], info["failed_count"]) == (1, 1)


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_a_permanent_failure_is_never_answered_stale(clock, status):
    _, entry = stale_setup(clock, kentik.KentikError(status, "Refused"))
    response = Client().get(f"/image/{entry.pk}")
    assert response.status_code == status
    assert "X-Image-Stale" not in response


def test_no_stale_answer_past_stale_if_error_or_with_it_off(settings, clock):
    _, entry = stale_setup(clock, kentik.KentikError(503, "Down", transient=True))
    settings.STALE_IF_ERROR = 119
    assert Client().get(f"/image/{entry.pk}").status_code == 503
    settings.STALE_IF_ERROR = 0
    assert Client().get(f"/image/{entry.pk}").status_code == 503


def test_a_paused_deployment_answers_a_pending_image_stale_at_once(clock, settings):
    settings.ENTRY_WAIT_TIMEOUT = 60  # a wait would run into the test's timeout
    ready(QUERY, at=NOW)
    clock.shift(120)
    entry = entry_create(api_query=QUERY)
    shield.pause(reason="429", retry_after=30)
    response = Client().get(f"/image/{entry.pk}")
    assert response.status_code == 200
    assert response["X-Image-Stale"] == "paused"


def test_a_pending_image_is_answered_stale_at_once_after_its_query_failed(clock, settings):
    settings.ENTRY_WAIT_TIMEOUT = 60
    stale_setup(clock, kentik.KentikError(503, "Down", transient=True))
    clock.shift(1)
    entry = entry_create(api_query=QUERY, ttl=900)
    assert entry.fetch.state == FetchState.PENDING
    response = Client().get(f"/image/{entry.pk}")
    assert response.status_code == 200
    assert response["X-Image-Stale"] == "paused"


# --- Refresh-ahead ----------------------------------------------------------------------


def test_refresh_ahead_starts_one_refresh_of_an_ageing_image_that_is_asked_for(clock):
    old = ready(QUERY, at=NOW)
    started = counter("imagecache_refreshes_started_total")
    clock.shift(47)
    assert entry_create(api_query=QUERY).fetch_id == old.fetch_id
    assert counter("imagecache_refreshes_started_total") == started
    clock.shift(1)  # 48 s: 0.8 of REUSE_MAX_AGE
    assert entry_create(api_query=QUERY, ttl=10).fetch_id == old.fetch_id
    assert entry_create(api_query=QUERY, ttl=11).fetch_id == old.fetch_id
    refreshes = Fetch.objects.filter(priority=FetchPriority.REFRESH)
    assert refreshes.count() == 1
    assert counter("imagecache_refreshes_started_total") == started + 1
    refresh = refreshes.get()
    with mock_chart(kentik.Chart(media_type="image/png", data=PNG + b"new")):
        fetching.fetch_run(fetch_id=refresh.pk)
    used = counter("imagecache_refreshes_used_total")
    clock.shift(13)  # the old image is past REUSE_MAX_AGE: the refresh answers
    entry = entry_create(api_query=QUERY, ttl=12)
    assert (entry.fetch_id, entry.fetch.state) == (refresh.pk, FetchState.READY)
    entry_create(api_query=QUERY, ttl=13)
    assert counter("imagecache_refreshes_used_total") == used + 1


def test_refresh_ahead_off_or_young_images_start_nothing(settings, clock):
    ready(QUERY, at=NOW)
    settings.REFRESH_AHEAD = 0
    clock.shift(59)
    entry_create(api_query=QUERY)
    assert not Fetch.objects.filter(state=FetchState.PENDING).exists()


# --- Negative caching ------------------------------------------------------------------


def test_a_query_refused_as_bad_is_shared_for_negative_ttl(clock):
    hits = counter("imagecache_negative_hits_total")
    first = entry_create(api_query=QUERY)
    with mock_chart(kentik.KentikError(400, "Bad query")):
        fetching.fetch_run(fetch_id=first.fetch_id)
    clock.shift(59)
    assert entry_create(api_query=QUERY).fetch_id == first.fetch_id
    assert counter("imagecache_negative_hits_total") == hits + 1
    clock.shift(2)
    assert entry_create(api_query=QUERY).fetch_id != first.fetch_id


@pytest.mark.parametrize("status", [401, 403, 404, 503])
def test_other_failures_are_never_shared(clock, status):
    first = entry_create(api_query=QUERY)
    failure = kentik.KentikError(status, "No", transient=status >= 500)
    with mock_chart(failure):
        fetching.fetch_run(fetch_id=first.fetch_id)
    clock.shift(1)
    assert entry_create(api_query=QUERY).fetch_id != first.fetch_id


# --- What operators see -------------------------------------------------------------------


def test_info_and_metrics_show_the_budget_and_the_pause(settings, client):
    settings.KENTIK_RATE_LIMIT = 30
    claim(pending(1))
    shield.pause(reason="429", retry_after=20)
    kentik_info = client.get("/info").json()["kentik"]
    assert kentik_info == {
        "calls_last_minute": 1,
        "rate_limit": 30,
        "paused_until": (NOW + timedelta(seconds=20)).timestamp(),
        "paused": True,
        "pause_reason": "429",
        "probing": False,
    }
    samples = parse(client.get("/metrics").content.decode())
    assert value(samples, "imagecache_kentik_budget_calls") == 1
    assert value(samples, "imagecache_kentik_budget_limit") == 30
    paused = value(samples, "imagecache_kentik_paused_until_seconds")
    assert paused == (NOW + timedelta(seconds=20)).timestamp()


def test_admin_shows_the_budget_and_the_pause(settings, admin_client):
    settings.KENTIK_RATE_LIMIT = 30
    claim(pending(1))
    page = admin_client.get("/admin/imagecache/entry/").content.decode()
    assert "1 calls in the last minute of 30 allowed" in page
    shield.pause(reason="429", retry_after=20)
    page = admin_client.get("/admin/imagecache/entry/").content.decode()
    assert "paused until 12:00:20 UTC (429)" in page


@pytest.mark.django_db(transaction=True)
def test_a_wait_that_runs_out_in_line_for_the_budget_is_answered_stale(settings, clock):
    settings.ENTRY_WAIT_TIMEOUT = 0.01
    ready(QUERY, at=NOW)
    clock.shift(120)
    entry = in_line(settings, QUERY)
    response = Client().get(f"/image/{entry.pk}")
    assert (response.status_code, response["X-Image-Stale"]) == (200, "pending")
    # Once Kentik holds it (the call went), a wait that runs out is no error of Kentik's.
    Fetch.objects.filter(pk=entry.fetch_id).update(state=FetchState.FETCHING)
    assert Client().get(f"/image/{entry.pk}").status_code == 500


def test_prune_keeps_the_last_image_of_a_query_within_stale_if_error(settings, clock):
    first = ready(QUERY, at=NOW, data=PNG + b"1")
    second = ready(QUERY, at=NOW + timedelta(seconds=100), data=PNG + b"2")
    Entry.objects.update(expires_at=NOW)
    clock.shift(3600)
    housekeeping.cache_prune()
    # The newest image stays (finished 3500 s ago); the older goes.
    assert list(Fetch.objects.values_list("pk", flat=True)) == [second.fetch_id]
    assert first.fetch_id != second.fetch_id
    clock.shift(101)
    housekeeping.cache_prune()
    assert not Fetch.objects.exists()


def test_the_pause_holds_a_fetch_until_it_ends_while_its_probe_runs_and_after_it(clock):
    fetch = pending(1)
    shield.pause(reason="429", retry_after=5)
    assert kentik_holds(fetch=fetch)
    clock.shift(5)
    # Over, and no call gone first yet: a client may wait for its own image.
    assert not kentik_holds(fetch=fetch)
    probe = claim(fetch)
    assert probe.probe
    assert kentik_holds(fetch=pending(2))
    shield.resume()
    # Kentik answers again: a fetch in line since before then waits behind
    # the others that did; one asked for since does not.
    clock.shift(1)
    assert kentik_holds(fetch=Fetch.objects.get(query_json__contains='"n": 2'))
    assert not kentik_holds(fetch=pending(3))


@pytest.mark.django_db(transaction=True)
def test_a_pause_that_begins_while_a_client_waits_answers_it_stale(settings, clock):
    settings.ENTRY_WAIT_TIMEOUT = 60  # far longer than the test takes
    ready(QUERY, at=NOW)
    clock.shift(120)
    entry = in_line(settings, QUERY)

    def pause_once_it_waits() -> None:
        try:
            wait_for(
                lambda: (REGISTRY.get_sample_value("imagecache_waiters") or 0) >= 1, timeout=30
            )
            shield.pause(reason="429", retry_after=30)
        finally:
            connection.close()

    pauser = threading.Thread(target=pause_once_it_waits)
    pauser.start()
    response = Client().get(f"/image/{entry.pk}")
    pauser.join()
    assert (response.status_code, response["X-Image-Stale"]) == (200, "paused")


@pytest.mark.django_db(transaction=True)
def test_a_claims_gate_is_locked_until_its_transaction_ends():
    if connection.vendor != "postgresql":
        pytest.skip("SQLite: a claim holds the write lock from its start (IMMEDIATE)")
    other: list[str] = []

    def take_the_gate() -> None:
        try:
            with transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL lock_timeout = '50ms'")
                shield.gate_lock()
                other.append("taken")
        except OperationalError:
            other.append("held")
        finally:
            connection.close()

    with transaction.atomic():
        shield.gate_lock()
        thread = threading.Thread(target=take_the_gate)
        thread.start()
        thread.join(30)
    take_the_gate()
    # Held while the first claim's transaction lasts; free once it ended.
    assert other == ["held", "taken"]
