"""`GET|HEAD /charts/{slug}.{ext}` as browsers, CDNs and wikis see it: the
image and its caching headers, 304, parameters from the query string,
signed URLs, and `POST /requests` with ADHOC_QUERIES off."""

# ruff: noqa: F811 - the tests take the fixtures imported below by their names

from typing import Any
from unittest import mock
from urllib.parse import urlencode

import pytest
from django.test import Client

from imagecache.media import IMAGE_CSP
from imagecache.models import Chart, Fetch
from imagecache.services import charts
from imagecache.signing import url_params_sign
from tests.harness.api import Api, body_of
from tests.harness.data import NOW, PNG, QUERY, unique_query

# The frozen clock, and Django's view counts of each test alone.
from tests.services.test_charts import _frozen, _views  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)

MAX_AGE = 60
KEYS = [b"new-key-0123456789", b"old-key-0123456789"]
PATH = "/charts/per-device.png"


@pytest.fixture
def api(client: Client, settings: Any) -> Api:
    return Api(client, settings.KT_AUTH_TOKEN)


@pytest.fixture
def chart() -> Chart:
    query = unique_query("per-device", device="{{device}}")
    del query["imageType"]
    params = [{"name": "device", "kind": "string", "pattern": "[a-z0-9]+", "default": "edge01"}]
    return Chart.objects.create(
        slug="per-device", title="Per device", query=query, max_age=MAX_AGE, params=params
    )


def test_a_chart_url_answers_the_image_with_its_caching_headers(api, chart, fetch_chart, _frozen):
    first = api.get(PATH)
    assert first.status_code == 200, body_of(first)
    assert body_of(first) == PNG
    _frozen.shift(20)

    response = api.get(PATH)

    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["Content-Security-Policy"] == IMAGE_CSP
    assert response["Age"] == "20"
    assert response["Cache-Control"] == (
        f"public, max-age={MAX_AGE - 20}, stale-while-revalidate={MAX_AGE}, stale-if-error=3600"
    )
    fetch = Fetch.objects.get()
    assert response["ETag"] == f'"{fetch.content_hash}"'
    assert response["Last-Modified"] == "Sat, 28 Nov 2026 12:00:00 GMT"
    assert 'filename="per-device.png"' in response["Content-Disposition"]
    assert fetch_chart.call_count == 1


def test_a_chart_past_max_age_says_max_age_0_and_its_age(api, chart, fetch_chart, _frozen):
    api.get(PATH)
    _frozen.shift(MAX_AGE + 5)
    response = api.get(PATH)
    assert response.status_code == 200
    assert response["Age"] == str(MAX_AGE + 5)
    assert response["Cache-Control"].startswith("public, max-age=0,")


@pytest.mark.parametrize(
    "header", ["If-None-Match", "If-Modified-Since"], ids=["etag", "modified-since"]
)
def test_a_conditional_request_of_the_same_image_is_304(api, chart, fetch_chart, header):
    first = api.get(PATH)
    validator = first["ETag"] if header == "If-None-Match" else first["Last-Modified"]
    meta = "HTTP_" + header.upper().replace("-", "_")

    response = api.get(PATH, **{meta: validator})

    assert response.status_code == 304
    assert response["ETag"] == first["ETag"]
    assert response["Cache-Control"].startswith("public, max-age=")
    assert body_of(response) == b""


def test_head_answers_the_headers_without_the_body(client, chart, fetch_chart):
    client.get(PATH)
    response = client.head(PATH)
    assert response.status_code == 200
    assert response["Content-Length"] == str(len(PNG))
    assert body_of(response) == b""


def test_wait_0_on_a_chart_never_rendered_is_202_json(api, chart):
    with mock.patch.object(charts.entries.queue, "async_task", autospec=True):
        response = api.get(PATH + "?wait=0")
    assert response.status_code == 202
    assert response.json()["state"] == "pending"
    assert response["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("device=a&device=b", "device"),
        ("site=x", "site"),
        ("device=" + "%22%7D", "device"),
        ("wait=soon", "wait"),
    ],
    ids=["duplicate", "undeclared", "does-not-fit", "bad-wait"],
)
def test_a_bad_query_string_is_400_json_naming_it_with_no_kentik_call(
    api, chart, fetch_chart, query, field
):
    response = api.get(f"{PATH}?{query}")
    assert response.status_code == 400, body_of(response)
    body = response.json()
    assert body.get("field") == field or field in body.get("fields", {})
    fetch_chart.assert_not_called()


def test_an_unknown_chart_is_404_json(api):
    response = api.get("/charts/no-such.png")
    assert response.status_code == 404
    assert response.json()["status"] == 404


@pytest.mark.parametrize("path", ["/charts/per-device.gif", "/charts/Per-Device.png"])
def test_an_unknown_format_or_a_bad_slug_is_404_json(api, chart, path):
    assert api.get(path).status_code == 404


def signed(params: dict[str, str], *, key: bytes = KEYS[0], expires: int | None = None) -> str:
    signed_params = url_params_sign(keys=[key], path=PATH, params=params, expires=expires)
    return f"{PATH}?{urlencode(signed_params)}"


def test_a_url_signed_with_any_current_key_is_served(api, chart, fetch_chart, settings):
    settings.CHART_URL_KEYS = KEYS
    assert api.get(signed({"device": "edge02"})).status_code == 200
    # Signed with the old key, still listed: rotation.
    assert api.get(signed({"device": "edge02"}, key=KEYS[1])).status_code == 200


@pytest.mark.parametrize("case", ["unsigned", "unknown-key", "tampered", "expired", "sig-twice"])
def test_a_url_not_rightly_signed_is_403_json_with_no_kentik_call(
    api, chart, fetch_chart, settings, case
):
    settings.CHART_URL_KEYS = KEYS
    url = {
        "unsigned": f"{PATH}?device=edge02",
        "unknown-key": signed({"device": "edge02"}, key=b"retired-key-0123456"),
        "tampered": signed({"device": "edge02"}).replace("edge02", "edge03"),
        "expired": signed({"device": "edge02"}, expires=int(NOW.timestamp())),
        "sig-twice": signed({"device": "edge02"}) + "&sig=x",
    }[case]
    response = api.get(url)
    assert response.status_code == (400 if case == "sig-twice" else 403), body_of(response)
    assert response["Content-Type"] == "application/json"
    assert not Fetch.objects.exists()
    fetch_chart.assert_not_called()


def test_a_signed_url_is_served_until_it_expires(api, chart, fetch_chart, settings, _frozen):
    settings.CHART_URL_KEYS = KEYS
    url = signed({"device": "edge02"}, expires=int(NOW.timestamp()) + 60)
    assert api.get(url).status_code == 200
    _frozen.shift(60)
    assert api.get(url).status_code == 403


def test_with_adhoc_queries_off_a_post_is_403_json_and_charts_are_served(
    api, chart, fetch_chart, settings
):
    settings.ADHOC_QUERIES = False
    response = api.post("/requests", {"api_query": QUERY})
    assert response.status_code == 403
    assert "only saved charts" in response.json()["error"]
    assert not Fetch.objects.exists()
    assert api.get(PATH).status_code == 200
