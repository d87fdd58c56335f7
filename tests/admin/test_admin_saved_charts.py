"""The admin's saved charts (imagecache.admin.saved_charts): the list with a
thumbnail, the last render, the last day's views and Kentik calls and the
state; create and edit checked by the service; delete; render now; the
actions refresh and purge."""

import json
from datetime import timedelta
from typing import Any
from unittest import mock
from urllib.parse import parse_qsl, urlsplit

import pytest
import time_machine
from django.test import Client
from django.urls import reverse
from django.utils.html import escape

from imagecache import signing
from imagecache.errors import ChartInvalid
from imagecache.models import Chart, ChartActivity, ChartImage, Fetch, FetchState
from imagecache.services import chart_definitions
from tests.harness.data import NOW

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("frozen")]

KEYS = [b"the newest key, sixteen+"]
QUERY = {"queries": [{"query": {"metric": "bytes", "device_name": "{{device}}"}}]}
PARAMS = [{"name": "device", "kind": "string", "pattern": "[a-z0-9]+", "default": "edge01"}]
LIST = "/admin/imagecache/chart/"


@pytest.fixture
def frozen(settings: Any) -> Any:
    settings.CHART_URL_KEYS = []
    settings.PUBLIC_URL = "https://cache.example.com"
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def edge() -> Chart:
    return chart_definitions.chart_save(
        slug="edge-traffic", title="Edge <b>traffic</b>", query=QUERY, params=PARAMS
    )[0]


def test_the_list_shows_the_last_days_views_and_calls_the_last_render_and_state(
    admin_client: Client, edge: Chart
) -> None:
    hour = NOW.replace(minute=0)
    for ago, views, refreshes in [(0, 5, 1), (23, 7, 2), (25, 100, 100)]:
        ChartActivity.objects.create(
            chart=edge, hour=hour - timedelta(hours=ago), views=views, refreshes=refreshes
        )
    ready = Fetch.objects.create(
        query_hash="a" * 64,
        query_json="{}",
        state=FetchState.READY,
        created_at=NOW,
        finished_at=NOW - timedelta(minutes=3),
    )
    ChartImage.objects.create(chart=edge, image_type="png", query_hash="a" * 64, fetch=ready)
    Fetch.objects.create(
        query_hash="a" * 64, query_json="{}", state=FetchState.FAILED, created_at=NOW
    )
    chart_definitions.chart_save(slug="quiet", title="Quiet", query={"q": 1})
    response = admin_client.get(LIST)
    assert response.status_code == 200
    rows = {row.slug: row for row in response.context["cl"].result_list}
    edge_row, quiet = rows["edge-traffic"], rows["quiet"]
    assert (edge_row.views_day, edge_row.refreshes_day) == (12, 3)
    assert (quiet.views_day, quiet.refreshes_day, quiet.last_render) == (0, 0, None)
    assert edge_row.last_render == NOW - timedelta(minutes=3)
    page = response.content.decode()
    assert "2026-11-28 11:57:00" in page
    assert "failed" in page and "never rendered" in page
    assert 'src="/charts/edge-traffic.png"' in page
    assert escape("Edge <b>traffic</b>") in page


def test_the_thumbnail_and_urls_are_signed_when_signing_is_on(
    admin_client: Client, edge: Chart, settings: Any
) -> None:
    settings.CHART_URL_KEYS = KEYS
    page = admin_client.get(LIST).content.decode()
    start = page.index('src="/charts/edge-traffic.png?') + len('src="')
    src = page[start : page.index('"', start)].replace("&amp;", "&")
    params = dict(parse_qsl(urlsplit(src).query))
    signing.url_verify(keys=KEYS, path=urlsplit(src).path, params=params, now=NOW.timestamp())
    change = admin_client.get(reverse("admin:imagecache_chart_change", args=[edge.pk]))
    assert "https://cache.example.com/charts/edge-traffic.svg?sig=" in change.content.decode()


def form(**fields: Any) -> dict[str, Any]:
    return {
        "slug": "new-chart",
        "title": "New chart",
        "max_age": "90",
        "query": json.dumps(QUERY),
        "params": json.dumps(PARAMS),
        **fields,
    }


def test_create_goes_through_the_service(admin_client: Client) -> None:
    response = admin_client.post(reverse("admin:imagecache_chart_add"), form())
    assert response.status_code == 302, response.content.decode()[:2000]
    chart = Chart.objects.get(slug="new-chart")
    assert (chart.max_age, chart.query, chart.params, chart.updated_at) == (90, QUERY, PARAMS, NOW)


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"params": json.dumps([{**PARAMS[0], "pattern": "("}])}, "params", "params[0].pattern"),
        ({"query": json.dumps({"q": "{{site}}"})}, "query", "site"),
        ({"query": "{not json"}, "query", "Enter a valid JSON"),
        ({"slug": "Bad Slug"}, "slug", "lower-case letters"),
    ],
)
def test_a_bad_definition_is_shown_at_its_field(
    admin_client: Client, fields: dict[str, Any], field: str, message: str
) -> None:
    response = admin_client.post(reverse("admin:imagecache_chart_add"), form(**fields))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert message in " ".join(errors[field])
    assert not Chart.objects.exists()


def test_edit_keeps_the_slug_and_changes_the_rest(admin_client: Client, edge: Chart) -> None:
    url = reverse("admin:imagecache_chart_change", args=[edge.pk])
    response = admin_client.post(url, form(slug="renamed", title="Edge, edited"))
    assert response.status_code == 302
    assert list(Chart.objects.values_list("slug", "title", "max_age")) == [
        ("edge-traffic", "Edge, edited", 90)
    ]


def test_delete_goes_through_the_service(admin_client: Client, edge: Chart) -> None:
    url = reverse("admin:imagecache_chart_delete", args=[edge.pk])
    assert admin_client.post(url, {"post": "yes"}).status_code == 302
    assert not Chart.objects.exists()


def test_refresh_now_and_render_now_call_chart_refresh(admin_client: Client, edge: Chart) -> None:
    chart_definitions.chart_save(
        slug="needs-site",
        title="Needs a site",
        query={"q": "{{site}}"},
        params=[{"name": "site", "kind": "string", "pattern": "[a-z]+"}],
    )
    with mock.patch("imagecache.services.charts.chart_refresh", autospec=True) as refresh:
        response = admin_client.post(
            LIST,
            {
                "action": "refresh_now",
                "_selected_action": list(Chart.objects.values_list("pk", flat=True)),
            },
            follow=True,
        )
        assert [c.kwargs["chart"].slug for c in refresh.call_args_list] == [
            "edge-traffic",
            "needs-site",
        ]
    # The real one refuses a chart whose parameter has no default.
    with mock.patch("imagecache.services.charts.chart_refresh", autospec=True) as refresh:
        refresh.side_effect = [mock.DEFAULT, ChartInvalid("site", "is required")]
        response = admin_client.post(
            LIST,
            {
                "action": "refresh_now",
                "_selected_action": list(Chart.objects.values_list("pk", flat=True)),
            },
            follow=True,
        )
    shown = [str(m) for m in response.context["messages"]]
    assert shown == [
        "Rendering 1 chart now (png, default values): the image shows once Kentik answers.",
        "Not rendered: needs-site (site: is required)",
    ]
    with mock.patch("imagecache.services.charts.chart_refresh", autospec=True) as refresh:
        render = reverse("admin:imagecache_chart_render", args=[edge.pk])
        assert admin_client.get(render).status_code == 405
        response = admin_client.post(render)
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:imagecache_chart_change", args=[edge.pk])
    refresh.assert_called_once_with(chart=edge)
