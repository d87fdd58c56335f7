"""The charts' JSON API and page: the list (signed or not), PUT and DELETE
for tokens with the admin's permissions (401, 403 otherwise, and 400 naming
the field), and the chart page (HTML with a hostile title escaped, JSON,
a signature or a staff session when signing is on)."""

import html
import json
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import time_machine
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils.html import escape
from rest_framework.authtoken.models import Token

from imagecache import chart_urls, signing
from imagecache.hashing import canonical_json
from imagecache.models import Chart, ChartImage, Fetch, FetchState, PortalLink
from imagecache.services import chart_definitions
from tests.harness.data import NOW

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("frozen")]

KEYS = [b"the newest key, sixteen+", b"the older key, sixteen++"]
HOSTILE = '</title><script>alert("x")</script> & [link](javascript:1)'
QUERY = {"queries": [{"query": {"metric": "bytes", "device_name": "{{device}}"}}]}
PARAMS = [{"name": "device", "kind": "string", "pattern": "[a-z0-9]+", "default": "edge01"}]
BODY = {"title": "Edge traffic", "query": QUERY, "max_age": 120, "params": PARAMS}


@pytest.fixture
def frozen() -> Any:
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def public_url(settings: Any) -> str:
    settings.PUBLIC_URL = "https://cache.example.com"
    settings.CHART_URL_KEYS = []
    return str(settings.PUBLIC_URL)


@pytest.fixture
def edge(public_url: str) -> Chart:
    return chart_definitions.chart_save(slug="edge-traffic", **{**BODY, "title": HOSTILE})[0]


def token_client(*permissions: str) -> Client:
    user = User.objects.create_user("tool-" + "-".join(permissions))
    user.user_permissions.set(Permission.objects.filter(codename__in=permissions))
    token = Token.objects.create(user=user)
    return Client(HTTP_AUTHORIZATION=f"Token {token.key}")


def put(client: Client, slug: str, body: Any) -> Any:
    return client.put(f"/charts/{slug}", body, content_type="application/json")


def test_the_paths_built_are_the_routes_paths() -> None:
    assert chart_urls.chart_path("edge-traffic") == reverse("chart-page", args=["edge-traffic"])
    assert chart_urls.LIST_PATH == reverse("chart-list")


# --- PUT and DELETE ---------------------------------------------------------


def test_put_without_a_token_is_401_and_with_a_wrong_one_too(public_url: str) -> None:
    response = put(Client(), "edge-traffic", BODY)
    assert response.status_code == 401
    assert response.json() == {
        "error": "Authentication credentials were not provided.",
        "status": 401,
    }
    assert response["WWW-Authenticate"] == "Token"
    wrong = Client(HTTP_AUTHORIZATION="Token not-a-token")
    assert put(wrong, "edge-traffic", BODY).json()["status"] == 401
    assert wrong.delete("/charts/edge-traffic").status_code == 401
    assert not Chart.objects.exists()


def test_put_and_delete_without_the_permission_are_403(edge: Chart) -> None:
    viewer = token_client("view_chart")
    response = put(viewer, "edge-traffic", BODY)
    assert (response.status_code, response.json()["status"]) == (403, 403)
    assert viewer.delete("/charts/edge-traffic").status_code == 403
    # Change does not allow delete.
    assert token_client("change_chart").delete("/charts/edge-traffic").status_code == 403
    assert Chart.objects.get().title == HOSTILE


def test_put_creates_then_updates_then_changes_nothing(public_url: str) -> None:
    tool = token_client("change_chart")
    created = put(tool, "edge-traffic", BODY)
    assert created.status_code == 201
    assert created.json()["outcome"] == "created"
    assert created.json()["params"] == PARAMS
    updated = put(tool, "edge-traffic", {**BODY, "slug": "edge-traffic", "max_age": 300})
    assert (updated.status_code, updated.json()["outcome"]) == (200, "updated")
    assert Chart.objects.get().max_age == 300
    again = put(tool, "edge-traffic", {**BODY, "max_age": 300})
    assert again.json()["outcome"] == "unchanged"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**BODY, "max_age": "soon"}, "max_age"),
        ({**BODY, "title": ["a"]}, "title"),
        ({**BODY, "params": [{**PARAMS[0], "pattern": "("}]}, "params[0].pattern"),
        ({**BODY, "colour": "red"}, "colour"),
        ({**BODY, "slug": "another"}, "slug"),
        ({k: v for k, v in BODY.items() if k != "query"}, "query"),
    ],
)
def test_a_bad_body_is_400_naming_the_field(public_url: str, body: Any, field: str) -> None:
    response = put(token_client("change_chart"), "edge-traffic", body)
    assert response.status_code == 400
    answer = response.json()
    assert answer.get("field", next(iter(answer.get("fields", {})), None)) == field
    assert field in answer["error"]
    assert not Chart.objects.exists()


def test_a_body_that_is_not_an_object_is_400(public_url: str) -> None:
    response = put(token_client("change_chart"), "edge-traffic", [1])
    assert response.status_code == 400


def test_delete_removes_the_chart_then_answers_404(edge: Chart) -> None:
    tool = token_client("delete_chart")
    assert tool.delete("/charts/edge-traffic").status_code == 204
    assert not Chart.objects.exists()
    gone = tool.delete("/charts/edge-traffic")
    assert (gone.status_code, gone.json()["error"]) == (404, "No such chart.")


# --- The list ---------------------------------------------------------------


def test_the_list_shows_each_chart_with_its_urls_unsigned(edge: Chart) -> None:
    response = Client().get("/charts/")
    assert response.status_code == 200
    [shown] = response.json()["charts"]
    assert shown["slug"] == "edge-traffic"
    assert shown["page"] == "https://cache.example.com/charts/edge-traffic"
    assert shown["images"] == {
        ext: f"https://cache.example.com/charts/edge-traffic.{ext}"
        for ext in ("png", "jpg", "svg", "pdf")
    }


def test_with_signing_on_the_list_needs_its_signature_or_staff(
    settings: Any, edge: Chart, admin_client: Client
) -> None:
    settings.CHART_URL_KEYS = KEYS
    refused = Client().get("/charts/")
    assert (refused.status_code, refused.json()["status"]) == (403, 403)
    signed = chart_urls.url_make(path="/charts/", absolute=False)
    tampered = signed.replace("sig=", "sig=x")
    assert Client().get(tampered).status_code == 403
    response = Client().get(signed)
    assert response.status_code == 200
    image = response.json()["charts"][0]["images"]["png"]
    params = dict(parse_qsl(urlsplit(image).query))
    signing.url_verify(
        keys=KEYS, path="/charts/edge-traffic.png", params=params, now=NOW.timestamp()
    )
    assert admin_client.get("/charts/").status_code == 200


# --- The page ---------------------------------------------------------------


def test_the_page_escapes_a_hostile_title_everywhere(edge: Chart) -> None:
    response = Client().get("/charts/edge-traffic", {"device": "core7"})
    assert response.status_code == 200
    page = response.content.decode()
    assert "<script>" not in page
    assert escape(HOSTILE) in page
    assert 'src="/charts/edge-traffic.png?device=core7"' in page
    # The embed snippets: each a pasteable text, escaped again inside the page.
    url = "https://cache.example.com/charts/edge-traffic.png?device=core7"
    assert html.escape(f"!{url}!") in page
    assert html.escape(f'<img src="{url}" alt="{html.escape(HOSTILE)}">') in page
    markdown = HOSTILE.replace("[", "\\[").replace("]", "\\]")
    assert html.escape(f"![{markdown}]({url})") in page
    # The form, with the value asked for; no portal link yet.
    assert 'name="device" value="core7"' in page
    assert "Open in Kentik" not in page


def test_the_page_as_json_gives_the_definition_and_each_formats_last_render(
    edge: Chart,
) -> None:
    values_json = canonical_json({"device": "edge01"}).decode()
    ready = Fetch.objects.create(
        query_hash="a" * 64,
        query_json="{}",
        state=FetchState.READY,
        media_type="image/png",
        size=2048,
        created_at=NOW,
        finished_at=NOW,
    )
    ChartImage.objects.create(
        chart=edge, image_type="png", values_json=values_json, query_hash="a" * 64, fetch=ready
    )
    Fetch.objects.create(
        query_hash="a" * 64, query_json="{}", state=FetchState.FETCHING, created_at=NOW
    )
    response = Client().get("/charts/edge-traffic", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    answer = response.json()
    assert (answer["slug"], answer["title"], answer["params"]) == ("edge-traffic", HOSTILE, PARAMS)
    assert answer["values"] == {"device": "edge01"}
    assert answer["renders"]["png"] == {
        "state": "fetching",
        "rendered_at": "2026-11-28T12:00:00Z",
        "size": 2048,
        "media_type": "image/png",
    }
    assert answer["renders"]["svg"]["state"] == "never"
    assert answer["images"]["svg"] == "https://cache.example.com/charts/edge-traffic.svg"


@pytest.mark.parametrize(
    ("query", "status", "field"),
    [
        ("?device=EDGE!", 400, "device"),
        ("?site=x", 400, "site"),
        ("?device=a&device=b", 400, "device"),
    ],
)
def test_the_page_refuses_a_bad_value_naming_it(
    edge: Chart, query: str, status: int, field: str
) -> None:
    response = Client().get(f"/charts/edge-traffic{query}")
    assert (response.status_code, response.json()["field"]) == (status, field)


def test_an_unknown_chart_is_404_json(public_url: str) -> None:
    response = Client().get("/charts/nothing-here")
    assert (response.status_code, response.json()["error"]) == (404, "No such chart.")


def test_with_signing_on_the_page_needs_its_signature_or_staff(
    settings: Any, edge: Chart, admin_client: Client
) -> None:
    settings.CHART_URL_KEYS = KEYS
    assert Client().get("/charts/edge-traffic").status_code == 403
    signed = chart_urls.url_make(
        path="/charts/edge-traffic", params={"device": "core7"}, absolute=False
    )
    response = Client().get(signed)
    assert response.status_code == 200
    page = response.content.decode()
    # The image and every snippet signed; no form: its values would not be signed.
    image = chart_urls.url_make(path="/charts/edge-traffic.png", params={"device": "core7"})
    assert html.escape(f"!{image}!") in page
    assert "sig=" in image
    assert 'id="chart-params"' not in page
    assert Client().get(signed.replace("core7", "core8")).status_code == 403
    expiring = chart_urls.url_make(
        path="/charts/edge-traffic", expires=int(NOW.timestamp()) + 60, absolute=False
    )
    assert Client().get(expiring).status_code == 200
    with time_machine.travel(NOW.replace(minute=1), tick=False):
        assert Client().get(expiring).status_code == 403
    staff = admin_client.get("/charts/edge-traffic")
    assert staff.status_code == 200
    assert 'id="chart-params"' in staff.content.decode()


def test_a_required_parameter_without_value_leaves_the_form_and_no_image(
    public_url: str,
) -> None:
    chart_definitions.chart_save(
        slug="per-site",
        title="Per site",
        query={"q": "{{site}}"},
        params=[{"name": "site", "kind": "choice", "choices": ["ams", "fra"]}],
    )
    page = Client().get("/charts/per-site").content.decode()
    assert 'id="chart-missing"' in page
    assert "<option>ams</option>" in page
    assert "Embed it" not in page


def test_the_page_links_to_kentik_once_kentik_gave_the_querys_link(
    edge: Chart, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks() as asked:
        first = Client().get("/charts/edge-traffic", {"device": "core7"})
    assert "Open in Kentik" not in first.content.decode()
    # One ask, in the background, for the query as filled in (no imageType).
    assert len(asked) == 1
    link = PortalLink.objects.get()
    assert json.loads(link.query_json) == {
        "queries": [{"query": {"metric": "bytes", "device_name": "core7"}}]
    }
    link.url = "https://portal.kentik.com/portal/#Charts/shortUrl/ab&cd"
    link.save(update_fields=["url"])
    with django_capture_on_commit_callbacks() as asked_again:
        page = Client().get("/charts/edge-traffic", {"device": "core7"}).content.decode()
    assert not asked_again
    assert 'href="https://portal.kentik.com/portal/#Charts/shortUrl/ab&amp;cd"' in page
