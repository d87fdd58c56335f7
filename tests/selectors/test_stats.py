"""The admin's figures (imagecache.selectors.stats): the cache's counts by state,
its bytes and the last hour's Kentik calls, and the activity by the hour."""

import itertools
from datetime import timedelta
from typing import Any

import pytest
import time_machine

from imagecache import kentik
from imagecache.selectors.stats import cache_stats, fetch_activity
from imagecache.services.entries import entry_create
from tests.harness.data import PNG, QUERY
from tests.services.test_operators import NOW, OTHER, ready_entry

pytestmark = pytest.mark.django_db


def test_cache_stats_counts_states_bytes_and_recent_calls(fetch_chart):
    with time_machine.travel(NOW, tick=False):
        ready_entry()
        fetch_chart.side_effect = kentik.KentikError(400, "bad query")
        ready_entry(OTHER)
        entry_create(api_query={**QUERY, "imageType": "jpg"}, ttl=30)
    with time_machine.travel(NOW + timedelta(seconds=60), tick=False):
        stats = cache_stats()
    assert stats.entries_by_state == {"pending": 0, "fetching": 0, "ready": 1, "failed": 1}
    assert stats.expired_entries == 1
    assert stats.fetches_by_state == {"pending": 1, "fetching": 0, "ready": 1, "failed": 1}
    assert stats.stored_bytes == len(PNG)
    assert (stats.kentik_calls_last_hour, stats.kentik_failures_last_hour) == (2, 1)
    assert stats.oldest_pending_age == timedelta(seconds=60)


def test_cache_stats_of_an_empty_cache():
    stats = cache_stats()
    assert stats.stored_bytes == stats.kentik_calls_last_hour == 0
    assert stats.oldest_pending_age is None


def test_calls_older_than_an_hour_are_not_counted(fetch_chart):
    with time_machine.travel(NOW, tick=False):
        ready_entry(ttl=7200)
    with time_machine.travel(NOW + timedelta(minutes=61), tick=False):
        assert cache_stats().kentik_calls_last_hour == 0


FETCHES = itertools.count()


def fetch_taking(
    fetch_chart: Any, traveller: Any, seconds: float, status: int | None = None
) -> None:
    """One fetch through the pipeline, Kentik taking `seconds` (of the frozen
    clock) to answer, with an error `status` if given."""

    def kentik_answers(query_json: str, **kwargs: Any) -> kentik.Chart:
        traveller.shift(seconds)
        if status is not None:
            raise kentik.KentikError(status, "refused")
        return kentik.Chart(media_type="image/png", data=PNG)

    fetch_chart.side_effect = kentik_answers
    ready_entry({**QUERY, "title": f"fetch {next(FETCHES)}"})


def test_fetch_activity_counts_calls_failures_and_durations_by_the_hour(fetch_chart):
    with time_machine.travel(NOW + timedelta(minutes=10), tick=False) as traveller:
        fetch_taking(fetch_chart, traveller, 2)
        fetch_taking(fetch_chart, traveller, 4, status=503)
        traveller.move_to(NOW - timedelta(hours=3, minutes=30))
        fetch_taking(fetch_chart, traveller, 1.5)
        traveller.move_to(NOW - timedelta(hours=22, minutes=59))  # in the first hour shown
        fetch_taking(fetch_chart, traveller, 1)
        traveller.move_to(NOW - timedelta(hours=23, minutes=1))  # before it
        fetch_taking(fetch_chart, traveller, 1)
        traveller.move_to(NOW + timedelta(minutes=40))
        activity = fetch_activity(hours=24)

    assert [hour.start for hour in activity] == [
        NOW - timedelta(hours=23) + timedelta(hours=n) for n in range(24)
    ]
    now, earlier, first = activity[-1], activity[-5], activity[0]
    assert (now.calls, now.failures) == (2, 1)
    assert (now.mean_duration, now.max_duration) == (timedelta(seconds=3), timedelta(seconds=4))
    assert (earlier.calls, earlier.failures, earlier.max_duration) == (
        1,
        0,
        timedelta(seconds=1.5),
    )
    assert (first.start, first.calls, first.max_duration) == (
        NOW - timedelta(hours=23),
        1,
        timedelta(seconds=1),
    )
    quiet = [hour for hour in activity if hour not in (now, earlier, first)]
    assert {(hour.calls, hour.failures, hour.mean_duration) for hour in quiet} == {(0, 0, None)}
