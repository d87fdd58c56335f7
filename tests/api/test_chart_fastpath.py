"""Saved charts' fresh images answered before Django runs: as Django answers
them, and never from what a changed, deleted or purged chart left behind."""

# ruff: noqa: F811 - the tests take the fixtures imported below by their names

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from django.db import connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext

from imagecache import signing
from imagecache.api import chart_fastpath
from imagecache.api.fastpath import FastImages
from imagecache.errors import FetchStillPending
from imagecache.models import IN_FLIGHT, Chart, ChartActivity, ChartImage, Fetch
from imagecache.services import chart_definitions, charts, fetching, shield
from tests.api.test_fastpath import CountingDjango, call, django_app  # noqa: F401
from tests.harness.data import NOW, unique_query

# The frozen clock, and Django's view counts of each test alone.
from tests.services.test_charts import _frozen, _views  # noqa: F401

pytestmark = pytest.mark.django_db

MAX_AGE = 60
PARAMS = [{"name": "device", "kind": "string", "pattern": "^[a-z0-9-]+$", "default": "edge01"}]


@pytest.fixture(autouse=True)
def _learnt() -> Iterator[chart_fastpath.Learnt]:
    """This test's own memory of chart URLs, as a new process has."""
    learnt = chart_fastpath.Learnt()
    original, chart_fastpath.LEARNT = chart_fastpath.LEARNT, learnt
    yield learnt
    chart_fastpath.LEARNT = original


@pytest.fixture
def fast(django_app: CountingDjango) -> FastImages:
    return FastImages(django_app)


def chart_make(slug: str = "edge-traffic", **fields: Any) -> Chart:
    query = unique_query(slug, device="{{device}}")
    del query["imageType"]
    return Chart.objects.create(
        slug=slug, title=slug, query=query, max_age=MAX_AGE, params=PARAMS, **fields
    )


def run_in_flight() -> None:
    for fetch_id in Fetch.objects.filter(state__in=IN_FLIGHT).values_list("pk", flat=True):
        fetching.fetch_run(fetch_id=fetch_id)


@pytest.fixture
def rendered(fetch_chart: Any) -> Chart:
    """A chart whose png (default values) was rendered by its worker."""
    chart = chart_make()
    with pytest.raises(FetchStillPending):
        charts.chart_image_get(slug=chart.slug, image_type="png", given={}, wait=0)
    run_in_flight()
    return chart


def test_a_fresh_chart_image_is_answered_without_django_as_django_answers_it(
    fast, django_app, rendered, _frozen
):
    # The first view in a process is Django's: it tells the fast path what the URL is.
    status, django_headers, django_body = call(fast, "/charts/edge-traffic.png")
    assert (status, django_app.calls) == (200, 1)
    _frozen.shift(7)
    # The proxy's request id, so that both answers carry the same one.
    status, headers, body = call(fast, "/charts/edge-traffic.png", HTTP_X_REQUEST_ID="r-1")
    assert (status, django_app.calls, body) == (200, 1, django_body)
    _, django_headers, _ = call(django_app, "/charts/edge-traffic.png", HTTP_X_REQUEST_ID="r-1")
    django_headers.pop("Allow")  # DRF's, on every answer of its views
    assert headers == django_headers
    assert headers["Age"] == "7"
    assert headers["Cache-Control"].startswith(f"public, max-age={MAX_AGE - 7},")


def test_head_and_other_formats_are_answered_as_django_answers_them(
    fast, django_app, fetch_chart, settings
):
    chart_make()
    for ext in ("svg", "pdf"):
        with pytest.raises(FetchStillPending):
            charts.chart_image_get(slug="edge-traffic", image_type=ext, given={}, wait=0)
    run_in_flight()
    for ext in ("svg", "pdf"):
        for method in ("GET", "HEAD"):
            path = f"/charts/edge-traffic.{ext}"
            _, django_headers, django_body = call(django_app, path, method, HTTP_X_REQUEST_ID="r")
            calls = django_app.calls
            status, headers, body = call(fast, path, method, HTTP_X_REQUEST_ID="r")
            django_headers.pop("Allow")
            assert (status, django_app.calls) == (200, calls)
            assert (headers, body) == (django_headers, django_body)


def test_parameter_values_are_learnt_one_set_at_a_time(fast, django_app, rendered):
    call(fast, "/charts/edge-traffic.png")
    assert call(fast, "/charts/edge-traffic.png")[0] == 200
    assert django_app.calls == 1
    # The same image by its default given out loud: Django's first, then the fast path's.
    assert call(fast, "/charts/edge-traffic.png?device=edge01")[0] == 200
    assert call(fast, "/charts/edge-traffic.png?device=edge01")[0] == 200
    assert django_app.calls == 2
    # Bad values, names given twice, and wait= are Django's, which refuses them.
    for query in ("device=EDGE%20", "device=edge01&device=edge01", "wait=x", "color=red"):
        assert call(fast, f"/charts/edge-traffic.png?{query}")[0] == 400, query
    assert django_app.calls == 6


@pytest.mark.parametrize(
    "change",
    [
        lambda chart: chart_definitions.chart_save(
            slug=chart.slug, title="t", query=chart.query, max_age=5, params=PARAMS
        ),
        lambda chart: Chart.objects.filter(pk=chart.pk).first().save(),  # type: ignore[union-attr]
        lambda chart: chart_definitions.chart_delete(slug=chart.slug),
        lambda chart: charts.chart_purge(chart=chart),
    ],
    ids=["saved", "saved-by-the-orm", "deleted", "purged"],
)
def test_a_changed_deleted_or_purged_chart_is_never_answered_from_what_was_learnt(
    fast, django_app, rendered, change
):
    call(fast, "/charts/edge-traffic.png")
    assert call(fast, "/charts/edge-traffic.png")[0] == 200
    assert django_app.calls == 1
    change(rendered)
    environ = RequestFactory().get("/charts/edge-traffic.png").environ
    assert fast.charts.answer(environ) is None
    if Chart.objects.filter(max_age=5).exists():
        status, headers, _ = call(fast, "/charts/edge-traffic.png")
        assert (status, django_app.calls) == (200, 2)
        assert headers["Cache-Control"].startswith("public, max-age=5,")
    elif not Chart.objects.exists():
        assert call(fast, "/charts/edge-traffic.png")[0] == 404


def test_an_edited_query_is_asked_of_django_not_answered_with_the_old_image(
    fast, django_app, rendered
):
    call(fast, "/charts/edge-traffic.png")
    query = {**rendered.query, "lookback_seconds": 7200}
    chart_definitions.chart_save(
        slug=rendered.slug, title="t", query=query, max_age=MAX_AGE, params=PARAMS
    )
    assert call(fast, "/charts/edge-traffic.png?wait=0")[0] == 202
    assert django_app.calls == 2


def test_an_image_past_its_max_age_is_djangos_which_starts_its_refresh(
    fast, django_app, rendered, _frozen
):
    call(fast, "/charts/edge-traffic.png")
    _frozen.shift(MAX_AGE)
    status, headers, _ = call(fast, "/charts/edge-traffic.png")
    assert (status, django_app.calls, headers["Age"]) == (200, 2, str(MAX_AGE))
    assert Fetch.objects.filter(state__in=IN_FLIGHT).count() == 1
    # While the refresh is in flight, the fast path answers the same image as
    # Django did, for STALE_RECHECK; then Django looks again.
    _frozen.shift(1)
    status, headers, _ = call(fast, "/charts/edge-traffic.png", HTTP_X_REQUEST_ID="r-1")
    assert (status, django_app.calls, headers["Age"]) == (200, 2, str(MAX_AGE + 1))
    _, django_headers, _ = call(django_app, "/charts/edge-traffic.png", HTTP_X_REQUEST_ID="r-1")
    django_headers.pop("Allow")
    assert headers == django_headers
    _frozen.shift(chart_fastpath.STALE_RECHECK)
    calls = django_app.calls
    call(fast, "/charts/edge-traffic.png")
    assert django_app.calls == calls + 1
    assert Fetch.objects.filter(state__in=IN_FLIGHT).count() == 1
    # The new image is the fast path's again, at once (the worker links it).
    run_in_flight()
    calls = django_app.calls
    status, headers, _ = call(fast, "/charts/edge-traffic.png")
    assert (status, django_app.calls, headers["Age"]) == (200, calls, "0")


def test_while_kentik_is_paused_the_fast_path_says_so_as_django_does(
    fast, django_app, rendered, _frozen
):
    call(fast, "/charts/edge-traffic.png")
    _frozen.shift(MAX_AGE)
    shield.pause(reason="503", retry_after=30)
    status, headers, _ = call(fast, "/charts/edge-traffic.png")
    assert (status, django_app.calls, headers["X-Image-Stale"]) == (200, 2, "paused")
    _frozen.shift(1)
    status, headers, _ = call(fast, "/charts/edge-traffic.png", HTTP_X_REQUEST_ID="r-1")
    assert (status, django_app.calls) == (200, 2)
    _, django_headers, _ = call(django_app, "/charts/edge-traffic.png", HTTP_X_REQUEST_ID="r-1")
    django_headers.pop("Allow")
    assert headers == django_headers
    assert (headers["X-Image-Stale"], headers["Cache-Control"]) == ("paused", "no-cache")
    # Kentik is back and the refresh lands: a fresh image, and no stale header.
    shield.resume()
    run_in_flight()
    status, headers, _ = call(fast, "/charts/edge-traffic.png")
    assert (status, headers["Age"], "X-Image-Stale" in headers) == (200, "0", False)


def test_signed_urls_are_checked_by_the_fast_path_as_by_django(
    django_app, rendered, settings, _frozen
):
    keys = [b"new-key", b"old-key"]
    settings.CHART_URL_KEYS = keys
    fast = FastImages(django_app)
    path = "/charts/edge-traffic.png"

    def signed(key: bytes, expires: int | None = None, **params: str) -> str:
        given = signing.url_params_sign(keys=[key], path=path, params=params, expires=expires)
        return f"{path}?{urlencode(given)}"

    good = signed(b"old-key", device="edge01")
    assert call(fast, good)[0] == 200  # Django's, learnt
    assert call(fast, good)[0] == 200
    assert django_app.calls == 1
    tampered = good.replace("edge01", "edge02")
    expiring = signed(b"new-key", expires=int(time.time()) + 10)
    refused = [path, tampered, signed(b"other-key"), expiring]
    for url in refused[:3]:
        status, _, body = call(fast, url)
        assert (status, b"signature" in body or b"signed" in body) == (403, True), url
    assert django_app.calls == 4
    assert call(fast, expiring)[0] == 200  # Django's
    assert call(fast, expiring)[0] == 200  # the fast path's
    assert django_app.calls == 5
    _frozen.shift(10)
    assert call(fast, expiring)[0] == 403
    assert django_app.calls == 6


def test_fast_path_views_keep_a_chart_warm_and_an_unwatched_one_costs_nothing(
    fast, django_app, rendered, settings, _frozen
):
    settings.CHART_KEEP_WARM = 600
    call(fast, "/charts/edge-traffic.png")
    charts.VIEWS.flush()
    ChartImage.objects.update(viewed_at=None)
    ChartActivity.objects.all().delete()
    _frozen.shift(10)
    for _ in range(3):
        assert call(fast, "/charts/edge-traffic.png")[0] == 200
    assert django_app.calls == 1
    charts.VIEWS.flush()
    assert ChartImage.objects.get().viewed_at == NOW + timedelta(seconds=10)
    assert ChartActivity.objects.get().views == 3
    # Watched: refreshed ahead of its max_age.
    _frozen.shift(MAX_AGE - 10 - 1)
    assert charts.chart_images_keep_warm() == 1
    run_in_flight()
    # Nobody looks any more: no refresh, and nothing written by the fast path.
    _frozen.shift(settings.CHART_KEEP_WARM + MAX_AGE)
    with CaptureQueriesContext(connection) as queries:
        charts.VIEWS.flush()
    assert len(queries) == 0
    assert charts.chart_images_keep_warm() == 0
    assert Fetch.objects.filter(state__in=IN_FLIGHT).count() == 0
