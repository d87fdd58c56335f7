"""Entries and fetches in the admin show a human label of their query and the
saved chart it belongs to, escaped, in one query per page whatever the rows."""

import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest
import time_machine
from django.contrib import admin
from django.urls import include, path, reverse

from imagecache.models import Chart, ChartImage, Entry
from tests.admin.test_admin import ENTRIES, FETCHES, query, ready_entry
from tests.harness.data import NOW

pytestmark = pytest.mark.django_db

HOSTILE = "<script>alert(1)</script>"


@pytest.fixture(autouse=True)
def clock() -> Iterator[Any]:
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def chart_admin(settings: Any) -> Iterator[None]:
    """Chart registered in the admin (as the charts' admin does), with the URLs rebuilt."""
    registered = admin.site.is_registered(Chart)
    if not registered:
        admin.site.register(Chart)
    urls = types.ModuleType("tests_admin_labels_urls")
    urls.urlpatterns = [  # type: ignore[attr-defined]
        path("admin/", admin.site.urls),
        path("", include("imagecache.api.urls")),
    ]
    sys.modules[urls.__name__] = urls
    settings.ROOT_URLCONF = urls.__name__
    yield
    if not registered:
        admin.site.unregister(Chart)
    del sys.modules[urls.__name__]


@pytest.fixture
def no_chart_admin() -> Iterator[None]:
    registered = admin.site.is_registered(Chart)
    if registered:
        admin.site.unregister(Chart)
    yield
    if registered:
        admin.site.register(Chart)


def labelled_entry(fields: dict[str, Any], slug: str | None = None) -> Entry:
    """A ready entry of a query with `fields`, and a chart `slug` it belongs to."""
    api_query = query(f"labels-{slug}-{sorted(fields.items())}")
    api_query["queries"] = [{"bucket": "Left +Y Axis", "query": fields}]
    entry = ready_entry(api_query)
    if slug is not None:
        chart = Chart.objects.create(slug=slug, title=slug, query={})
        ChartImage.objects.create(chart=chart, image_type="png", query_hash=entry.fetch.query_hash)
    return entry


@pytest.mark.parametrize("page", [ENTRIES, FETCHES])
def test_lists_show_the_label_and_the_chart_as_text(
    admin_client, fetch_chart, no_chart_admin, page
):
    metric = {"metric": "bytes", "dimension": ["i_device_name"], "lookback_seconds": 3600}
    labelled_entry(metric, slug="edge-traffic")
    labelled_entry({"query_title": "Peering by site", "metric": "bytes"})

    content = admin_client.get(page).content.decode()

    assert "bytes by i_device_name over 1 h" in content
    assert "Peering by site" in content
    assert '<td class="field-chart">edge-traffic</td>' in content


@pytest.mark.parametrize("page", [ENTRIES, FETCHES])
def test_the_chart_links_to_its_admin_page_when_registered(
    admin_client, fetch_chart, chart_admin, page
):
    labelled_entry({"metric": "bytes"}, slug="edge-traffic")
    chart = Chart.objects.get()

    content = admin_client.get(reverse(f"admin:imagecache_{page.split('/')[-2]}_changelist"))

    url = reverse("admin:imagecache_chart_change", args=[chart.pk])
    assert f'<a href="{url}">edge-traffic</a>' in content.content.decode()


@pytest.mark.parametrize("page", [ENTRIES, FETCHES])
def test_labels_and_slugs_are_escaped(admin_client, fetch_chart, no_chart_admin, page):
    labelled_entry({"query_title": HOSTILE, "metric": "bytes"}, slug=HOSTILE)

    content = admin_client.get(page).content.decode()

    assert HOSTILE not in content
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in content


def test_change_pages_show_the_label_and_the_chart(admin_client, fetch_chart, no_chart_admin):
    entry = labelled_entry({"query_title": "Edge traffic"}, slug="edge-traffic")

    for url in (
        reverse("admin:imagecache_entry_change", args=[entry.pk]),
        reverse("admin:imagecache_fetch_change", args=[entry.fetch_id]),
    ):
        content = admin_client.get(url).content.decode()
        assert '<div class="readonly">Edge traffic</div>' in content
        assert '<div class="readonly">edge-traffic</div>' in content


@pytest.mark.parametrize("page", [ENTRIES, FETCHES])
def test_queries_per_page_do_not_grow_with_rows(
    admin_client, fetch_chart, django_assert_max_num_queries, no_chart_admin, page
):
    labelled_entry({"metric": "bytes", "dimension": ["n0"]}, slug="chart-0")
    with django_assert_max_num_queries(100) as one:
        admin_client.get(page)
    for n in range(1, 6):
        labelled_entry({"metric": "bytes", "dimension": [f"n{n}"]}, slug=f"chart-{n}")

    with django_assert_max_num_queries(len(one.captured_queries)):
        content = admin_client.get(page).content.decode()

    assert all(f"chart-{n}" in content and f"bytes by n{n}" in content for n in range(6))
