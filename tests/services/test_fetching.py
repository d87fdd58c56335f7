"""A fetch's run (imagecache.services.fetching): its claim under leases and
the bound on Kentik calls, the image stored and the ready mark, and Kentik's
errors and a poisoned query recorded instead of crashing."""

import subprocess
from datetime import UTC, datetime
from typing import Any
from unittest import mock

import pytest
import time_machine
from django.core.files.storage import default_storage
from django.db import OperationalError, connection
from django_q.models import Success

from imagecache import kentik, leases
from imagecache.files.names import image_prefix
from imagecache.models import Fetch, FetchState
from imagecache.services import claims, fetching, queue
from imagecache.services.entries import entry_create
from tests.harness.data import PNG, QUERY
from tests.harness.service import wait_for

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)


@pytest.mark.django_db(transaction=True)
def test_a_fetch_task_leaves_its_outcome_in_its_fetch_not_in_a_task_result(fetch_chart):
    # django-q2's monitor read every saved result (SAVE_LIMIT of them) to
    # prune one after each task: 3 ms of CPU per new image (bench/NOTES.md).
    entry = entry_create(api_query=QUERY)  # run at its commit (the test profile's queue)
    assert Fetch.objects.get(pk=entry.fetch_id).state == FetchState.READY
    assert not Success.objects.exists()


def test_fetch_run_stores_image_and_marks_ready(fetch_chart):
    entry = entry_create(api_query=QUERY)
    fetching.fetch_run(fetch_id=entry.fetch_id)
    fetch = Fetch.objects.get(pk=entry.fetch_id)
    assert fetch.state == FetchState.READY
    assert fetch.media_type == "image/png"
    assert fetch.size == len(PNG)
    with default_storage.open(fetch.file_name) as image:
        assert image.read() == PNG
    fetch_chart.assert_called_once()
    assert fetch_chart.call_args.args == (fetch.query_json,)


@pytest.mark.django_db(transaction=True)
def test_the_ready_mark_is_one_statement_committed_before_the_waiters_are_told(fetch_chart):
    with mock.patch.object(queue, "async_task", autospec=True):  # not run at its commit
        entry = entry_create(api_query=QUERY)
    seen: list[tuple[str, bool]] = []

    def record(execute, sql, params, many, context):
        # Each statement after Kentik's answer, and whether a transaction held it.
        if fetch_chart.called:
            seen.append((sql, connection.in_atomic_block))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        fetching.fetch_run(fetch_id=entry.fetch_id)
    assert Fetch.objects.get(pk=entry.fetch_id).state == FetchState.READY
    marks = [(sql, held) for sql, held in seen if "SET state = %s, file_name" in sql]
    assert len(marks) == 1
    assert not marks[0][1], "the ready mark ran inside a transaction"
    if connection.vendor == "postgresql":
        # The NOTIFY is the mark's own: it leaves at the mark's commit.
        assert "pg_notify" in marks[0][0]
        assert not [sql for sql, _ in seen if "pg_notify" in sql and sql != marks[0][0]]


@pytest.mark.django_db(transaction=True)
def test_a_ready_mark_whose_answer_is_lost_keeps_the_image(fetch_chart):
    with mock.patch.object(queue, "async_task", autospec=True):  # not run at its commit
        entry = entry_create(api_query=QUERY)
    lost: list[str] = []

    def answer_lost(execute, sql, params, many, context):
        # The mark commits, and the connection fails before its answer comes.
        result = execute(sql, params, many, context)
        if "SET state = %s, file_name" in sql and not lost:
            lost.append(sql)
            raise OperationalError("server closed the connection unexpectedly")
        return result

    with connection.execute_wrapper(answer_lost):
        fetching.fetch_run(fetch_id=entry.fetch_id)
    assert lost
    fetch = Fetch.objects.get(pk=entry.fetch_id)
    assert fetch.state == FetchState.READY
    with default_storage.open(fetch.file_name) as image:
        assert image.read() == PNG
    fetch_chart.assert_called_once()


def test_fetch_run_is_idempotent(fetch_chart):
    entry = entry_create(api_query=QUERY)
    fetching.fetch_run(fetch_id=entry.fetch_id)
    fetching.fetch_run(fetch_id=entry.fetch_id)
    assert fetch_chart.call_count == 1


def test_fetch_held_by_live_lease_is_not_claimed_again(fetch_chart):
    entry = entry_create(api_query=QUERY)
    with time_machine.travel(NOW, tick=False):
        assert claims.fetch_claim(fetch_id=entry.fetch_id).outcome == claims.ClaimOutcome.CLAIMED
        assert claims.fetch_claim(fetch_id=entry.fetch_id).outcome == claims.ClaimOutcome.SKIPPED


def test_fetch_with_expired_lease_is_taken_over(settings, fetch_chart):
    entry = entry_create(api_query=QUERY, ttl=3600)
    with time_machine.travel(NOW, tick=False):
        claims.fetch_claim(fetch_id=entry.fetch_id)
    with time_machine.travel(NOW.timestamp() + settings.FETCH_LEASE + 1, tick=False):
        claim = claims.fetch_claim(fetch_id=entry.fetch_id)
    assert claim.fetch is not None
    assert claim.fetch.attempts == 2


def test_kentik_error_is_recorded_with_status_and_message(fetch_chart):
    fetch_chart.side_effect = kentik.KentikError(429, "Too many requests")
    entry = entry_create(api_query=QUERY)
    fetching.fetch_run(fetch_id=entry.fetch_id)
    fetch = Fetch.objects.get(pk=entry.fetch_id)
    assert (fetch.state, fetch.error_status, fetch.error_message) == (
        FetchState.FAILED,
        429,
        "Too many requests",
    )


def test_unexpected_error_fails_the_fetch_instead_of_crashing(fetch_chart):
    fetch_chart.side_effect = RuntimeError("boom")
    entry = entry_create(api_query=QUERY)
    fetching.fetch_run(fetch_id=entry.fetch_id)
    fetch = Fetch.objects.get(pk=entry.fetch_id)
    assert fetch.state == FetchState.FAILED
    assert fetch.error_status == 502


def test_image_of_a_purged_fetch_is_dropped(fetch_chart):
    entry = entry_create(api_query=QUERY)

    def purge_meanwhile(query_json: str, **_: Any) -> kentik.Chart:
        Fetch.objects.filter(pk=entry.fetch_id).delete()
        return kentik.Chart(media_type="image/png", data=PNG)

    fetch_chart.side_effect = purge_meanwhile
    fetching.fetch_run(fetch_id=entry.fetch_id)
    prefix = image_prefix(query_hash=entry.fetch.query_hash, fetch_id=entry.fetch_id)
    _, files = default_storage.listdir(prefix.rpartition("/")[0])
    assert files == []


def test_fetch_of_a_dead_worker_on_this_host_is_taken_over_at_once(fetch_chart):
    entry = entry_create(api_query=QUERY)
    claims.fetch_claim(fetch_id=entry.fetch_id)
    dead = subprocess.Popen(["true"])
    dead.wait()
    Fetch.objects.filter(pk=entry.fetch_id).update(lease_owner=f"{leases.HOST}:{dead.pid}")
    assert claims.fetch_claim(fetch_id=entry.fetch_id).outcome == claims.ClaimOutcome.CLAIMED


def test_fetch_of_a_live_worker_on_another_host_waits_for_its_lease(fetch_chart):
    entry = entry_create(api_query=QUERY)
    claims.fetch_claim(fetch_id=entry.fetch_id)
    Fetch.objects.filter(pk=entry.fetch_id).update(lease_owner="elsewhere:1")
    assert claims.fetch_claim(fetch_id=entry.fetch_id).outcome == claims.ClaimOutcome.SKIPPED


def test_claims_stop_at_kentik_max_concurrency(settings, fetch_chart):
    settings.KENTIK_MAX_CONCURRENCY = 2
    entries = [entry_create(api_query={**QUERY, "n": n}) for n in range(3)]
    outcomes = [claims.fetch_claim(fetch_id=e.fetch_id).outcome for e in entries]
    assert outcomes == [
        claims.ClaimOutcome.CLAIMED,
        claims.ClaimOutcome.CLAIMED,
        claims.ClaimOutcome.WAIT,
    ]


def test_busy_fetch_waits_for_a_slot_then_stays_pending(settings, fetch_chart):
    settings.KENTIK_MAX_CONCURRENCY = 1
    settings.KENTIK_SLOT_WAIT = 0.3
    holder = entry_create(api_query={**QUERY, "n": 1})
    claims.fetch_claim(fetch_id=holder.fetch_id)
    waiting = entry_create(api_query={**QUERY, "n": 2})
    fetching.fetch_run(fetch_id=waiting.fetch_id)
    assert Fetch.objects.get(pk=waiting.fetch_id).state == FetchState.PENDING
    fetch_chart.assert_not_called()


def test_fetch_claimed_too_often_is_failed_for_good(settings, fetch_chart):
    settings.FETCH_MAX_ATTEMPTS = 2
    entry = entry_create(api_query=QUERY, ttl=3600)
    Fetch.objects.filter(pk=entry.fetch_id).update(attempts=2)
    fetching.fetch_run(fetch_id=entry.fetch_id)
    fetch = Fetch.objects.get(pk=entry.fetch_id)
    assert (fetch.state, fetch.error_status) == (FetchState.FAILED, 502)
    assert "Gave up after 2 attempts" in fetch.error_message
    fetch_chart.assert_not_called()


def test_poisoned_query_fails_instead_of_crashing(fetch_chart):
    entry = entry_create(api_query=QUERY)
    Fetch.objects.filter(pk=entry.fetch_id).update(query_json="{not json")
    fetch_chart.side_effect = ValueError("Expecting property name")
    fetching.fetch_run(fetch_id=entry.fetch_id)
    assert Fetch.objects.get(pk=entry.fetch_id).state == FetchState.FAILED


@pytest.mark.django_db(transaction=True)
def test_lease_is_renewed_while_kentik_renders(settings, fetch_chart):
    settings.FETCH_LEASE = 0.3
    with mock.patch.object(queue, "async_task", autospec=True):
        entry = entry_create(api_query=QUERY)
    leases_seen: list[datetime] = []

    def lease() -> datetime:
        until = Fetch.objects.get(pk=entry.fetch_id).lease_until
        assert until is not None  # claimed: the fetch holds a lease
        return until

    def slow(query_json: str, **kwargs: Any) -> kentik.Chart:
        # Kentik answers only once the lease was renewed twice meanwhile.
        leases_seen.append(lease())
        for _ in range(2):
            wait_for(lambda: lease() != leases_seen[-1], timeout=30, interval=0.02)
            leases_seen.append(lease())
        return kentik.Chart(media_type="image/png", data=PNG)

    fetch_chart.side_effect = slow
    fetching.fetch_run(fetch_id=entry.fetch_id)
    assert leases_seen == sorted(set(leases_seen))
    assert Fetch.objects.get(pk=entry.fetch_id).state == FetchState.READY
