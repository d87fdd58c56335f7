"""The seam's portal link (`kentik.fetch_portal_link`, Kentik's query/url)
against the simulator on loopback, and the throttling headers it logs."""

import json
import logging
from typing import Any

import pytest

from imagecache import kentik
from imagecache.api import examples
from imagecache.hashing import query_hash
from imagecache.simulator.methods import PORTAL_LINK
from tests.kentik.test_kentik import _Handler, stand_in  # noqa: F401 - a fixture

pytestmark = pytest.mark.usefixtures("sim")


def link_query(**query: Any) -> dict[str, Any]:
    body = examples.chart_query(image_type="png", **query)
    del body["imageType"]
    return body


def link_error(query: dict[str, Any]) -> kentik.KentikError:
    with pytest.raises(kentik.KentikError) as raised:
        kentik.fetch_portal_link(query)
    return raised.value


def test_the_link_is_the_one_kentik_answered(sim):
    query = link_query()

    assert kentik.fetch_portal_link(query) == PORTAL_LINK.format(query_hash(query)[:32])
    assert sim.calls()["links"]["total"] == 1
    assert sim.calls()["total"] == 0


def test_a_query_with_nulls_reaches_kentik_unchanged(sim):
    query = link_query()
    query["queries"][0]["query"]["filters_obj"] = None
    query["queries"][0]["query"]["aggregates"] = [{"name": None, "fn": "sum"}]

    kentik.fetch_portal_link(query)

    sent = sim.calls()["links"]["last_bodies"][-1]
    assert json.loads(sent) == query
    assert list(json.loads(sent)["queries"][0]["query"]) == list(query["queries"][0]["query"])
    assert '"filters_obj": null' in sent


@pytest.mark.parametrize(
    "answer",
    [
        '"javascript:alert(1)"',
        '"JavaScript:alert(document.cookie)"',
        '"data:text/html,<script>alert(1)</script>"',
        '"ftp://portal.kentik.com/x"',
        '"//portal.kentik.com/x"',
        '"https://"',
        '"portal.kentik.com/portal"',
        '"https://portal.kentik.com/a b"',
        '"https://portal.kentik.com/\\n<script>"',
        '"https://portal.kentik.com/' + "x" * 3000 + '"',
        '""',
        "https://portal.kentik.com/unquoted",
        '{"url": "https://portal.kentik.com/x"}',
        '["https://portal.kentik.com/x"]',
        "42",
        "null",
        "",
    ],
)
def test_an_answer_that_is_not_an_http_url_is_refused(sim, answer):
    sim.add_rule(method="url", body=answer)

    error = link_error(link_query())

    assert error.status == 502
    assert "not an http(s) URL" in error.message
    assert not error.transient


def test_kentiks_refusal_keeps_its_status_and_message(sim):
    sim.add_rule(method="url", status=400, message="no such metric")

    error = link_error(link_query())

    assert (error.status, error.message, error.transient) == (400, "no such metric", False)


def test_wrong_credentials_are_401(sim, settings):
    settings.KT_AUTH_TOKEN = "wrong"

    assert link_error(link_query()).status == 401


def test_slow_down_is_rate_limited_with_its_retry_after(sim):
    sim.add_rule(method="url", status=429, retry_after="7")

    with pytest.raises(kentik.RateLimited) as raised:
        kentik.fetch_portal_link(link_query())

    assert (raised.value.status, raised.value.retry_after) == (429, 7.0)
    assert sim.calls()["links"]["total"] == 1


def test_kentik_failing_is_retried_then_transient(sim):
    sim.add_rule(method="url", status=502)

    error = link_error(link_query())

    assert (error.status, error.transient) == (502, True)
    assert sim.calls()["links"]["total"] == 2  # KENTIK_API_RETRIES = 1


def test_retries_zero_makes_one_attempt(sim):
    sim.add_rule(method="url", status=502)

    with pytest.raises(kentik.KentikError):
        kentik.fetch_portal_link(link_query(), retries=0)

    assert sim.calls()["links"]["total"] == 1


def test_a_redirect_is_not_followed(sim, stand_in):  # noqa: F811
    def redirect(handler: _Handler) -> None:
        handler.send_response(302)
        handler.send_header("Location", f"{sim.url}/query/url")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    stand_in(redirect)

    error = link_error(link_query())
    assert error.status == 502
    assert "redirects are not followed" in error.message
    assert sim.calls()["links"]["total"] == 0


@pytest.mark.parametrize("method", ["link", "chart"])
def test_throttling_headers_are_logged(sim, stand_in, caplog, method):  # noqa: F811
    link = b'"https://portal.kentik.com/portal/#Charts/shortUrl/abc"'

    def throttled(handler: _Handler) -> None:
        handler.send_response(400 if method == "chart" else 200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("x-ratelimit-throttle-ms", "1500")
        handler.send_header("X-RateLimit-Details", "bucket=api; remaining=0")
        handler.send_header("Content-Length", str(len(link)))
        handler.end_headers()
        handler.wfile.write(link)

    stand_in(throttled)
    caplog.set_level(logging.WARNING, logger="imagecache.kentik_transport")

    if method == "link":
        kentik.fetch_portal_link(link_query())
    else:
        with pytest.raises(kentik.KentikError):
            kentik.fetch_chart(json.dumps(examples.chart_query(image_type="png")))

    (record,) = [r for r in caplog.records if "throttles" in r.getMessage()]
    assert "x-ratelimit-throttle-ms=1500" in record.getMessage()
    assert "x-ratelimit-details=bucket=api; remaining=0" in record.getMessage()


def test_no_throttling_headers_log_nothing(sim, caplog):
    caplog.set_level(logging.DEBUG, logger="imagecache.kentik_transport")

    kentik.fetch_portal_link(link_query())

    assert not [r for r in caplog.records if "throttles" in r.getMessage()]
