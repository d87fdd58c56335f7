"""The cache's upkeep (imagecache.services.housekeeping): pruning expired
entries and stray files, eviction by last read, and the reap and recovery of
abandoned fetches."""

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest import mock

import pytest
import time_machine
from django.core.files.storage import default_storage

from imagecache import leases
from imagecache.files.names import IMAGES
from imagecache.files.storage import TEMP_PREFIX, TEMP_SUFFIX
from imagecache.models import Entry, Fetch, FetchState
from imagecache.services import claims, entries, fetching, housekeeping, queue
from imagecache.services.entries import entry_create
from tests.harness.data import PNG, QUERY, unique_query

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)


def test_recover_enqueues_pending_and_abandoned_fetches(settings, fetch_chart):
    pending = entry_create(api_query=QUERY, ttl=3600)
    other = {**QUERY, "imageType": "svg"}
    abandoned = entry_create(api_query=other, ttl=3600)
    with time_machine.travel(NOW, tick=False):
        claims.fetch_claim(fetch_id=abandoned.fetch_id)
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


def test_prune_keeps_refreshes_in_line_and_calls_under_way(settings):
    """Through a Kentik outage, the refreshes of watched charts wait in line
    for longer than a maintenance period: a prune must leave them, and any
    fetch whose call is under way, or Kentik sees each query twice."""
    settings.STALE_IF_ERROR = 0
    with time_machine.travel(NOW, tick=False):
        refresh = entries.fetch_refresh(query_key="a" * 64, query_json=json.dumps(QUERY), now=NOW)
        assert refresh is not None
        calling = entry_create(api_query={**QUERY, "n": 1}, ttl=10)
        claims.fetch_claim(fetch_id=calling.fetch_id)
        forgotten = entry_create(api_query={**QUERY, "n": 2}, ttl=10)
    with time_machine.travel(NOW.timestamp() + 600, tick=False):
        dry = housekeeping.cache_prune(dry_run=True)
        result = housekeeping.cache_prune()
    # The pending fetch whose entry expired goes: nobody reads its image.
    assert (dry.entries, dry.fetches) == (result.entries, result.fetches) == (2, 1)
    assert sorted(Fetch.objects.values_list("pk", flat=True)) == sorted(
        [refresh.pk, calling.fetch_id]
    )
    assert not Fetch.objects.filter(pk=forgotten.fetch_id).exists()


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
        claims.fetch_claim(fetch_id=held.fetch_id)
        claims.fetch_claim(fetch_id=dead.fetch_id)
        Fetch.objects.filter(pk=dead.fetch_id).update(lease_owner=f"{leases.HOST}:999999999")
        with mock.patch.object(queue, "async_task", autospec=True) as enqueue:
            reaped = housekeeping.fetch_reap()
    assert sorted(reaped) == sorted([lost.fetch_id, dead.fetch_id])
    assert enqueue.call_count == 2
    assert Fetch.objects.get(pk=dead.fetch_id).state == FetchState.PENDING
    assert Fetch.objects.get(pk=held.fetch_id).state == FetchState.FETCHING


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
