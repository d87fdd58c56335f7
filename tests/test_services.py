from datetime import UTC, datetime
from unittest import mock

import pytest
import time_machine
from django.core.files.storage import default_storage

from imagecache import kentik, services
from imagecache.hashing import query_hash
from imagecache.models import Entry, Fetch, FetchState
from tests.conftest import PNG, QUERY

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)


@time_machine.travel(NOW, tick=False)
def test_entry_id_is_query_hash_and_expiry(settings):
    settings.DEFAULT_TTL = 300
    entry = services.entry_create(api_query=QUERY)
    assert entry.id == f"{query_hash(QUERY)}_{NOW.timestamp() + 300:.6f}"
    assert entry.expires_at.timestamp() == NOW.timestamp() + 300


@time_machine.travel(NOW, tick=False)
def test_entry_ttl_overrides_default():
    entry = services.entry_create(api_query=QUERY, ttl=42)
    assert entry.id.endswith(f"_{NOW.timestamp() + 42:.6f}")


def test_query_is_stored_with_nulls_and_key_order():
    query = {"z": None, "a": {"y": None, "b": 1}, "imageType": "png"}
    entry = services.entry_create(api_query=query)
    assert entry.fetch.query_json == '{"z": null, "a": {"y": null, "b": 1}, "imageType": "png"}'


def test_new_query_enqueues_one_fetch_after_commit(django_capture_on_commit_callbacks):
    with mock.patch.object(services, "fetch_enqueue", autospec=True) as enqueue:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            entry = services.entry_create(api_query=QUERY)
        enqueue.assert_not_called()
        for callback in callbacks:
            callback()
    enqueue.assert_called_once_with(fetch_id=entry.fetch_id)


def test_identical_queries_share_an_in_flight_fetch():
    first = services.entry_create(api_query=QUERY, ttl=10)
    second = services.entry_create(api_query=dict(reversed(QUERY.items())), ttl=20)
    assert first.id != second.id
    assert first.fetch_id == second.fetch_id
    assert Fetch.objects.count() == 1


def test_ready_fetch_is_reused_within_reuse_max_age(settings, fetch_chart):
    settings.REUSE_MAX_AGE = 60
    with time_machine.travel(NOW, tick=False):
        first = services.entry_create(api_query=QUERY)
        services.fetch_run(fetch_id=first.fetch_id)
    with time_machine.travel(NOW.timestamp() + 59, tick=False):
        second = services.entry_create(api_query=QUERY)
    assert second.fetch_id == first.fetch_id
    with time_machine.travel(NOW.timestamp() + 61, tick=False):
        third = services.entry_create(api_query=QUERY)
    assert third.fetch_id != first.fetch_id
    assert fetch_chart.call_count == 1


def test_reuse_max_age_zero_only_shares_in_flight_fetches(settings, fetch_chart):
    settings.REUSE_MAX_AGE = 0
    first = services.entry_create(api_query=QUERY)
    shared = services.entry_create(api_query=QUERY, ttl=7)
    assert shared.fetch_id == first.fetch_id
    services.fetch_run(fetch_id=first.fetch_id)
    later = services.entry_create(api_query=QUERY)
    assert later.fetch_id != first.fetch_id


def test_failed_fetch_is_never_reused(fetch_chart):
    fetch_chart.side_effect = kentik.KentikError(400, "bad query")
    first = services.entry_create(api_query=QUERY)
    services.fetch_run(fetch_id=first.fetch_id)
    second = services.entry_create(api_query=QUERY)
    assert second.fetch_id != first.fetch_id


def test_fetch_run_stores_image_and_marks_ready(fetch_chart):
    entry = services.entry_create(api_query=QUERY)
    services.fetch_run(fetch_id=entry.fetch_id)
    fetch = Fetch.objects.get(pk=entry.fetch_id)
    assert fetch.state == FetchState.READY
    assert fetch.media_type == "image/png"
    assert fetch.size == len(PNG)
    with default_storage.open(fetch.file_name) as image:
        assert image.read() == PNG
    fetch_chart.assert_called_once_with(fetch.query_json)


def test_fetch_run_is_idempotent(fetch_chart):
    entry = services.entry_create(api_query=QUERY)
    services.fetch_run(fetch_id=entry.fetch_id)
    services.fetch_run(fetch_id=entry.fetch_id)
    assert fetch_chart.call_count == 1


def test_fetch_held_by_live_lease_is_not_claimed_again(fetch_chart):
    entry = services.entry_create(api_query=QUERY)
    with time_machine.travel(NOW, tick=False):
        assert services.fetch_claim(fetch_id=entry.fetch_id) is not None
        assert services.fetch_claim(fetch_id=entry.fetch_id) is None


def test_fetch_with_expired_lease_is_taken_over(settings, fetch_chart):
    entry = services.entry_create(api_query=QUERY, ttl=3600)
    with time_machine.travel(NOW, tick=False):
        services.fetch_claim(fetch_id=entry.fetch_id)
    with time_machine.travel(NOW.timestamp() + settings.FETCH_TASK_TIMEOUT + 1, tick=False):
        fetch = services.fetch_claim(fetch_id=entry.fetch_id)
    assert fetch is not None
    assert fetch.attempts == 2


def test_kentik_error_is_recorded_with_status_and_message(fetch_chart):
    fetch_chart.side_effect = kentik.KentikError(429, "Too many requests")
    entry = services.entry_create(api_query=QUERY)
    services.fetch_run(fetch_id=entry.fetch_id)
    fetch = Fetch.objects.get(pk=entry.fetch_id)
    assert (fetch.state, fetch.error_status, fetch.error_message) == (
        FetchState.FAILED,
        429,
        "Too many requests",
    )


def test_unexpected_error_fails_the_fetch_instead_of_crashing(fetch_chart):
    fetch_chart.side_effect = RuntimeError("boom")
    entry = services.entry_create(api_query=QUERY)
    services.fetch_run(fetch_id=entry.fetch_id)
    fetch = Fetch.objects.get(pk=entry.fetch_id)
    assert fetch.state == FetchState.FAILED
    assert fetch.error_status == 502


def test_image_of_a_purged_fetch_is_dropped(fetch_chart):
    entry = services.entry_create(api_query=QUERY)

    def purge_meanwhile(query_json: str) -> kentik.Chart:
        Fetch.objects.filter(pk=entry.fetch_id).delete()
        return kentik.Chart(media_type="image/png", data=PNG)

    fetch_chart.side_effect = purge_meanwhile
    services.fetch_run(fetch_id=entry.fetch_id)
    _, files = default_storage.listdir(f"images/{entry.fetch.query_hash[:2]}")
    assert files == []


def test_recover_enqueues_pending_and_abandoned_fetches(settings, fetch_chart):
    pending = services.entry_create(api_query=QUERY, ttl=3600)
    other = {**QUERY, "imageType": "svg"}
    abandoned = services.entry_create(api_query=other, ttl=3600)
    with time_machine.travel(NOW, tick=False):
        services.fetch_claim(fetch_id=abandoned.fetch_id)
    with (
        mock.patch.object(services, "fetch_enqueue", autospec=True) as enqueue,
        time_machine.travel(NOW.timestamp() + settings.FETCH_TASK_TIMEOUT + 1, tick=False),
    ):
        recovered = services.fetch_recover()
    assert sorted(recovered) == sorted([pending.fetch_id, abandoned.fetch_id])
    assert enqueue.call_count == 2


def test_prune_removes_expired_entries_their_fetches_and_files(fetch_chart):
    with time_machine.travel(NOW, tick=False):
        short = services.entry_create(api_query=QUERY, ttl=10)
        services.fetch_run(fetch_id=short.fetch_id)
        long = services.entry_create(api_query={**QUERY, "imageType": "pdf"}, ttl=1000)
        services.fetch_run(fetch_id=long.fetch_id)
    short_file = Fetch.objects.get(pk=short.fetch_id).file_name
    with time_machine.travel(NOW.timestamp() + 11, tick=False):
        result = services.cache_prune()
    assert (result.entries, result.fetches, result.files, result.bytes_freed) == (1, 1, 1, len(PNG))
    assert list(Entry.objects.values_list("pk", flat=True)) == [long.id]
    assert not default_storage.exists(short_file)
    assert default_storage.exists(Fetch.objects.get(pk=long.fetch_id).file_name)


def test_prune_keeps_a_shared_fetch_while_one_entry_lives(fetch_chart):
    with time_machine.travel(NOW, tick=False):
        short = services.entry_create(api_query=QUERY, ttl=10)
        services.entry_create(api_query=QUERY, ttl=1000)
        services.fetch_run(fetch_id=short.fetch_id)
    with time_machine.travel(NOW.timestamp() + 11, tick=False):
        result = services.cache_prune()
    assert (result.entries, result.fetches) == (1, 0)
    assert Fetch.objects.get(pk=short.fetch_id).state == FetchState.READY


def test_prune_dry_run_changes_nothing(fetch_chart):
    with time_machine.travel(NOW, tick=False):
        entry = services.entry_create(api_query=QUERY, ttl=10)
        services.fetch_run(fetch_id=entry.fetch_id)
    with time_machine.travel(NOW.timestamp() + 11, tick=False):
        result = services.cache_prune(dry_run=True)
    assert (result.entries, result.files) == (1, 1)
    assert Entry.objects.count() == 1
    assert default_storage.exists(Fetch.objects.get().file_name)
