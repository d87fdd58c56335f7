"""The chart service: saved charts' images answered at once, refreshed past
their max_age, kept warm while watched, and their first render waited for
as `GET /image/{id}` is."""

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from imagecache import kentik
from imagecache.errors import ChartInvalid, ChartNotFound, FetchFailed, FetchStillPending
from imagecache.models import (
    IN_FLIGHT,
    Chart,
    ChartActivity,
    ChartImage,
    Fetch,
    FetchPriority,
    FetchState,
)
from imagecache.ops import metrics
from imagecache.selectors.charts import chart_images_watched, fetch_refresh_due
from imagecache.services import charts, fetching, housekeeping
from tests.harness.data import NOW, unique_query

pytestmark = pytest.mark.django_db

MAX_AGE = 60


@pytest.fixture(autouse=True)
def _frozen() -> Iterator[Any]:
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture(autouse=True)
def _views() -> Iterator[charts.ViewCounts]:
    """This process's view counts, written only when a test says so."""
    counts = charts.ViewCounts(interval=float("inf"))
    original, charts.VIEWS = charts.VIEWS, counts
    yield counts
    charts.VIEWS = original


def chart_make(slug: str = "edge-traffic", **fields: Any) -> Chart:
    query = unique_query(slug)
    del query["imageType"]
    return Chart.objects.create(
        slug=slug, title=slug, query=fields.pop("query", query), max_age=MAX_AGE, **fields
    )


def view(slug: str = "edge-traffic", ext: str = "png", **given: str) -> charts.ChartAnswer:
    return charts.chart_image_get(slug=slug, image_type=ext, given=given, wait=0)


def rendered(slug: str = "edge-traffic", ext: str = "png", **given: str) -> charts.ChartAnswer:
    """A first view (202), its fetch run, and the view again (200); the
    chart made first if there is none."""
    if not Chart.objects.filter(slug=slug).exists():
        chart_make(slug)
    with pytest.raises(FetchStillPending):
        view(slug, ext, **given)
    run_in_flight()
    return view(slug, ext, **given)


def run_in_flight() -> None:
    for fetch_id in Fetch.objects.filter(state__in=IN_FLIGHT).values_list("pk", flat=True):
        fetching.fetch_run(fetch_id=fetch_id)


def in_flight() -> list[Fetch]:
    return list(Fetch.objects.filter(state__in=IN_FLIGHT))


def test_a_chart_never_rendered_answers_202_with_wait_0_and_calls_kentik_once(fetch_chart):
    chart_make()
    with pytest.raises(FetchStillPending):
        view()
    with pytest.raises(FetchStillPending):
        view()
    assert len(in_flight()) == 1
    run_in_flight()
    answer = view()
    assert answer.fetch.state == FetchState.READY
    assert ChartImage.objects.get().fetch_id == answer.fetch.pk
    assert fetch_chart.call_count == 1
    sent = json.loads(fetch_chart.call_args.args[0])
    assert sent["imageType"] == "png"


@pytest.mark.django_db(transaction=True)
def test_the_first_view_waits_for_the_render_as_get_image_does(fetch_chart):
    chart_make()
    # The test profile's queue runs the fetch at its commit, inside the view.
    answer = charts.chart_image_get(slug="edge-traffic", image_type="svg", given={})
    assert answer.fetch.state == FetchState.READY
    assert answer.stale == ""
    assert json.loads(fetch_chart.call_args.args[0])["imageType"] == "svg"


def test_an_image_past_max_age_is_answered_at_once_and_refreshed_once(fetch_chart, _frozen):
    first = rendered()
    _frozen.shift(MAX_AGE + 1)
    refreshes = metrics.CHART_REFRESHES.labels("viewer")._value.get()

    again, third = view(), view()

    assert again.fetch.pk == third.fetch.pk == first.fetch.pk
    assert again.age(NOW + timedelta(seconds=MAX_AGE + 1)) == MAX_AGE + 1
    refresh = in_flight()
    assert len(refresh) == 1
    assert refresh[0].priority == FetchPriority.REFRESH
    assert metrics.CHART_REFRESHES.labels("viewer")._value.get() == refreshes + 1
    assert fetch_chart.call_count == 1


def test_a_refresh_once_ready_is_what_the_chart_answers_and_counts_as_used(fetch_chart, _frozen):
    rendered()
    _frozen.shift(MAX_AGE + 1)
    view()
    used = metrics.CHART_REFRESHES_USED._value.get()
    run_in_flight()

    answer = view()

    assert answer.fetch.pk == in_or_ready_newest().pk
    assert ChartImage.objects.get().fetch_id == answer.fetch.pk
    assert metrics.CHART_REFRESHES_USED._value.get() == used + 1
    view()
    assert metrics.CHART_REFRESHES_USED._value.get() == used + 1
    assert ChartActivity.objects.get().refreshes == 2  # the first render and the refresh


def in_or_ready_newest() -> Fetch:
    return Fetch.objects.filter(state=FetchState.READY).latest("finished_at")


def test_a_fresh_image_starts_no_refresh(fetch_chart, _frozen):
    rendered()
    _frozen.shift(MAX_AGE - 1)
    view()
    assert in_flight() == []


def test_keep_warm_refreshes_a_watched_image_as_it_reaches_max_age(fetch_chart, _frozen, settings):
    settings.CHART_KEEP_WARM = 600
    rendered()
    _frozen.shift(MAX_AGE - charts.KEEP_WARM_LEAD - 1)
    assert charts.chart_images_keep_warm() == 0
    _frozen.shift(1)
    assert charts.chart_images_keep_warm() == 1
    # A second worker's pass, or the next one: the refresh is in flight.
    assert charts.chart_images_keep_warm() == 0
    run_in_flight()
    assert charts.chart_images_keep_warm() == 0
    assert fetch_chart.call_count == 2
    # A viewer past the old image's max_age gets the new one, and starts nothing.
    _frozen.shift(charts.KEEP_WARM_LEAD + 1)
    assert view().age(NOW + timedelta(seconds=MAX_AGE + 1)) == charts.KEEP_WARM_LEAD + 1
    assert in_flight() == []


def test_a_second_worker_does_not_refresh_what_the_first_just_refreshed(fetch_chart, _frozen):
    rendered()
    _frozen.shift(MAX_AGE)
    watched = chart_images_watched(now=NOW + timedelta(seconds=MAX_AGE))
    assert charts.chart_images_keep_warm() == 1
    run_in_flight()
    # What the second worker read before the refresh finished, looked at after.
    assert not fetch_refresh_due(
        query_key=watched[0].query_hash, since=watched[0].finished_at, failed_since=NOW
    )


def test_a_chart_nobody_watches_any_more_costs_no_kentik_call(fetch_chart, _frozen, settings):
    settings.CHART_KEEP_WARM = 600
    rendered()
    calls = fetch_chart.call_count
    for _ in range(20):  # 20 minutes of the workers' looks, with nobody viewing
        _frozen.shift(MAX_AGE)
        charts.chart_images_keep_warm()
        run_in_flight()
    # Kept warm for CHART_KEEP_WARM after the last view (one refresh per
    # max_age), then never again.
    assert fetch_chart.call_count - calls == 600 // MAX_AGE
    chart_make("unwatched")
    rendered("unwatched")
    calls = fetch_chart.call_count
    _frozen.shift(settings.CHART_KEEP_WARM + 1)
    charts.chart_images_keep_warm()
    assert fetch_chart.call_count == calls
    assert in_flight() == []


def test_keep_warm_is_bounded_to_chart_warm_max_value_sets_per_chart(
    fetch_chart, _frozen, settings
):
    settings.CHART_WARM_MAX = 2
    query = unique_query("per-device", device="{{device}}")
    del query["imageType"]
    chart_make(query=query, params=[{"name": "device", "kind": "string", "pattern": "[a-z0-9]+"}])
    for device in ("a1", "b2", "c3"):
        rendered(device=device)
        _frozen.shift(1)
    _frozen.shift(MAX_AGE)
    assert charts.chart_images_keep_warm() == 2
    # The two most recently viewed.
    assert {json.loads(f.query_json)["queries"][0]["query"]["device"] for f in in_flight()} == {
        "b2",
        "c3",
    }


def test_an_image_past_max_age_stands_in_marked_stale_while_kentik_fails(fetch_chart, _frozen):
    first = rendered()
    _frozen.shift(MAX_AGE + 1)
    view()
    fetch_chart.side_effect = kentik.KentikError(503, "Kentik is down", transient=True)
    run_in_flight()

    answer = view()

    assert answer.fetch.pk == first.fetch.pk
    assert answer.stale == "paused"


@pytest.mark.django_db(transaction=True)
def test_a_first_view_while_kentik_fails_answers_kentiks_error(fetch_chart):
    chart_make()
    fetch_chart.side_effect = kentik.KentikError(503, "Kentik is down", transient=True)
    with pytest.raises(FetchFailed) as failed:
        charts.chart_image_get(slug="edge-traffic", image_type="png", given={})
    assert failed.value.status == 503


def test_a_query_kentik_refuses_is_not_asked_again_within_negative_ttl(fetch_chart, settings):
    settings.NEGATIVE_TTL = 60
    chart_make()
    fetch_chart.side_effect = kentik.KentikError(400, "bad query")
    with pytest.raises(FetchStillPending):
        view()
    run_in_flight()
    for _ in range(3):
        with pytest.raises(FetchFailed) as failed:
            view()
        assert failed.value.status == 400
    assert fetch_chart.call_count == 1


@pytest.mark.parametrize(
    ("given", "field"),
    [({"site": "x"}, "site"), ({"device": "a b"}, "device"), ({}, "device")],
    ids=["undeclared", "does-not-fit", "missing"],
)
def test_a_bad_parameter_names_itself_and_calls_no_one(fetch_chart, given, field):
    query = unique_query("per-device", device="{{device}}")
    chart_make(query=query, params=[{"name": "device", "kind": "string", "pattern": "[a-z0-9]+"}])
    with pytest.raises(ChartInvalid) as invalid:
        view(**given)
    assert invalid.value.field == field
    assert Fetch.objects.count() == 0
    fetch_chart.assert_not_called()


def test_an_unknown_chart_is_not_found():
    with pytest.raises(ChartNotFound):
        view("no-such-chart")


BREAKOUTS = [
    'edge", "imageType": "pdf',
    'edge\\", \\"x\\": {\\"y\\": 1}',
    "{{device}}}} {{other}} \\u0022",
    "'; DROP TABLE charts; --",
]


@pytest.mark.parametrize("value", BREAKOUTS)
def test_a_value_built_to_break_out_reaches_kentik_as_one_string(sim, value, settings):
    query = unique_query("breakout", device="{{device}}")
    del query["imageType"]
    chart_make(query=query, params=[{"name": "device", "kind": "string", "pattern": ".{1,100}"}])
    rendered(device=value)

    sent = json.loads(sim.calls()["last_bodies"][-1])

    assert sent == unique_query("breakout", "png", device=value)


def test_views_are_counted_in_memory_and_written_in_one_batch(fetch_chart, _frozen, _views):
    rendered()
    _frozen.shift(30)
    with CaptureQueriesContext(connection) as queries:
        for _ in range(50):
            view()
    writes = [q for q in queries.captured_queries if not q["sql"].startswith("SELECT")]
    assert writes == []
    _views.flush()
    image = ChartImage.objects.get()
    assert image.viewed_at == NOW + timedelta(seconds=30)
    assert ChartActivity.objects.get().views == 52  # the two of `rendered` too
    _views.flush()
    assert ChartActivity.objects.get().views == 52


def test_prune_keeps_a_watched_images_fetch_and_forgets_an_unwatched_image(
    fetch_chart, _frozen, settings, _views
):
    settings.STALE_IF_ERROR = 100
    settings.CHART_KEEP_WARM = 600
    settings.REUSE_MAX_AGE = 10
    chart_make()
    chart_make("forgotten")
    watched = rendered()
    rendered("forgotten")
    # Past every entry's expiry and STALE_IF_ERROR, the one still viewed
    # (older than max_age + STALE_IF_ERROR, it renders again).
    _frozen.shift(650)
    with pytest.raises(FetchStillPending):
        view()
    _views.flush()
    _frozen.shift(100)
    housekeeping.cache_prune()
    assert Fetch.objects.filter(pk=watched.fetch.pk).exists()
    assert list(ChartImage.objects.values_list("chart__slug", flat=True)) == ["edge-traffic"]
    _frozen.shift(701)
    housekeeping.cache_prune()
    assert not ChartImage.objects.exists()
    assert not Fetch.objects.filter(state=FetchState.READY).exists()


def test_purge_drops_a_charts_images_and_the_next_view_renders_again(fetch_chart):
    chart = chart_make()
    rendered()
    result = charts.chart_purge(chart=chart)
    assert result.files == 1
    assert not ChartImage.objects.exists()
    with pytest.raises(FetchStillPending):
        view()


def test_refresh_now_renders_a_chart_ahead_of_refreshes(fetch_chart):
    chart = chart_make()
    rendered()
    fetch = charts.chart_refresh(chart=chart)
    assert fetch.state == FetchState.PENDING
    assert fetch.priority == FetchPriority.NORMAL
    assert charts.chart_refresh(chart=chart).pk == fetch.pk  # the one in flight
    run_in_flight()
    assert ChartImage.objects.get().fetch_id == fetch.pk


def test_views_are_written_by_a_thread_of_the_process_not_by_the_request():
    """A view costs no statement on the request's connection, whichever path
    answered it: each process's writer thread writes the counts."""
    writers = sum(thread.name == "chart-views" for thread in threading.enumerate())
    # An hour: the writer sleeps through the test and never writes in it.
    counts = charts.ViewCounts(interval=3600)
    with CaptureQueriesContext(connection) as queries:
        for _ in range(3):
            counts.add(chart_id=1, query_key="a" * 64, fetch_id=None)
    assert len(queries) == 0
    assert sum(thread.name == "chart-views" for thread in threading.enumerate()) == writers + 1
