"""The operators' services behind the admin (imagecache.services.operators):
purge, refetch, extend.

The Kentik seam is patched (`fetch_chart`); files go through default_storage.
"""

from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import pytest
import time_machine
from django.core.files.storage import default_storage

from imagecache import kentik
from imagecache.ids import entry_id_parts
from imagecache.models import Entry, Fetch, FetchState
from imagecache.selectors.images import entry_get
from imagecache.services import fetching, housekeeping, operators, queue
from imagecache.services.entries import entry_create
from tests.harness.data import PNG, QUERY

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
OTHER: dict[str, Any] = {**QUERY, "imageType": "svg"}


def ready_entry(api_query: dict[str, Any] = QUERY, ttl: int = 600) -> Entry:
    """An entry whose image is stored (Kentik patched by `fetch_chart`)."""
    entry = entry_create(api_query=api_query, ttl=ttl)
    fetching.fetch_run(fetch_id=entry.fetch_id)
    return Entry.objects.select_related("fetch").get(pk=entry.pk)


# --- entry_purge --------------------------------------------------------------


def test_purge_deletes_entry_fetch_and_file(fetch_chart, django_capture_on_commit_callbacks):
    entry = ready_entry()
    file_name = entry.fetch.file_name
    with django_capture_on_commit_callbacks(execute=True):
        result = operators.entry_purge(entry_ids=[entry.pk])
    assert result == housekeeping.RemovalResult(entries=1, fetches=1, files=1, bytes_freed=len(PNG))
    assert not Entry.objects.exists()
    assert not Fetch.objects.exists()
    assert not default_storage.exists(file_name)


def test_purge_keeps_a_fetch_another_entry_uses(fetch_chart, django_capture_on_commit_callbacks):
    entry = ready_entry()
    sibling = entry_create(api_query=QUERY, ttl=900)  # reuses the ready fetch
    assert sibling.fetch_id == entry.fetch_id
    with django_capture_on_commit_callbacks(execute=True):
        result = operators.entry_purge(entry_ids=[entry.pk])
    assert result == housekeeping.RemovalResult(entries=1)
    assert list(Entry.objects.values_list("pk", flat=True)) == [sibling.pk]
    assert default_storage.exists(entry.fetch.file_name)


def test_purge_of_every_sharer_deletes_the_fetch(fetch_chart, django_capture_on_commit_callbacks):
    entry = ready_entry()
    sibling = entry_create(api_query=QUERY, ttl=900)
    with django_capture_on_commit_callbacks(execute=True):
        result = operators.entry_purge(entry_ids=[entry.pk, sibling.pk])
    assert (result.entries, result.fetches, result.files) == (2, 1, 1)
    assert not default_storage.exists(entry.fetch.file_name)


def test_purge_of_unknown_ids_does_nothing():
    assert operators.entry_purge(entry_ids=["nope"]) == housekeeping.RemovalResult()


def test_files_are_deleted_only_once_the_purge_commits(
    fetch_chart, django_capture_on_commit_callbacks
):
    entry = ready_entry()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        operators.entry_purge(entry_ids=[entry.pk])
    assert default_storage.exists(entry.fetch.file_name)
    for callback in callbacks:
        callback()
    assert not default_storage.exists(entry.fetch.file_name)


def test_purged_fetch_in_flight_stores_nothing(fetch_chart, django_capture_on_commit_callbacks):
    entry = entry_create(api_query=QUERY)
    with django_capture_on_commit_callbacks(execute=True):
        operators.entry_purge(entry_ids=[entry.pk])
    fetching.fetch_run(fetch_id=entry.fetch_id)
    fetch_chart.assert_not_called()
    assert not Fetch.objects.exists()


# --- entry_refetch ------------------------------------------------------------


def test_refetch_points_the_entry_at_a_new_fetch_and_fetches_it(
    fetch_chart, django_capture_on_commit_callbacks
):
    entry = ready_entry()
    old = entry.fetch
    fetch_chart.return_value = kentik.Chart(media_type="image/png", data=PNG + b"new")
    # django-q2 runs tasks synchronously in tests: committing runs the fetch.
    with django_capture_on_commit_callbacks(execute=True):
        result = operators.entry_refetch(entry_ids=[entry.pk])
    assert result == operators.RefetchResult(entries=1, fetches_created=1, fetches_deleted=1)
    entry.refresh_from_db()
    assert entry.fetch_id != old.pk
    assert entry.fetch.state == FetchState.READY
    assert entry.fetch.query_json == old.query_json
    assert entry.fetch.size == len(PNG) + 3
    assert not Fetch.objects.filter(pk=old.pk).exists()
    assert not default_storage.exists(old.file_name)
    assert fetch_chart.call_count == 2


def test_refetch_enqueues_only_after_commit(fetch_chart, django_capture_on_commit_callbacks):
    entry = ready_entry()
    with mock.patch.object(queue, "async_task", autospec=True) as enqueue:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            operators.entry_refetch(entry_ids=[entry.pk])
        enqueue.assert_not_called()
        for callback in callbacks:
            callback()
    entry.refresh_from_db()
    enqueue.assert_called_once()
    assert enqueue.call_args.args == ("imagecache.tasks.fetch_image", entry.fetch_id)
    assert entry.fetch.state == FetchState.PENDING
    assert entry.fetch.enqueued_at is not None


def test_refetch_of_entries_of_one_query_makes_one_fetch(
    fetch_chart, django_capture_on_commit_callbacks
):
    entry = ready_entry()
    sibling = entry_create(api_query=QUERY, ttl=900)
    with django_capture_on_commit_callbacks(execute=False):
        result = operators.entry_refetch(entry_ids=[entry.pk, sibling.pk])
    assert (result.entries, result.fetches_created, result.fetches_deleted) == (2, 1, 1)
    fetch_ids = set(Entry.objects.values_list("fetch_id", flat=True))
    assert len(fetch_ids) == 1
    assert Fetch.objects.get(pk__in=fetch_ids).state == FetchState.PENDING


def test_refetch_joins_the_fetch_already_in_flight(
    settings, fetch_chart, django_capture_on_commit_callbacks
):
    settings.REUSE_MAX_AGE = 0
    entry = ready_entry()
    in_flight = entry_create(api_query=QUERY, ttl=900).fetch
    assert in_flight.state == FetchState.PENDING
    with mock.patch.object(queue, "async_task", autospec=True) as enqueue:
        with django_capture_on_commit_callbacks(execute=True):
            result = operators.entry_refetch(entry_ids=[entry.pk])
    assert result == operators.RefetchResult(entries=1, fetches_joined=1, fetches_deleted=1)
    entry.refresh_from_db()
    assert entry.fetch_id == in_flight.pk
    # A pending fetch that was joined is enqueued again: its task may be lost.
    assert enqueue.call_args.args == ("imagecache.tasks.fetch_image", in_flight.pk)
    assert Fetch.objects.count() == 1


def test_refetch_keeps_an_old_fetch_other_entries_use(
    fetch_chart, django_capture_on_commit_callbacks
):
    entry = ready_entry()
    sibling = entry_create(api_query=QUERY, ttl=900)
    with django_capture_on_commit_callbacks(execute=False):
        result = operators.entry_refetch(entry_ids=[entry.pk])
    assert result.fetches_deleted == 0
    sibling.refresh_from_db()
    assert sibling.fetch.state == FetchState.READY
    assert default_storage.exists(sibling.fetch.file_name)


def test_refetch_skips_expired_entries(fetch_chart, django_capture_on_commit_callbacks):
    with time_machine.travel(NOW, tick=False):
        entry = ready_entry(ttl=60)
    with time_machine.travel(NOW + timedelta(seconds=61), tick=False):
        with django_capture_on_commit_callbacks(execute=True):
            result = operators.entry_refetch(entry_ids=[entry.pk])
    assert result == operators.RefetchResult(expired=1)
    assert Fetch.objects.count() == 1
    assert fetch_chart.call_count == 1


# --- entry_extend ---------------------------------------------------------------


@time_machine.travel(NOW, tick=False)
def test_extend_moves_the_expiry_and_keeps_the_id(fetch_chart):
    entry = ready_entry(ttl=60)
    assert operators.entry_extend(entry_ids=[entry.pk], seconds=3600) == 1
    extended = Entry.objects.get(pk=entry.pk)
    assert extended.expires_at == entry.expires_at + timedelta(seconds=3600)
    # The number in the id is the expiry the client was first given.
    assert float(entry_id_parts(extended.pk)[1]) == entry.expires_at.timestamp()


def test_extended_entry_is_served_past_its_first_expiry(fetch_chart):
    with time_machine.travel(NOW, tick=False):
        entry = ready_entry(ttl=60)
        operators.entry_extend(entry_ids=[entry.pk], seconds=600)
    with time_machine.travel(NOW + timedelta(seconds=120), tick=False):
        assert entry_get(entry_id=entry.pk).pk == entry.pk
        assert housekeeping.cache_prune().entries == 0


def test_extend_skips_expired_entries(fetch_chart):
    with time_machine.travel(NOW, tick=False):
        entry = ready_entry(ttl=60)
    with time_machine.travel(NOW + timedelta(seconds=61), tick=False):
        assert operators.entry_extend(entry_ids=[entry.pk], seconds=600) == 0
    assert Entry.objects.get(pk=entry.pk).expires_at == entry.expires_at


def test_extend_refuses_a_non_positive_amount():
    with pytest.raises(ValueError):
        operators.entry_extend(entry_ids=[], seconds=0)
