import os
import re
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from unittest import mock

import pytest
import time_machine
from django.core.files.storage import default_storage
from django.db import OperationalError, connection, connections, transaction
from django.test.utils import CaptureQueriesContext
from django_q.models import Success

from imagecache import kentik, leases
from imagecache.files.names import IMAGES, image_prefix
from imagecache.files.storage import TEMP_PREFIX, TEMP_SUFFIX
from imagecache.hashing import query_hash
from imagecache.ids import entry_id_make
from imagecache.models import Entry, Fetch, FetchState
from imagecache.services import fetching, housekeeping, queue
from imagecache.services.entries import entry_create, fetch_mark_read, fetch_share
from tests.harness.data import PNG, QUERY, unique_query

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
T = TypeVar("T")


@time_machine.travel(NOW, tick=False)
def test_entry_id_is_query_hash_and_expiry(settings):
    settings.DEFAULT_TTL = 300
    entry = entry_create(api_query=QUERY)
    expected = entry_id_make(query_key=query_hash(QUERY), expires_at=int(NOW.timestamp()) + 300)
    assert entry.id == expected
    assert entry.expires_at.timestamp() == NOW.timestamp() + 300


@time_machine.travel(NOW, tick=False)
def test_entry_ttl_overrides_default():
    entry = entry_create(api_query=QUERY, ttl=42)
    assert entry.id.endswith(f"_{int(NOW.timestamp()) + 42}")


def test_query_is_stored_with_nulls_and_key_order():
    query = {"z": None, "a": {"y": None, "b": 1}, "imageType": "png"}
    entry = entry_create(api_query=query)
    assert entry.fetch.query_json == '{"z": null, "a": {"y": null, "b": 1}, "imageType": "png"}'


def test_new_query_enqueues_one_fetch_after_commit(django_capture_on_commit_callbacks):
    with mock.patch.object(queue, "async_task", autospec=True) as enqueue:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            entry = entry_create(api_query=QUERY)
        enqueue.assert_not_called()
        for callback in callbacks:
            callback()
    enqueue.assert_called_once()
    assert enqueue.call_args.args == ("imagecache.tasks.fetch_image", entry.fetch_id)
    # One broker per process, not one (and one Redis connection) per task.
    assert enqueue.call_args.kwargs["broker"] is queue.broker()


def test_identical_queries_share_an_in_flight_fetch():
    first = entry_create(api_query=QUERY, ttl=10)
    second = entry_create(api_query=dict(reversed(QUERY.items())), ttl=20)
    assert first.id != second.id
    assert first.fetch_id == second.fetch_id
    assert Fetch.objects.count() == 1


@time_machine.travel(NOW.timestamp() + 0.001, tick=False)
def test_identical_requests_within_a_second_share_one_entry_and_write_nothing(fetch_chart):
    first = entry_create(api_query=QUERY, ttl=60)
    fetching.fetch_run(fetch_id=first.fetch_id)
    with time_machine.travel(NOW.timestamp() + 0.999, tick=False):
        with CaptureQueriesContext(connection) as queries:
            again = entry_create(api_query=dict(reversed(QUERY.items())), ttl=60)
    assert again.id == first.id
    assert [query["sql"].split()[0] for query in queries] == ["SELECT"]
    with time_machine.travel(NOW.timestamp() + 1.001, tick=False):
        next_second = entry_create(api_query=QUERY, ttl=60)
    assert next_second.id != first.id
    assert next_second.fetch_id == first.fetch_id
    assert Entry.objects.count() == 2


@time_machine.travel(NOW, tick=False)
def test_a_new_request_reads_its_entry_once_before_it_makes_it():
    with CaptureQueriesContext(connection) as queries:
        entry_create(api_query=QUERY)
    entry_reads = [
        q["sql"]
        for q in queries
        if re.match(r'SELECT .*? FROM "?imagecache_entry"? ', q["sql"].strip(), re.DOTALL)
    ]
    # The lookup for an entry to share; then made, not looked up again.
    assert len(entry_reads) == 1
    assert Entry.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_new_request_makes_its_fetch_and_entry_without_savepoints():
    # Outside any test transaction, as a POST runs: its own is the outermost.
    with (
        mock.patch.object(queue, "async_task", autospec=True),  # the fetch not run at commit
        CaptureQueriesContext(connection) as queries,
    ):
        entry = entry_create(api_query=QUERY)
    assert not [q["sql"] for q in queries if "SAVEPOINT" in q["sql"].upper()]
    assert Entry.objects.get().fetch_id == entry.fetch_id == Fetch.objects.get().pk


def only_where_requests_race() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("SQLite: a write transaction holds the lock from its start; nothing races it")


def elsewhere(step: Callable[[], T]) -> T:
    """`step`, done and committed by another web process or a worker (a
    thread: a connection of its own) while this one waits."""

    def run() -> T:
        try:
            return step()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(1) as other:
        return other.submit(run).result()


def make_fetch() -> Fetch:
    return Fetch.objects.create(query_hash=query_hash(QUERY), query_json="{}", created_at=NOW)


@pytest.mark.django_db(transaction=True)
@time_machine.travel(NOW, tick=False)
@pytest.mark.parametrize("then_the_entry", [False, True], ids=["fetch", "fetch-then-entry"])
def test_a_request_that_loses_the_race_for_the_fetch_joins_the_winners(
    django_capture_on_commit_callbacks, then_the_entry
):
    # Another web process makes the query's fetch between this request's
    # read and its insert, and commits first: this request tries again. Then
    # (three identical POSTs within one second; CI saw it as a 503) a third
    # makes the entry between this one's second read and its insert.
    only_where_requests_race()
    fetches: list[Fetch] = []
    entries: list[Entry] = []

    def race(execute, sql, params, many, context):
        if sql.startswith('INSERT INTO "imagecache_fetch"') and not fetches:
            fetches.append(elsewhere(make_fetch))
        elif sql.startswith('INSERT INTO "imagecache_entry"') and then_the_entry and not entries:
            expires_at = NOW + timedelta(seconds=300)
            fields = {"id": params[0], "fetch": fetches[0], "expires_at": expires_at}
            entries.append(elsewhere(lambda: Entry.objects.create(created_at=NOW, **fields)))
        return execute(sql, params, many, context)

    with (
        mock.patch.object(queue, "async_task", autospec=True) as enqueue,
        django_capture_on_commit_callbacks(execute=True),
        connection.execute_wrapper(race),
    ):
        entry = entry_create(api_query=QUERY)
    assert fetches and entry.fetch_id == fetches[0].pk
    assert entry.id == Entry.objects.get().id == (entries[0].id if then_the_entry else entry.id)
    assert Entry.objects.get().fetch_id == fetches[0].pk
    assert Fetch.objects.count() == 1
    # The winner enqueues its own fetch.
    enqueue.assert_not_called()


@pytest.mark.django_db(transaction=True)
@time_machine.travel(NOW, tick=False)
def test_a_fetch_that_wins_the_race_and_leaves_flight_at_once_still_serves_the_loser(settings):
    # A quick Kentik: the winner's fetch is ready before the loser reads it.
    only_where_requests_race()
    settings.REUSE_MAX_AGE = 0  # a ready fetch is not shared on its own merits
    winner: list[Fetch] = []

    def race(execute, sql, params, many, context):
        if sql.startswith('INSERT INTO "imagecache_fetch"') and not winner:
            winner.append(elsewhere(make_fetch))
        elif sql.startswith("SELECT") and winner and winner[0].state != FetchState.READY:
            winner[0].state = FetchState.READY
            elsewhere(lambda: winner[0].save(update_fields=["state"]))  # a worker
        return execute(sql, params, many, context)

    with transaction.atomic(), connection.execute_wrapper(race):
        fetch, created = fetch_share(
            query_key=query_hash(QUERY), query_json="{}", now=NOW, ready_too=True
        )
    assert (fetch.pk, created) == (winner[0].pk, False)
    assert Fetch.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_fetch_task_leaves_its_outcome_in_its_fetch_not_in_a_task_result(fetch_chart):
    # django-q2's monitor read every saved result (SAVE_LIMIT of them) to
    # prune one after each task: 3 ms of CPU per new image (bench/NOTES.md).
    entry = entry_create(api_query=QUERY)  # run at its commit (the test profile's queue)
    assert Fetch.objects.get(pk=entry.fetch_id).state == FetchState.READY
    assert not Success.objects.exists()


@time_machine.travel(NOW, tick=False)
def test_request_within_the_second_of_a_failure_takes_a_new_fetch(fetch_chart):
    fetch_chart.side_effect = kentik.KentikError(503, "down")
    failed = entry_create(api_query=QUERY)
    fetching.fetch_run(fetch_id=failed.fetch_id)
    fetch_chart.side_effect = None
    again = entry_create(api_query=QUERY)
    assert again.id == failed.id
    assert again.fetch_id != failed.fetch_id
    fetching.fetch_run(fetch_id=again.fetch_id)
    entry = Entry.objects.select_related("fetch").get(pk=failed.id)
    assert entry.fetch.state == FetchState.READY
    assert Entry.objects.count() == 1


def test_ready_fetch_is_reused_within_reuse_max_age(settings, fetch_chart):
    settings.REUSE_MAX_AGE = 60
    with time_machine.travel(NOW, tick=False):
        first = entry_create(api_query=QUERY)
        fetching.fetch_run(fetch_id=first.fetch_id)
    with time_machine.travel(NOW.timestamp() + 59, tick=False):
        second = entry_create(api_query=QUERY)
    assert second.fetch_id == first.fetch_id
    with time_machine.travel(NOW.timestamp() + 61, tick=False):
        third = entry_create(api_query=QUERY)
    assert third.fetch_id != first.fetch_id
    assert fetch_chart.call_count == 1


def test_reuse_max_age_zero_only_shares_in_flight_fetches(settings, fetch_chart):
    settings.REUSE_MAX_AGE = 0
    first = entry_create(api_query=QUERY)
    shared = entry_create(api_query=QUERY, ttl=7)
    assert shared.fetch_id == first.fetch_id
    fetching.fetch_run(fetch_id=first.fetch_id)
    later = entry_create(api_query=QUERY)
    assert later.fetch_id != first.fetch_id


def test_failed_fetch_is_never_reused_with_negative_ttl_off(settings, fetch_chart):
    settings.NEGATIVE_TTL = 0
    fetch_chart.side_effect = kentik.KentikError(400, "bad query")
    first = entry_create(api_query=QUERY)
    fetching.fetch_run(fetch_id=first.fetch_id)
    second = entry_create(api_query=QUERY)
    assert second.fetch_id != first.fetch_id


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
        assert (
            fetching.fetch_claim(fetch_id=entry.fetch_id).outcome == fetching.ClaimOutcome.CLAIMED
        )
        assert (
            fetching.fetch_claim(fetch_id=entry.fetch_id).outcome == fetching.ClaimOutcome.SKIPPED
        )


def test_fetch_with_expired_lease_is_taken_over(settings, fetch_chart):
    entry = entry_create(api_query=QUERY, ttl=3600)
    with time_machine.travel(NOW, tick=False):
        fetching.fetch_claim(fetch_id=entry.fetch_id)
    with time_machine.travel(NOW.timestamp() + settings.FETCH_LEASE + 1, tick=False):
        claim = fetching.fetch_claim(fetch_id=entry.fetch_id)
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


def test_recover_enqueues_pending_and_abandoned_fetches(settings, fetch_chart):
    pending = entry_create(api_query=QUERY, ttl=3600)
    other = {**QUERY, "imageType": "svg"}
    abandoned = entry_create(api_query=other, ttl=3600)
    with time_machine.travel(NOW, tick=False):
        fetching.fetch_claim(fetch_id=abandoned.fetch_id)
    with (
        mock.patch.object(queue, "fetch_enqueue", autospec=True) as enqueue,
        time_machine.travel(NOW.timestamp() + settings.FETCH_LEASE + 1, tick=False),
    ):
        recovered = housekeeping.fetch_recover()
    assert sorted(recovered) == sorted([pending.fetch_id, abandoned.fetch_id])
    assert enqueue.call_count == 2


def test_prune_removes_expired_entries_their_fetches_and_files(settings, fetch_chart):
    # Else the last image of a query stays (tests/services/test_shield.py).
    settings.STALE_IF_ERROR = 0
    with time_machine.travel(NOW, tick=False):
        short = entry_create(api_query=QUERY, ttl=10)
        fetching.fetch_run(fetch_id=short.fetch_id)
        long = entry_create(api_query={**QUERY, "imageType": "pdf"}, ttl=1000)
        fetching.fetch_run(fetch_id=long.fetch_id)
    short_file = Fetch.objects.get(pk=short.fetch_id).file_name
    with time_machine.travel(NOW.timestamp() + 11, tick=False):
        result = housekeeping.cache_prune()
    assert (result.entries, result.fetches, result.files, result.bytes_freed) == (1, 1, 1, len(PNG))
    assert list(Entry.objects.values_list("pk", flat=True)) == [long.id]
    assert not default_storage.exists(short_file)
    assert default_storage.exists(Fetch.objects.get(pk=long.fetch_id).file_name)


def test_prune_keeps_a_shared_fetch_while_one_entry_lives(fetch_chart):
    with time_machine.travel(NOW, tick=False):
        short = entry_create(api_query=QUERY, ttl=10)
        entry_create(api_query=QUERY, ttl=1000)
        fetching.fetch_run(fetch_id=short.fetch_id)
    with time_machine.travel(NOW.timestamp() + 11, tick=False):
        result = housekeeping.cache_prune()
    assert (result.entries, result.fetches) == (1, 0)
    assert Fetch.objects.get(pk=short.fetch_id).state == FetchState.READY


def test_prune_in_batches_removes_every_expired_entry_and_unused_fetch(
    settings, fetch_chart, monkeypatch
):
    settings.STALE_IF_ERROR = 0  # else the last image of each query stays
    monkeypatch.setattr(housekeeping, "PRUNE_BATCH", 2)
    monkeypatch.setattr(housekeeping, "SQLITE_BUSY_SLEEP_MAX", 0)
    with time_machine.travel(NOW, tick=False):
        short = [entry_create(api_query=unique_query(f"prune-{i}"), ttl=10) for i in range(5)]
        for entry in short:
            fetching.fetch_run(fetch_id=entry.fetch_id)
        # Shares the first fetch, and outlives the prune.
        kept = entry_create(api_query=unique_query("prune-0"), ttl=1000)
    files = {entry.fetch_id: Fetch.objects.get(pk=entry.fetch_id).file_name for entry in short}
    with time_machine.travel(NOW.timestamp() + 11, tick=False):
        result = housekeeping.cache_prune()
    assert (result.entries, result.fetches, result.files) == (5, 4, 4)
    assert list(Entry.objects.values_list("pk", flat=True)) == [kept.id]
    assert list(Fetch.objects.values_list("pk", flat=True)) == [kept.fetch_id]
    assert default_storage.exists(files[kept.fetch_id])
    assert not any(
        default_storage.exists(name) for pk, name in files.items() if pk != kept.fetch_id
    )


def test_prune_dry_run_changes_nothing(settings, fetch_chart):
    settings.STALE_IF_ERROR = 0
    with time_machine.travel(NOW, tick=False):
        entry = entry_create(api_query=QUERY, ttl=10)
        fetching.fetch_run(fetch_id=entry.fetch_id)
    with time_machine.travel(NOW.timestamp() + 11, tick=False):
        result = housekeeping.cache_prune(dry_run=True)
    assert (result.entries, result.files) == (1, 1)
    assert Entry.objects.count() == 1
    assert default_storage.exists(Fetch.objects.get().file_name)


def test_fetch_of_a_dead_worker_on_this_host_is_taken_over_at_once(fetch_chart):
    entry = entry_create(api_query=QUERY)
    fetching.fetch_claim(fetch_id=entry.fetch_id)
    dead = subprocess.Popen(["true"])
    dead.wait()
    Fetch.objects.filter(pk=entry.fetch_id).update(lease_owner=f"{leases.HOST}:{dead.pid}")
    assert fetching.fetch_claim(fetch_id=entry.fetch_id).outcome == fetching.ClaimOutcome.CLAIMED


def test_fetch_of_a_live_worker_on_another_host_waits_for_its_lease(fetch_chart):
    entry = entry_create(api_query=QUERY)
    fetching.fetch_claim(fetch_id=entry.fetch_id)
    Fetch.objects.filter(pk=entry.fetch_id).update(lease_owner="elsewhere:1")
    assert fetching.fetch_claim(fetch_id=entry.fetch_id).outcome == fetching.ClaimOutcome.SKIPPED


def test_claims_stop_at_kentik_max_concurrency(settings, fetch_chart):
    settings.KENTIK_MAX_CONCURRENCY = 2
    entries = [entry_create(api_query={**QUERY, "n": n}) for n in range(3)]
    outcomes = [fetching.fetch_claim(fetch_id=e.fetch_id).outcome for e in entries]
    assert outcomes == [
        fetching.ClaimOutcome.CLAIMED,
        fetching.ClaimOutcome.CLAIMED,
        fetching.ClaimOutcome.WAIT,
    ]


def test_busy_fetch_waits_for_a_slot_then_stays_pending(settings, fetch_chart):
    settings.KENTIK_MAX_CONCURRENCY = 1
    settings.KENTIK_SLOT_WAIT = 0.3
    holder = entry_create(api_query={**QUERY, "n": 1})
    fetching.fetch_claim(fetch_id=holder.fetch_id)
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
    leases_seen = []

    def slow(query_json: str, **kwargs: Any) -> kentik.Chart:
        for _ in range(4):
            time.sleep(0.15)
            leases_seen.append(Fetch.objects.get(pk=entry.fetch_id).lease_until)
        return kentik.Chart(media_type="image/png", data=PNG)

    fetch_chart.side_effect = slow
    fetching.fetch_run(fetch_id=entry.fetch_id)
    assert len(set(leases_seen)) >= 2
    assert Fetch.objects.get(pk=entry.fetch_id).state == FetchState.READY


def test_reap_requeues_abandoned_and_lost_fetches_only(settings):
    with time_machine.travel(NOW, tick=False):
        lost = entry_create(api_query={**QUERY, "n": 1}, ttl=3600)
        fresh = entry_create(api_query={**QUERY, "n": 2}, ttl=3600)
        held = entry_create(api_query={**QUERY, "n": 3}, ttl=3600)
        dead = entry_create(api_query={**QUERY, "n": 4}, ttl=3600)
    Fetch.objects.filter(pk=lost.fetch_id).update(enqueued_at=NOW)
    later = NOW + timedelta(seconds=settings.Q_CLUSTER["retry"] + 1)
    Fetch.objects.filter(pk=fresh.fetch_id).update(enqueued_at=later)
    with time_machine.travel(later, tick=False):
        fetching.fetch_claim(fetch_id=held.fetch_id)
        fetching.fetch_claim(fetch_id=dead.fetch_id)
        Fetch.objects.filter(pk=dead.fetch_id).update(lease_owner=f"{leases.HOST}:999999999")
        with mock.patch.object(queue, "async_task", autospec=True) as enqueue:
            reaped = housekeeping.fetch_reap()
    assert sorted(reaped) == sorted([lost.fetch_id, dead.fetch_id])
    assert enqueue.call_count == 2
    assert Fetch.objects.get(pk=dead.fetch_id).state == FetchState.PENDING
    assert Fetch.objects.get(pk=held.fetch_id).state == FetchState.FETCHING


def test_read_is_recorded_at_most_once_per_interval(settings, fetch_chart):
    settings.READ_MARK_INTERVAL = 60
    entry = entry_create(api_query=QUERY)
    with time_machine.travel(NOW, tick=False):
        fetching.fetch_run(fetch_id=entry.fetch_id)
    fetch = Fetch.objects.get(pk=entry.fetch_id)
    with CaptureQueriesContext(connection) as queries:
        with time_machine.travel(NOW.timestamp() + 30, tick=False):
            fetch_mark_read(fetch=fetch)
        assert len(queries) == 0
        with time_machine.travel(NOW.timestamp() + 61, tick=False):
            fetch_mark_read(fetch=fetch)
        assert len(queries) == 1
    last_read_at = Fetch.objects.get(pk=entry.fetch_id).last_read_at
    assert last_read_at is not None
    assert last_read_at.timestamp() == NOW.timestamp() + 61


def test_eviction_removes_least_recently_read_images_below_90_percent(settings, fetch_chart):
    settings.CACHE_MAX_BYTES = 0
    entries = []
    for n in range(4):
        with time_machine.travel(NOW.timestamp() + n, tick=False):
            entry = entry_create(api_query={**QUERY, "n": n}, ttl=3600)
            fetching.fetch_run(fetch_id=entry.fetch_id)
            entries.append(entry)
    # The oldest image is read again: it is now the most recent.
    Fetch.objects.filter(pk=entries[0].fetch_id).update(last_read_at=NOW + timedelta(seconds=10))
    files = {e.fetch_id: Fetch.objects.get(pk=e.fetch_id).file_name for e in entries}
    settings.CACHE_MAX_BYTES = 3 * len(PNG)
    result = housekeeping.cache_evict()
    # 4 images over a bound of 3: down to 90% of it, i.e. 2 images.
    assert result.fetches == 2
    kept = set(Fetch.objects.values_list("pk", flat=True))
    assert kept == {entries[0].fetch_id, entries[3].fetch_id}
    assert not Entry.objects.filter(pk__in=[entries[1].id, entries[2].id]).exists()
    for fetch_id, name in files.items():
        assert default_storage.exists(name) == (fetch_id in kept)


def test_eviction_never_touches_pending_fetches(settings, fetch_chart):
    entry = entry_create(api_query=QUERY)
    fetching.fetch_run(fetch_id=entry.fetch_id)
    pending = entry_create(api_query={**QUERY, "n": 1})
    settings.CACHE_MAX_BYTES = 1
    housekeeping.cache_evict()
    assert list(Fetch.objects.values_list("pk", flat=True)) == [pending.fetch_id]


def test_prune_removes_stray_temp_and_orphan_files_once_old(settings):
    directory = Path(settings.CACHE_PATH) / IMAGES / "ab"
    directory.mkdir(parents=True)
    old_temp = directory / f"{TEMP_PREFIX}x{TEMP_SUFFIX}"
    old_orphan = directory / "orphan.png"
    young_orphan = directory / "young.png"
    for path in (old_temp, old_orphan, young_orphan):
        path.write_bytes(b"12345")
    # Every file time is set from the process clock, which a test run may move.
    now = time.time()
    old = now - settings.STRAY_FILE_AGE - 10
    for path in (old_temp, old_orphan):
        os.utime(path, (old, old))
    os.utime(young_orphan, (now, now))
    result = housekeeping.cache_prune()
    assert (result.files, result.bytes_freed) == (2, 10)
    assert sorted(p.name for p in directory.iterdir()) == ["young.png"]


def test_eviction_makes_room_for_an_incoming_image_first(settings, fetch_chart):
    for n in range(3):
        entry = entry_create(api_query={**QUERY, "n": n}, ttl=3600)
        fetching.fetch_run(fetch_id=entry.fetch_id)
    settings.CACHE_MAX_BYTES = 3 * len(PNG)
    assert housekeeping.cache_evict().fetches == 0
    # 3 stored + 1 incoming is over the bound: down to 90% of it, counting the new one.
    assert housekeeping.cache_evict(incoming=len(PNG)).fetches == 2
    assert Fetch.objects.count() == 1
