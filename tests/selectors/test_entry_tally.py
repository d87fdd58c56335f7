"""`/info`'s count of live entries, from the tally the database keeps by
minute of expiry (migration 0006): exact whichever way the entries change,
and as the clock passes each expiry, on both databases."""

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
import time_machine
from django.core.management import call_command
from django.db import connection, transaction

from imagecache.models import ENTRY_TALLY, Entry, Fetch, FetchState
from imagecache.selectors.info import cache_info
from imagecache.services import housekeeping, operators
from tests.harness.data import NOW

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _frozen() -> Iterator[None]:
    """The whole test at NOW; `counted` moves the clock within it."""
    with time_machine.travel(NOW, tick=False):
        yield


# Seconds from NOW (12:00:00 sharp) to each entry's expiry: in minutes gone
# by, on a minute's first and last seconds, within NOW's minute, and far on.
EXPIRIES = [-90, -60, -1, 0, 1, 30, 59, 59.5, 60, 61, 119, 3600, 86400]
# The moments the count is read at, around those expiries.
MOMENTS = [-61, -30, 0, 0.5, 1, 29, 30, 59, 59.9, 60, 60.5, 61, 150, 3599, 3600, 86399, 86400]


def make_fetch(name: str) -> Fetch:
    return Fetch.objects.create(
        query_hash=name.ljust(64, "0"),
        query_json="{}",
        state=FetchState.READY,
        created_at=NOW - timedelta(hours=1),
        finished_at=NOW - timedelta(hours=1),
        file_name=f"{name}.png",
        media_type="image/png",
        size=100,
    )


def make_entries(fetch: Fetch, expiries: list[float], tag: str) -> list[Entry]:
    """One INSERT for all, as a bulk load in SQL would be."""
    return Entry.objects.bulk_create(
        Entry(
            id=f"{tag}{i}",
            fetch=fetch,
            created_at=NOW - timedelta(hours=1),
            expires_at=NOW + timedelta(seconds=seconds),
        )
        for i, seconds in enumerate(expiries)
    )


def counted(at_seconds: float) -> tuple[int, int]:
    """`/info`'s count of live entries at NOW + `at_seconds`, and the rows'."""
    at = NOW + timedelta(seconds=at_seconds)
    with time_machine.travel(at, tick=False):
        info = cache_info(limit=0)
    live = info["active_count"] + info["pending_count"] + info["failed_count"]
    return live, Entry.objects.filter(expires_at__gt=at).count()


def assert_exact() -> None:
    for moment in MOMENTS:
        live, rows = counted(moment)
        assert live == rows, f"at NOW + {moment} s: /info counts {live}, the rows are {rows}"


def test_the_count_is_exact_as_each_expiry_passes():
    make_entries(make_fetch("a"), EXPIRIES, "a")
    make_entries(make_fetch("b"), EXPIRIES[::2], "b")
    assert counted(0) == (14, 14)
    assert_exact()


def test_the_count_follows_single_inserts_deletes_and_extensions():
    fetch = make_fetch("a")
    for i, seconds in enumerate(EXPIRIES):
        Entry.objects.create(
            id=f"one{i}",
            fetch=fetch,
            created_at=NOW,
            expires_at=NOW + timedelta(seconds=seconds),
        )
    assert_exact()
    # Across a minute's edge, and within one.
    assert operators.entry_extend(entry_ids=["one5", "one6", "one11"], seconds=45) == 3
    assert operators.entry_extend(entry_ids=["one9"], seconds=1) == 1
    assert_exact()
    Entry.objects.filter(pk__in=["one4", "one8", "one12"]).delete()
    assert_exact()
    # A change of other columns moves nothing.
    Entry.objects.filter(pk="one7").update(fetch=make_fetch("b"))
    assert_exact()


def test_the_count_follows_the_purge_the_cascade_and_the_prune():
    make_entries(make_fetch("a"), EXPIRIES, "a")
    b = make_fetch("b")
    make_entries(b, EXPIRIES, "b")
    make_entries(make_fetch("c"), EXPIRIES, "c")
    operators.entry_purge(entry_ids=["a3", "a9", "a12"])
    assert_exact()
    b.delete()  # its entries with it, by Django's collector
    assert_exact()
    expired = Entry.objects.filter(expires_at__lte=NOW + timedelta(seconds=61)).count()
    with time_machine.travel(NOW + timedelta(seconds=61), tick=False):
        assert housekeeping.cache_prune().entries == expired > 0
    assert_exact()
    # The prune dropped the tally of the minutes gone by, and only those.
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT MIN(minute) FROM {ENTRY_TALLY}")
        (oldest,) = cursor.fetchone()
    assert str(oldest)[:16] == "2026-11-28 12:01"
    # The expired entries still there (those of NOW + 61 s on) count as before.
    with time_machine.travel(NOW + timedelta(seconds=3600), tick=False):
        housekeeping.cache_prune()
    assert_exact()


def test_entries_deleted_all_at_once_leave_nothing_counted():
    make_entries(make_fetch("a"), EXPIRIES, "a")
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM imagecache_entry")
    assert counted(-3600) == (0, 0)
    make_entries(make_fetch("b"), EXPIRIES, "b")
    assert_exact()


def test_a_cache_filled_before_the_tally_is_counted_from_its_rows():
    make_entries(make_fetch("a"), EXPIRIES, "a")
    # Made before going back: the model's fetch has columns that 0005 lacks.
    later = make_fetch("b")
    # As a deployment upgrading from migration 0005 has it: entries and no
    # tally; the migration fills it.
    call_command("migrate", "imagecache", "0005", verbosity=0)
    make_entries(later, EXPIRIES, "b")
    call_command("migrate", "imagecache", verbosity=0)
    assert_exact()


def test_a_prune_leaves_a_minute_another_prune_holds_for_the_next():
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has one writer at a time: nothing to skip")
    make_entries(make_fetch("a"), [3600], "a")
    minute = connection.ops.adapt_datetimefield_value(NOW - timedelta(minutes=5))
    with connection.cursor() as cursor:
        # Shard 99: no server process adds to it (they use 0-15).
        cursor.execute(
            f"INSERT INTO {ENTRY_TALLY} (minute, shard, n) VALUES (%s, 99, 0), (%s, 98, 0)",
            [minute, minute],
        )
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        # As a concurrent prune's batch does until it commits.
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(f"SELECT 1 FROM {ENTRY_TALLY} WHERE shard = 99 FOR UPDATE")
                locked.set()
                release.wait(60)
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert locked.wait(10)
        pruned = threading.Event()

        def prune() -> None:
            try:
                housekeeping.cache_prune()
            finally:
                connection.close()
            pruned.set()

        threading.Thread(target=prune).start()
        assert pruned.wait(30), "the prune waited for the held minute"
        assert tally_shards() == [99]  # only the held one is left
    finally:
        release.set()
        holder.join(10)
    housekeeping.cache_prune()
    assert tally_shards() == []
    assert_exact()


def tally_shards() -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT shard FROM {ENTRY_TALLY} WHERE minute < %s ORDER BY shard", [NOW])
        return [shard for (shard,) in cursor.fetchall()]
