"""A request's entry and the fetch it shares (imagecache.services.entries):
ids and expiry, fetches shared in flight and reused while fresh, the race
between two requests for one query, and reads recorded."""

import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TypeVar
from unittest import mock

import pytest
import time_machine
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from imagecache import kentik
from imagecache.hashing import query_hash
from imagecache.ids import entry_id_make
from imagecache.models import Entry, Fetch, FetchState
from imagecache.services import fetching, queue
from imagecache.services.entries import entry_create, fetch_mark_read, fetch_share
from tests.harness.data import QUERY

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
