"""`GET /image/{id}` as HTTP caches and polling clients see it: `?wait`, the
202 of `wait=0`, validators and freshness, conditional requests, HEAD,
`Cache-Control: no-store` on every other answer, and X-Accel-Redirect.

Fetches run as in tests/api/test_api.py: django-q2 in sync mode, against a real
KentikSimulator on loopback.
"""

import base64
import contextlib
import hashlib
import json
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
import time_machine
from django.db import transaction
from django.http import HttpResponseBase
from django.test import Client

from imagecache.media import IMAGE_CSP
from imagecache.models import Entry, Fetch, FetchState
from imagecache.services import claims
from imagecache.simulator.render import render_chart
from imagecache.simulator.server import KentikSimulator
from imagecache.waiting.waiter import FetchWaiter
from tests.harness.api import Api, body_of, chart_query, json_error, pending
from tests.harness.data import NOW
from tests.harness.profiles import start

pytestmark = pytest.mark.django_db

PREFIX = "/protected-images/"
# NOW is a Saturday.
NOW_HTTP = "Sat, 28 Nov 2026 12:00:00 GMT"
CACHING_HEADERS = ("Content-Type", "Content-Length", "ETag", "Last-Modified", "Cache-Control")


class HttpApi(Api):
    def head(self, path: str, **extra: Any) -> HttpResponseBase:
        return self._checked(self._client.head(path, **extra))


@pytest.fixture
def api(client: Client, settings: Any) -> HttpApi:
    return HttpApi(client, settings.KT_AUTH_TOKEN)


@pytest.fixture
def fetched(api: HttpApi, sim: KentikSimulator, django_capture_on_commit_callbacks: Any) -> Any:
    """POST a request and run its fetch; the entry id."""

    def post(api_query: dict[str, Any], **fields: Any) -> str:
        with django_capture_on_commit_callbacks(execute=True):
            response = api.post("/requests", {"api_query": api_query, **fields})
        assert response.status_code == 200, body_of(response)
        return str(json.loads(body_of(response))["id"])

    return post


@pytest.fixture
def ready(fetched: Any) -> Iterator[str]:
    """An image fetched at NOW that expires 600 s later. The clock stays at NOW
    for the whole test (a test may travel further from there)."""
    with time_machine.travel(NOW, tick=False):
        yield str(fetched(chart_query(), ttl=600))


def etag_of(api_query: dict[str, Any]) -> str:
    return '"' + hashlib.sha256(render_chart(api_query)[1]).hexdigest() + '"'


def assert_no_store(response: HttpResponseBase) -> None:
    assert response["Cache-Control"] == "no-store"
    assert not response.has_header("ETag")
    assert not response.has_header("Expires")


def claimed_elsewhere(api: Api) -> str:
    """A pending entry whose fetch another worker holds (and never finishes)."""
    with transaction.atomic():
        entry_id = pending(api, chart_query())
        fetch_id = Entry.objects.get(pk=entry_id).fetch_id
        # The task enqueued on commit finds it taken and skips it.
        assert claims.fetch_claim(fetch_id=fetch_id) is not None
    return entry_id


# ------------------------------------------------------------------------------ ?wait


@contextlib.contextmanager
def waits_seen() -> Iterator[list[float]]:
    """The timeouts the request waited on its fetch with (the waits are
    real): what the request asked of the waiter, not how long it took."""
    timeouts: list[float] = []
    real = FetchWaiter.wait_row

    def wait_row(waiter: FetchWaiter, fetch_id: int, timeout: float) -> tuple[bool, Any]:
        timeouts.append(timeout)
        return real(waiter, fetch_id, timeout)

    with mock.patch.object(FetchWaiter, "wait_row", wait_row):
        yield timeouts


def test_wait_0_on_a_pending_image_is_202_with_its_state_and_retry_after(api):
    entry_id = pending(api, chart_query())

    with waits_seen() as waits:
        response = api.get(f"/image/{entry_id}?wait=0")

    assert waits == []
    assert response.status_code == 202
    assert response["Content-Type"] == "application/json"
    assert response["Retry-After"] == "1"
    assert json.loads(body_of(response)) == {
        "id": entry_id,
        "state": "pending",
        "status": 202,
        "retry_after": 1,
    }
    assert_no_store(response)


def test_wait_0_names_the_fetching_state(api):
    entry_id = pending(api, chart_query())
    fetch = Entry.objects.get(pk=entry_id).fetch
    assert claims.fetch_claim(fetch_id=fetch.pk) is not None

    response = api.get(f"/image/{entry_id}?wait=0.0")

    assert response.status_code == 202
    assert json.loads(body_of(response))["state"] == "fetching"


def test_wait_0_on_a_ready_image_is_200_with_the_image(api, fetched):
    query = chart_query()
    entry_id = fetched(query)

    response = api.get(f"/image/{entry_id}?wait=0")

    assert response.status_code == 200
    assert body_of(response) == render_chart(query)[1]


def test_wait_0_on_a_failed_fetch_is_kentiks_error(api, sim, fetched):
    sim.add_rule(status=400, message="Unknown metric: nope")
    entry_id = fetched(chart_query())

    data = json_error(api.get(f"/image/{entry_id}?wait=0"), 400)

    assert data["error"] == "Unknown metric: nope"


@pytest.mark.django_db(transaction=True)
def test_wait_n_caps_the_wait_then_answers_500_with_retry_after(api, settings):
    settings.ENTRY_WAIT_TIMEOUT = 30
    settings.KENTIK_API_TIMEOUT = 0.5
    entry_id = claimed_elsewhere(api)

    with waits_seen() as waits:
        response = api.get(f"/image/{entry_id}?wait=0.3")

    assert waits and all(0 < timeout <= 0.3 for timeout in waits)
    json_error(response, 500)
    assert response["Retry-After"] == "1"
    assert_no_store(response)
    assert Fetch.objects.get().state == FetchState.FETCHING


@pytest.mark.django_db(transaction=True)
def test_wait_longer_than_entry_wait_timeout_is_capped_by_it(api, settings):
    settings.ENTRY_WAIT_TIMEOUT = 0.3
    entry_id = claimed_elsewhere(api)

    with waits_seen() as waits:
        response = api.get(f"/image/{entry_id}?wait=3600")

    assert waits and all(0 < timeout <= 0.3 for timeout in waits)
    json_error(response, 500)


@pytest.mark.parametrize(
    "wait", ["-1", "-0.5", "abc", "nan", "NaN", "inf", "-inf", "Infinity", "1e400", "", "1s"]
)
def test_bad_wait_is_400_naming_wait(api, wait):
    entry_id = pending(api, chart_query())

    response = api.get(f"/image/{entry_id}?wait={wait}")

    data = json_error(response, 400)
    assert list(data["fields"]) == ["wait"]
    assert data["error"].startswith("wait: ")
    assert_no_store(response)


# ------------------------------------------------------------ validators and freshness


def test_ready_image_carries_exact_validators_and_freshness(api, ready):
    with time_machine.travel(NOW.timestamp() + 100.25, tick=False):
        response = api.get(f"/image/{ready}")

    assert response.status_code == 200
    assert response["ETag"] == etag_of(chart_query())
    assert response["Last-Modified"] == NOW_HTTP
    # 499.75 s to the expiry: whole seconds, never past it.
    assert response["Cache-Control"] == "public, max-age=499, immutable"
    assert response["Expires"] == "Sat, 28 Nov 2026 12:10:00 GMT"
    assert response["Content-Length"] == str(len(render_chart(chart_query())[1]))


def test_etag_is_the_sha256_of_the_bytes_served(api, ready):
    response = api.get(f"/image/{ready}")

    assert response["ETag"] == f'"{hashlib.sha256(body_of(response)).hexdigest()}"'
    assert response["ETag"] == f'"{Fetch.objects.get().content_hash}"'


def test_max_age_counts_down_to_the_expiry_of_each_id(api, fetched):
    with time_machine.travel(NOW, tick=False):
        short = fetched(chart_query(), ttl=60)
        long = fetched(chart_query(), ttl=3600)
        assert Entry.objects.get(pk=short).fetch_id == Entry.objects.get(pk=long).fetch_id
    with time_machine.travel(NOW.timestamp() + 59.5, tick=False):
        short_response = api.get(f"/image/{short}")
        long_response = api.get(f"/image/{long}")

    assert short_response["Cache-Control"] == "public, max-age=0, immutable"
    assert short_response["Expires"] == "Sat, 28 Nov 2026 12:01:00 GMT"
    assert long_response["Cache-Control"] == "public, max-age=3540, immutable"
    assert long_response["Expires"] == "Sat, 28 Nov 2026 13:00:00 GMT"
    assert short_response["ETag"] == long_response["ETag"]


# ------------------------------------------------------------------ conditional GETs


@pytest.mark.parametrize(
    "if_none_match",
    [
        "{etag}",
        '"nope", {etag}',
        '"a",{etag},"b"',
        "W/{etag}",
        "*",
    ],
    ids=["exact", "list", "list-no-spaces", "weak-matches-strong", "star"],
)
def test_if_none_match_that_matches_is_304(api, ready, if_none_match):
    etag = etag_of(chart_query())

    with time_machine.travel(NOW.timestamp() + 100, tick=False):
        response = api.get(f"/image/{ready}", HTTP_IF_NONE_MATCH=if_none_match.format(etag=etag))

    assert response.status_code == 304
    assert body_of(response) == b""
    assert response["ETag"] == etag
    assert response["Cache-Control"] == "public, max-age=500, immutable"
    assert response["Expires"] == "Sat, 28 Nov 2026 12:10:00 GMT"
    assert not response.has_header("Content-Type")


@pytest.mark.parametrize(
    "if_none_match",
    ['"nope"', '"nope", W/"other"', "garbage", '"' + "0" * 64 + '"'],
)
def test_if_none_match_that_does_not_match_is_200_with_the_image(api, ready, if_none_match):
    response = api.get(f"/image/{ready}", HTTP_IF_NONE_MATCH=if_none_match)

    assert response.status_code == 200
    assert body_of(response) == render_chart(chart_query())[1]


def test_if_none_match_wins_over_if_modified_since(api, ready):
    response = api.get(
        f"/image/{ready}",
        HTTP_IF_NONE_MATCH='"nope"',
        HTTP_IF_MODIFIED_SINCE="Sat, 28 Nov 2026 13:00:00 GMT",
    )

    assert response.status_code == 200


@pytest.mark.parametrize(
    "since", [NOW_HTTP, "Sat, 28 Nov 2026 12:00:01 GMT", "Saturday, 28-Nov-26 12:00:00 GMT"]
)
def test_if_modified_since_the_fetch_or_later_is_304(api, ready, since):
    response = api.get(f"/image/{ready}", HTTP_IF_MODIFIED_SINCE=since)

    assert response.status_code == 304
    assert body_of(response) == b""
    assert response["ETag"] == etag_of(chart_query())


@pytest.mark.parametrize("since", ["Sat, 28 Nov 2026 11:59:59 GMT", "yesterday", ""])
def test_if_modified_since_before_the_fetch_or_unreadable_is_200(api, ready, since):
    response = api.get(f"/image/{ready}", HTTP_IF_MODIFIED_SINCE=since)

    assert response.status_code == 200
    assert body_of(response) == render_chart(chart_query())[1]


def test_conditional_get_of_a_pending_image_is_not_304(api):
    entry_id = pending(api, chart_query())

    response = api.get(f"/image/{entry_id}?wait=0", HTTP_IF_NONE_MATCH="*")

    assert response.status_code == 202


def test_conditional_get_of_an_expired_id_is_404(api, ready):
    with time_machine.travel(NOW.timestamp() + 600, tick=False):
        response = api.get(f"/image/{ready}", HTTP_IF_NONE_MATCH=etag_of(chart_query()))

    json_error(response, 404)
    assert_no_store(response)


# ----------------------------------------------------------------------------- HEAD


def test_head_has_the_headers_of_get_and_no_body(api, ready):
    with time_machine.travel(NOW.timestamp() + 10, tick=False):
        got = api.get(f"/image/{ready}")
        head = api.head(f"/image/{ready}")

    assert head.status_code == 200
    assert body_of(head) == b""
    assert {h: head[h] for h in CACHING_HEADERS} == {h: got[h] for h in CACHING_HEADERS}
    assert head["Expires"] == got["Expires"]
    assert head["Content-Type"] == "image/png"
    assert head["Content-Length"] == str(len(body_of(got)))


def test_head_honours_conditions_and_errors(api, ready):
    conditional = api.head(f"/image/{ready}", HTTP_IF_NONE_MATCH=etag_of(chart_query()))
    missing = api.head("/image/" + "0" * 64 + "_1795000000.5")

    assert conditional.status_code == 304
    assert missing.status_code == 404
    assert body_of(missing) == b""
    assert_no_store(missing)


def test_head_of_an_image_whose_file_is_gone_is_404(api, ready, settings):
    (settings.CACHE_PATH / Fetch.objects.get().file_name).unlink()

    response = api.head(f"/image/{ready}")

    assert response.status_code == 404
    assert_no_store(response)


def test_head_of_a_pending_image_with_wait_0_is_202(api):
    response = api.head(f"/image/{pending(api, chart_query())}?wait=0")

    assert response.status_code == 202
    assert response["Retry-After"] == "1"
    assert body_of(response) == b""


# ------------------------------------------------------------------------- no-store


@pytest.mark.parametrize(
    ("rule", "status"),
    [
        ({"status": 400, "message": "Unknown metric"}, 400),
        ({"status": 403, "message": "Forbidden"}, 403),
        ({"status": 503, "message": "Down"}, 503),
        ({"hang": True}, 504),
        ({"status": 200, "body": "{}"}, 502),
    ],
    ids=["400", "403", "503", "504", "502"],
)
def test_kentik_errors_are_no_store(api, sim, fetched, settings, rule, status):
    settings.KENTIK_API_TIMEOUT = 0.3
    sim.add_rule(**rule)
    entry_id = fetched(chart_query())

    response = api.get(f"/image/{entry_id}")

    json_error(response, status)
    assert_no_store(response)


# Transactional: the wait lets go of its PostgreSQL connection, as in production.
@pytest.mark.django_db(transaction=True)
def test_a_rate_limit_that_outlasts_the_wait_is_no_store(api, sim, fetched, settings):
    # The fetch stays in line; the client hears Kentik's 429 once its wait runs out.
    settings.KENTIK_SLOT_WAIT = 0.2
    settings.ENTRY_WAIT_TIMEOUT = 0.3
    sim.add_rule(status=429, message="Slow down", retry_after="1")
    entry_id = fetched(chart_query())

    response = api.get(f"/image/{entry_id}")

    json_error(response, 429)
    assert_no_store(response)


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("get", "/image/nope", None, 404),
        ("get", "/image/" + "0" * 64 + "_1795000000.5", None, 404),
        ("get", "/nope", None, 404),
        ("get", "/static/nope.css", None, 404),
        ("get", "/requests", None, 405),
        ("delete", "/image/abc", None, 405),
        ("get", "/info?limit=-1", None, 400),
        ("post", "/requests", "not json", 400),
        ("post", "/requests", {"ttl": 5}, 400),
        ("post", "/requests", {"api_query": {"pad": "x" * (1024 * 1024)}}, 413),
    ],
)
def test_every_api_error_is_no_store(api, method, path, body, status):
    if method == "post":
        response = api.post(path, body)
    else:
        response = getattr(api, method)(path)

    json_error(response, status)
    assert_no_store(response)


def test_successful_answers_other_than_images_say_nothing_about_caching(api):
    assert not api.post("/requests", {"api_query": chart_query()}).has_header("Cache-Control")


# ----------------------------------------------------------------- X-Accel-Redirect


def test_x_accel_redirect_hands_the_file_to_nginx(api, ready, settings):
    settings.X_ACCEL_REDIRECT_PREFIX = PREFIX
    fetch = Fetch.objects.get()

    with time_machine.travel(NOW.timestamp() + 100, tick=False):
        response = api.get(f"/image/{ready}")

    assert response.status_code == 200
    assert body_of(response) == b""
    assert response["X-Accel-Redirect"] == PREFIX + fetch.file_name
    # What nginx's `internal` location (aliased to CACHE_PATH) will send.
    assert (settings.CACHE_PATH / fetch.file_name).read_bytes() == render_chart(chart_query())[1]
    assert response["Content-Type"] == "image/png"
    assert response["ETag"] == etag_of(chart_query())
    assert response["Last-Modified"] == NOW_HTTP
    assert response["Cache-Control"] == "public, max-age=500, immutable"
    assert response["Expires"] == "Sat, 28 Nov 2026 12:10:00 GMT"


def test_x_accel_redirect_off_sends_the_bytes(api, ready, settings):
    settings.X_ACCEL_REDIRECT_PREFIX = ""

    response = api.get(f"/image/{ready}")

    assert body_of(response) == render_chart(chart_query())[1]
    assert not response.has_header("X-Accel-Redirect")


def test_x_accel_redirect_still_answers_conditions_itself(api, ready, settings):
    settings.X_ACCEL_REDIRECT_PREFIX = PREFIX

    response = api.get(f"/image/{ready}", HTTP_IF_NONE_MATCH=etag_of(chart_query()))

    assert response.status_code == 304
    assert not response.has_header("X-Accel-Redirect")


def test_x_accel_redirect_of_a_file_that_is_gone_is_404_json(api, ready, settings):
    settings.X_ACCEL_REDIRECT_PREFIX = PREFIX
    (settings.CACHE_PATH / Fetch.objects.get().file_name).unlink()

    response = api.get(f"/image/{ready}")

    json_error(response, 404)
    assert not response.has_header("X-Accel-Redirect")


def test_x_accel_redirect_is_not_used_for_storage_off_the_file_system(api, fetched, settings):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.InMemoryStorage"},
    }
    settings.X_ACCEL_REDIRECT_PREFIX = PREFIX
    entry_id = fetched(chart_query())

    response = api.get(f"/image/{entry_id}")

    assert body_of(response) == render_chart(chart_query())[1]
    assert not response.has_header("X-Accel-Redirect")
    assert not [path for path in settings.CACHE_PATH.rglob("*") if path.is_file()]


def test_x_accel_redirect_prefix_must_be_a_path():
    result = start("config.settings.local", X_ACCEL_REDIRECT_PREFIX="protected-images")

    assert result.returncode != 0
    assert "X_ACCEL_REDIRECT_PREFIX" in result.stderr.splitlines()[-1]


# -------------------------------------------------------------------------- OpenAPI


def test_schema_documents_wait_202_304_and_the_caching_headers(client):
    operation = client.get("/api/schema/?format=json").json()["paths"]["/image/{entry_id}"]["get"]

    wait = {p["name"]: p for p in operation["parameters"]}["wait"]
    assert (wait["in"], wait["schema"]) == ("query", {"type": "number", "minimum": 0})
    responses = operation["responses"]
    assert {"200", "202", "304", "400", "404", "500"} <= set(responses)
    pending_schema = responses["202"]["content"]["application/json"]["schema"]
    assert pending_schema == {"$ref": "#/components/schemas/Pending"}
    assert {"ETag", "Last-Modified", "Cache-Control", "Expires"} <= set(responses["200"]["headers"])
    assert {"ETag", "Cache-Control", "Expires"} <= set(responses["304"]["headers"])
    assert "Retry-After" in responses["202"]["headers"]
    assert "Cache-Control" in responses["404"]["headers"]


SCRIPTED_SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
    b"<script>document.title = document.cookie</script></svg>"
)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("x_accel", [False, True])
def test_every_image_answer_runs_no_script(api, sim, fetched, settings, method, x_accel):
    # Kentik's SVG carries a script; the cache must not let it run at its origin.
    sim.add_rule(
        status=200,
        body=json.dumps(
            {"dataUri": "data:image/svg+xml;base64," + base64.b64encode(SCRIPTED_SVG).decode()}
        ),
    )
    entry_id = fetched(chart_query(image_type="svg"))
    if x_accel:
        settings.X_ACCEL_REDIRECT_PREFIX = PREFIX

    response = api.head(f"/image/{entry_id}") if method == "HEAD" else api.get(f"/image/{entry_id}")

    assert response.status_code == 200
    assert response["Content-Type"] == "image/svg+xml"
    assert response["Content-Security-Policy"] == IMAGE_CSP
    assert "sandbox" in IMAGE_CSP.split("; ") and "default-src 'none'" in IMAGE_CSP
    assert response["X-Content-Type-Options"] == "nosniff"
    if method == "GET" and not x_accel:
        assert body_of(response) == SCRIPTED_SVG


def test_png_query_answered_with_an_svg_is_502_and_nothing_is_stored(api, sim, fetched, settings):
    sim.add_rule(
        status=200,
        body=json.dumps(
            {"dataUri": "data:image/svg+xml;base64," + base64.b64encode(SCRIPTED_SVG).decode()}
        ),
    )
    entry_id = fetched(chart_query(image_type="png"))

    error = json_error(api.get(f"/image/{entry_id}"), 502)

    assert error["error"] == (
        "Kentik answered image/svg+xml to a query whose imageType 'png' is image/png"
    )
    assert Fetch.objects.get().state == FetchState.FAILED
    assert not [p for p in (settings.CACHE_PATH / "images").rglob("*") if p.is_file()]
