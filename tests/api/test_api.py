"""The HTTP contract, through Django's test client.

A POST whose fetch must run is wrapped in `django_capture_on_commit_callbacks(
execute=True)`: django-q2 runs synchronously in tests, so the fetch then talks
HTTP to a real KentikSimulator on loopback. Without it, the fetch stays pending.
"""

import json
import shutil
import time
from typing import Any

import pytest
import time_machine
from django.db import transaction

from imagecache.hashing import query_hash
from imagecache.ids import ENTRY_ID_RE, entry_id_make
from imagecache.models import Entry, Fetch, FetchState
from imagecache.selectors.info import _ready_entries
from imagecache.services import claims
from imagecache.simulator.render import render_chart
from tests.harness.api import Api, body_of, chart_query, json_error, pending
from tests.harness.data import NOW, QUERY
from tests.harness.service import ROOT, free_port

pytestmark = pytest.mark.django_db

FAVICON = ROOT / "imagecache" / "root" / "favicon.ico"


@pytest.fixture
def api(client, settings) -> Api:
    return Api(client, settings.KT_AUTH_TOKEN)


@pytest.fixture
def fetched(api, django_capture_on_commit_callbacks):
    """POST a request and run its fetch; the entry id."""

    def post(api_query: dict[str, Any], **fields: Any) -> str:
        with django_capture_on_commit_callbacks(execute=True):
            response = api.post("/requests", {"api_query": api_query, **fields})
        assert response.status_code == 200, body_of(response)
        return str(response.json()["id"])

    return post


def nested_body(depth: int) -> str:
    """A request body whose arrays and objects nest exactly `depth` levels."""
    inner = "[" * (depth - 2) + "]" * (depth - 2)
    return '{"api_query": {"imageType": "png", "x": ' + inner + "}}"


# -------------------------------------------------------------------- POST /requests


@time_machine.travel(NOW, tick=False)
def test_request_answers_an_id_of_query_hash_and_expiry(api):
    response = api.post("/requests", {"api_query": QUERY, "ttl": 120})

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    expected = entry_id_make(query_key=query_hash(QUERY), expires_at=int(NOW.timestamp()) + 120)
    assert response.json() == {"id": expected}
    assert ENTRY_ID_RE.match(response.json()["id"])


@pytest.mark.parametrize("fields", [{}, {"ttl": None}], ids=["absent", "null"])
@time_machine.travel(NOW, tick=False)
def test_request_without_ttl_gets_default_ttl(api, settings, fields):
    settings.DEFAULT_TTL = 300

    response = api.post("/requests", {"api_query": QUERY, **fields})

    assert response.status_code == 200
    assert response.json()["id"].endswith(f"_{int(NOW.timestamp()) + 300}")


@time_machine.travel(NOW, tick=False)
def test_ttl_of_max_ttl_is_accepted(api, settings):
    settings.MAX_TTL = 3600

    response = api.post("/requests", {"api_query": QUERY, "ttl": 3600})

    assert response.status_code == 200
    assert response.json()["id"].endswith(f"_{int(NOW.timestamp()) + 3600}")


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/json"]
)
def test_request_body_is_read_as_json_whatever_its_content_type(api, content_type):
    body = json.dumps({"api_query": QUERY, "ttl": 60})

    response = api.post("/requests", body, content_type=content_type)

    assert response.status_code == 200, body_of(response)
    assert ENTRY_ID_RE.match(response.json()["id"])
    assert Fetch.objects.get().query_json == json.dumps(QUERY)


def test_query_keeps_nulls_and_key_order_up_to_kentik(api, sim, fetched):
    query = {"imageType": "svg", "zeta": None, "queries": chart_query()["queries"], "a": None}

    fetched(query)

    sent = sim.calls()["last_bodies"][-1]
    assert json.loads(sent, object_pairs_hook=list) == json.loads(
        json.dumps(query), object_pairs_hook=list
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"ttl": 60}, "api_query"),
        ({"api_query": None}, "api_query"),
        ({"api_query": [QUERY]}, "api_query"),
        ({"api_query": json.dumps(QUERY)}, "api_query"),
        ({"api_query": QUERY, "ttl": -1}, "ttl"),
        ({"api_query": QUERY, "ttl": 0}, "ttl"),
        ({"api_query": QUERY, "ttl": "300"}, "ttl"),
        ({"api_query": QUERY, "ttl": 1.5}, "ttl"),
        ({"api_query": QUERY, "ttl": True}, "ttl"),
        ({"api_query": QUERY, "ttl": 3601}, "ttl"),
    ],
    ids=[
        "api_query-missing",
        "api_query-null",
        "api_query-list",
        "api_query-string",
        "ttl-negative",
        "ttl-zero",
        "ttl-string",
        "ttl-float",
        "ttl-true",
        "ttl-above-max",
    ],
)
def test_invalid_field_is_400_naming_the_field(api, settings, body, field):
    settings.MAX_TTL = 3600

    response = api.post("/requests", body)

    data = json_error(response, 400)
    assert list(data["fields"]) == [field]
    assert data["error"].startswith(f"{field}: ")
    assert (Entry.objects.count(), Fetch.objects.count()) == (0, 0)


def test_ttl_above_max_names_the_limit(api, settings):
    settings.MAX_TTL = 3600

    data = json_error(api.post("/requests", {"api_query": QUERY, "ttl": 3601}), 400)

    assert "3600" in data["error"]


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "",
        '{"api_query": {"imageType": "png"}',
        '[{"api_query": {"imageType": "png"}}]',
        '"a string"',
        "null",
        '{"api_query": {"imageType": "png", "x": NaN}}',
        '{"api_query": {"imageType": "png", "x": -Infinity}}',
        b'{"api_query": {"imageType": "\xff"}}',
        nested_body(100),
        "[" * 100_000 + "]" * 100_000,
    ],
    ids=[
        "text",
        "empty",
        "truncated",
        "array",
        "string",
        "null",
        "nan",
        "infinity",
        "not-utf8",
        "nested-100",
        "nested-100000",
    ],
)
def test_body_that_is_not_a_json_object_is_400(api, body):
    response = api.post("/requests", body)

    json_error(response, 400)
    assert (Entry.objects.count(), Fetch.objects.count()) == (0, 0)


def test_nesting_up_to_64_levels_is_accepted(api):
    assert api.post("/requests", nested_body(64)).status_code == 200
    json_error(api.post("/requests", nested_body(65)), 400)


@pytest.mark.parametrize("content_type", ["application/json", "text/plain"])
def test_body_over_1_mib_is_413(api, content_type):
    body = json.dumps({"api_query": {"imageType": "png", "pad": "x" * (1024 * 1024)}})

    response = api.post("/requests", body, content_type=content_type)

    json_error(response, 413)
    assert (Entry.objects.count(), Fetch.objects.count()) == (0, 0)


# ------------------------------------------------------------------ GET /image/<id>


@pytest.mark.parametrize(
    ("image_type", "media_type"),
    [
        ("png", "image/png"),
        ("jpg", "image/jpeg"),
        ("svg", "image/svg+xml"),
        ("pdf", "application/pdf"),
    ],
)
def test_image_is_served_with_kentiks_bytes_and_media_type(
    api, sim, fetched, image_type, media_type
):
    query = chart_query(image_type)
    entry_id = fetched(query)

    response = api.get(f"/image/{entry_id}")

    assert response.status_code == 200
    assert response["Content-Type"] == media_type
    assert body_of(response) == render_chart(query)[1]
    assert sim.calls()["total"] == 1


def test_identical_requests_share_one_kentik_call(api, sim, fetched):
    first = fetched(chart_query(), ttl=100)
    second = fetched(chart_query(), ttl=200)

    assert first != second
    assert body_of(api.get(f"/image/{first}")) == body_of(api.get(f"/image/{second}"))
    assert sim.calls()["total"] == 1


def test_image_asked_for_as_image_png_is_served(api, sim, fetched):
    entry_id = fetched(chart_query())

    response = api.get(f"/image/{entry_id}", HTTP_ACCEPT="image/png")

    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"


@pytest.mark.parametrize(
    "entry_id",
    [
        "abc",
        "a" * 64,
        "a" * 64 + "_",
        "A" * 64 + "_1795000000.000000",
        "a" * 64 + "_1795000000.000000",
        "a" * 64 + "_1795000000.000000.png",
        "..",
        "..%2F..%2Fconfig%2Fsettings%2Fbase.py",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "..%5C..%5Cwindows",
        "a" * 64 + "_1795000000.000000%00",
    ],
)
def test_unknown_or_malformed_id_is_404_json(api, entry_id):
    json_error(api.get(f"/image/{entry_id}"), 404)


def test_id_with_a_path_after_it_is_404_json(api, sim, fetched):
    entry_id = fetched(chart_query())

    json_error(api.get(f"/image/{entry_id}/../{entry_id}"), 404)
    json_error(api.get(f"/image/{entry_id}%2F..%2F..%2Fmanage.py"), 404)


def test_image_whose_file_is_gone_is_404(api, sim, fetched, settings):
    entry_id = fetched(chart_query())
    shutil.rmtree(settings.CACHE_PATH / "images")

    json_error(api.get(f"/image/{entry_id}"), 404)


def test_expired_id_is_404(api, sim, fetched):
    with time_machine.travel(NOW, tick=False):
        entry_id = fetched(chart_query(), ttl=60)
    with time_machine.travel(NOW.timestamp() + 59.9, tick=False):
        assert api.get(f"/image/{entry_id}").status_code == 200
    with time_machine.travel(NOW.timestamp() + 60, tick=False):
        json_error(api.get(f"/image/{entry_id}"), 404)


@pytest.mark.django_db(transaction=True)
def test_fetch_still_in_flight_after_the_wait_is_500_with_retry_after(api, settings):
    """Another worker holds the fetch: the request waits ENTRY_WAIT_TIMEOUT, then gives up."""
    settings.ENTRY_WAIT_TIMEOUT = 0.2
    settings.KENTIK_API_TIMEOUT = 0.5
    with transaction.atomic():
        entry_id = pending(api, chart_query())
        fetch_id = Entry.objects.get(pk=entry_id).fetch_id
        # The task enqueued on commit finds it taken and skips it.
        assert claims.fetch_claim(fetch_id=fetch_id) is not None

    started = time.monotonic()
    response = api.get(f"/image/{entry_id}")

    assert time.monotonic() - started >= 0.19
    json_error(response, 500)
    assert response["Retry-After"] == "1"
    assert Fetch.objects.get(pk=fetch_id).state == FetchState.FETCHING


@pytest.mark.parametrize(
    ("rule", "status", "message"),
    [
        ({"status": 400, "message": "Unknown metric: nope"}, 400, "Unknown metric: nope"),
        ({"status": 503, "message": "Down for maintenance"}, 503, None),
        ({"status": 500, "body": "Internal blip", "content_type": "text/plain"}, 500, None),
    ],
    ids=["400", "503", "500-text"],
)
def test_kentik_error_is_answered_with_its_status_and_message(
    api, sim, fetched, rule, status, message
):
    sim.add_rule(**rule)
    entry_id = fetched(chart_query())

    data = json_error(api.get(f"/image/{entry_id}"), status)

    assert data["error"] == (message or rule.get("message") or rule.get("body"))


# Transactional: the wait lets go of its PostgreSQL connection, as in production.
@pytest.mark.django_db(transaction=True)
def test_kentik_slowing_down_is_told_once_the_wait_runs_out_and_the_fetch_stays_in_line(
    api, sim, fetched, settings
):
    # A 429 speaks of the deployment: the fetch waits out the pause in line,
    # and a client whose wait runs out meanwhile hears Kentik's last word.
    settings.KENTIK_SLOT_WAIT = 0.2
    settings.ENTRY_WAIT_TIMEOUT = 0.3
    sim.add_rule(status=429, message="Rate limit exceeded", retry_after="1")
    entry_id = fetched(chart_query())

    data = json_error(api.get(f"/image/{entry_id}"), 429)

    assert data["error"] == "Rate limit exceeded"
    assert Entry.objects.get(pk=entry_id).fetch.state == FetchState.PENDING


def test_bad_query_refused_by_kentik_is_400_with_its_message(api, sim, fetched):
    query = chart_query()
    del query["imageType"]
    entry_id = fetched(query)

    data = json_error(api.get(f"/image/{entry_id}"), 400)

    assert data["error"].startswith("Request body has no 'imageType'")


def test_wrong_kentik_credentials_are_401_without_the_token(api, sim, fetched, settings):
    settings.KT_AUTH_TOKEN = "a-wrong-token-that-must-not-leak"
    api = Api(api._client, settings.KT_AUTH_TOKEN)
    entry_id = fetched(chart_query())

    data = json_error(api.get(f"/image/{entry_id}"), 401)

    assert "a-wrong-token" not in data["error"]


def test_kentik_timeout_is_504(api, sim, fetched, settings):
    settings.KENTIK_API_TIMEOUT = 0.3
    sim.add_rule(hang=True)
    entry_id = fetched(chart_query())

    data = json_error(api.get(f"/image/{entry_id}"), 504)

    assert data["error"] == "Kentik did not answer within 0.3 s"


def test_unreachable_kentik_is_502(api, fetched, settings):
    settings.KENTIK_API_URL = f"http://127.0.0.1:{free_port()}/api/v5"
    settings.KENTIK_API_RETRIES = 1
    settings.KENTIK_API_BACKOFF = 0.01
    entry_id = fetched(chart_query())

    data = json_error(api.get(f"/image/{entry_id}"), 502)

    assert "could not be reached" in data["error"]


def test_unreadable_kentik_answer_is_502(api, sim, fetched):
    sim.add_rule(status=200, body='{"dataUri": "data:image/gif;base64,R0lGODlh"}')
    entry_id = fetched(chart_query())

    data = json_error(api.get(f"/image/{entry_id}"), 502)

    assert "could not be read" in data["error"]


def test_token_echoed_by_kentik_never_reaches_the_client(api, sim, fetched, settings):
    sim.add_rule(status=403, message=f"Token {settings.KT_AUTH_TOKEN} may not run this query")
    entry_id = fetched(chart_query())

    json_error(api.get(f"/image/{entry_id}"), 403)


def test_error_asked_for_as_image_png_is_still_json(api, sim, fetched):
    sim.add_rule(status=400, message="Unknown metric")
    failed = fetched(chart_query())

    json_error(api.get(f"/image/{failed}", HTTP_ACCEPT="image/png"), 400)
    json_error(api.get("/image/abc", HTTP_ACCEPT="image/png"), 404)
    json_error(api.post("/requests", {"ttl": 5}, HTTP_ACCEPT="image/png"), 400)


# ------------------------------------------------------------------------- GET /info


def test_info_counts_and_lists_entries_newest_first(api, sim, fetched, settings):
    settings.REUSE_MAX_AGE = 0
    sim.add_rule(match='"Failing"', status=400, message="Unknown metric")
    png, svg = chart_query("png", "A"), chart_query("svg", "B")
    with time_machine.travel(NOW, tick=False):
        older = fetched(png, ttl=1000)
    with time_machine.travel(NOW.timestamp() + 1, tick=False):
        newer = fetched(svg, ttl=1000)
    with time_machine.travel(NOW.timestamp() + 2, tick=False):
        pending_older = pending(api, chart_query("pdf", "C"), ttl=1000)
    with time_machine.travel(NOW.timestamp() + 3, tick=False):
        pending_newer = pending(api, chart_query("jpg", "D"), ttl=1000)
    with time_machine.travel(NOW.timestamp() + 4, tick=False):
        failed = fetched(chart_query("png", "Failing"), ttl=1000)
        response = api.get("/info")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    info = response.json()
    assert (info["active_count"], info["pending_count"], info["failed_count"]) == (2, 2, 1)
    assert info["active_entries"] == [
        {
            "id": newer,
            "type": "image/svg+xml",
            "size": len(render_chart(svg)[1]),
            "expiration": NOW.timestamp() + 1001,
        },
        {
            "id": older,
            "type": "image/png",
            "size": len(render_chart(png)[1]),
            "expiration": NOW.timestamp() + 1000,
        },
    ]
    assert info["pending_entries"] == [
        {"id": pending_newer, "type": None, "size": None, "expiration": NOW.timestamp() + 1003},
        {"id": pending_older, "type": None, "size": None, "expiration": NOW.timestamp() + 1002},
    ]
    assert [e["id"] for e in info["failed_entries"]] == [failed]


def test_info_limit_caps_the_lists_but_not_the_counts(api, sim, fetched):
    with time_machine.travel(NOW, tick=False):
        fetched(chart_query("png"))
        pending(api, chart_query("pdf"))
    with time_machine.travel(NOW.timestamp() + 1, tick=False):
        newest = fetched(chart_query("svg"))
        newest_pending = pending(api, chart_query("jpg"))
        info = api.get("/info?limit=1").json()

    assert (info["active_count"], info["pending_count"]) == (2, 2)
    assert [e["id"] for e in info["active_entries"]] == [newest]
    assert [e["id"] for e in info["pending_entries"]] == [newest_pending]


def test_info_limit_zero_gives_counts_only(api):
    pending(api, chart_query())

    info = api.get("/info?limit=0").json()

    assert (info["pending_count"], info["pending_entries"]) == (1, [])


def test_info_leaves_out_expired_entries(api, sim, fetched):
    with time_machine.travel(NOW, tick=False):
        fetched(chart_query("png"), ttl=10)
        lasting = fetched(chart_query("png"), ttl=1000)
        pending(api, chart_query("svg"), ttl=10)
    with time_machine.travel(NOW.timestamp() + 10, tick=False):
        info = api.get("/info").json()

    assert (info["active_count"], info["pending_count"]) == (1, 0)
    assert [e["id"] for e in info["active_entries"]] == [lasting]
    assert info["pending_entries"] == []


@pytest.mark.parametrize("limit", ["abc", "-1", "1.5", "10001"])
def test_info_with_a_bad_limit_is_400_json(api, limit):
    data = json_error(api.get(f"/info?limit={limit}"), 400)

    assert list(data["fields"]) == ["limit"]


def test_info_counts_the_bytes_of_ready_images(api, sim, fetched):
    png, svg = chart_query("png", "A"), chart_query("svg", "B")
    with time_machine.travel(NOW, tick=False):
        fetched(png)
        fetched(png)  # the same fetch: its bytes count once
        fetched(svg)
        info = api.get("/info").json()

    assert info["stored_bytes"] == len(render_chart(png)[1]) + len(render_chart(svg)[1])
    assert type(info["stored_bytes"]) is int


@pytest.mark.parametrize("exclude_max", [0, 500])
def test_info_lists_only_ready_entries_however_many_fetches_are_not(
    api, sim, fetched, monkeypatch, exclude_max
):
    """Past `_INFO_EXCLUDE_MAX` fetches not ready, the list is read another
    way; either way it holds the ready entries alone, newest first."""
    monkeypatch.setattr("imagecache.selectors.info._INFO_EXCLUDE_MAX", exclude_max)
    sim.add_rule(match='"Failing"', status=400, message="Unknown metric")
    with time_machine.travel(NOW, tick=False):
        older = fetched(chart_query("png", "A"))
    with time_machine.travel(NOW.timestamp() + 1, tick=False):
        pending(api, chart_query("pdf", "C"))
        fetched(chart_query("png", "Failing"))
    with time_machine.travel(NOW.timestamp() + 2, tick=False):
        newer = fetched(chart_query("svg", "B"))
        info = api.get("/info").json()

    assert [e["id"] for e in info["active_entries"]] == [newer, older]
    assert (info["active_count"], info["pending_count"], info["failed_count"]) == (2, 1, 1)


def test_info_leaves_out_an_entry_whose_fetch_left_the_ready_state(api, sim, fetched):
    """A fetch that left the ready state after the counts were read (evicted,
    refetched) is not listed as ready."""
    with time_machine.travel(NOW, tick=False) as clock:
        kept = fetched(chart_query("png", "A"))
        clock.shift(1)
        gone = fetched(chart_query("svg", "B"))
        Fetch.objects.filter(entries__pk=gone).update(state=FetchState.PENDING)

        def live() -> Any:
            return Entry.objects.filter(expires_at__gt=NOW)

        rows = _ready_entries(live, NOW, not_ready=set(), limit=100)

    assert [row["id"] for row in rows] == [kept]


def test_info_never_opens_image_files(api, sim, fetched, settings):
    with time_machine.travel(NOW, tick=False):
        fetched(chart_query("png"))
        fetched(chart_query("pdf"))
        before = api.get("/info").json()
        shutil.rmtree(settings.CACHE_PATH)
        settings.CACHE_PATH.mkdir()
        after = api.get("/info").json()

    assert before["active_count"] == 2
    assert after == before


# ------------------------------------------------------------------ everything else


def test_favicon_is_served(api):
    response = api.get("/favicon.ico")

    assert response.status_code == 200
    assert response["Content-Type"] == "image/x-icon"
    assert body_of(response) == FAVICON.read_bytes()


@pytest.mark.parametrize("path", ["/nope", "/image/", "/requests/", "/info/", "/static/nope.css"])
def test_unknown_url_is_404_json(api, path):
    json_error(api.get(path), 404)


def test_wrong_method_is_405_json(api):
    assert json_error(api.get("/requests"), 405)["error"] == 'Method "GET" not allowed.'
    json_error(api.post("/info", {}), 405)
    json_error(api.delete("/image/abc"), 405)


def test_index_page_shows_counts_and_endpoints(api, sim, fetched):
    fetched(chart_query("svg", "index page"))
    response = api.get("/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "1 ready, 0 pending, 0 failed" in page
    assert "POST /requests" in page
