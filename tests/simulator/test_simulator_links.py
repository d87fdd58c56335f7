"""The simulator's `query/url`: Kentik's portal link of a query, with the
charts' credentials check, rules and modes. No Django: it runs in-process."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from imagecache.hashing import query_hash
from imagecache.simulator.methods import PORTAL_LINK
from imagecache.simulator.rules import RuleError
from imagecache.simulator.server import KentikSimulator
from tests.simulator import test_simulator
from tests.simulator.test_simulator import EMAIL, HEADERS, chart_body, control_url, post_chart

# The simulator tests' fixtures: one that accepts EMAIL and TOKEN, and one on a moved clock.
sim, clock, clocked = test_simulator.sim, test_simulator.clock, test_simulator.clocked


def link_body(**query: Any) -> dict[str, Any]:
    body = chart_body(**query)
    del body["imageType"]
    return body


def post_link(
    sim: KentikSimulator, body: Any, headers: dict[str, str] | None = None
) -> requests.Response:
    all_headers = {"Content-Type": "application/json", **(HEADERS if headers is None else headers)}
    data = json.dumps(body) if isinstance(body, dict | list) else body
    return requests.post(f"{sim.url}/query/url", data=data, headers=all_headers, timeout=5)


def test_the_link_is_a_json_string_and_the_same_for_the_same_query(sim):
    body = link_body(metric="bytes")
    first, second = post_link(sim, body), post_link(sim, body)
    other = post_link(sim, link_body(metric="packets"))

    assert first.status_code == 200
    assert first.headers["Content-Type"] == "application/json"
    assert first.text.startswith('"https://portal.kentik.com/portal/#Charts/shortUrl/')
    assert first.json() == second.json() == PORTAL_LINK.format(query_hash(body)[:32])
    assert other.json() != first.json()


def test_link_calls_are_counted_apart_from_the_charts(sim):
    body = link_body()
    post_link(sim, body)
    post_link(sim, body)
    post_chart(sim, chart_body())

    calls = sim.calls()
    assert calls["total"] == 1
    assert calls["links"]["total"] == 2
    assert calls["links"]["by_query"] == {query_hash(body): 2}
    assert calls["links"]["by_status"] == {"200": 2}
    assert json.loads(calls["links"]["last_bodies"][-1]) == body
    assert calls["in_flight"] == 0


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-CH-Auth-Email": EMAIL}, {"X-CH-Auth-Email": EMAIL, "X-CH-Auth-API-Token": "wrong"}],
)
def test_a_link_needs_the_credentials(sim, headers):
    answer = post_link(sim, link_body(), headers=headers)

    assert answer.status_code == 401
    assert "Authentication failed" in answer.json()["error"]
    assert sim.calls()["links"]["by_status"] == {"401": 1}


@pytest.mark.parametrize("body", ["not json", [], {"queries": []}, {"queries": [{"q": 1}]}])
def test_a_body_without_queries_is_400(sim, body):
    assert post_link(sim, body).status_code == 400


def test_an_image_type_is_no_reason_to_refuse(sim):
    assert post_link(sim, chart_body()).status_code == 200


def test_a_rule_for_url_steers_links_and_leaves_charts_alone(sim):
    sim.add_rule(method="url", body='"javascript:alert(1)"', times=1)

    assert post_chart(sim, chart_body()).status_code == 200
    assert post_link(sim, link_body()).text == '"javascript:alert(1)"'
    assert post_link(sim, link_body()).json().startswith("https://")


def test_a_rule_without_a_method_is_for_charts(sim):
    sim.add_rule(status=500)

    assert post_link(sim, link_body()).status_code == 200
    assert post_chart(sim, chart_body()).status_code == 500


def test_a_rule_for_an_unknown_method_is_refused(sim):
    with pytest.raises(RuleError, match="'method'"):
        sim.add_rule(method="topXdata")
    answer = requests.post(control_url(sim, "/_sim/rules"), json={"method": 3}, timeout=5)
    assert answer.status_code == 400


def test_links_and_charts_share_the_rate_limit(clocked, clock):
    clocked.set_rate_limit(2)
    assert post_chart(clocked, chart_body()).status_code == 200
    assert post_link(clocked, link_body()).status_code == 200

    refused = post_link(clocked, link_body())
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "60"
    assert post_chart(clocked, chart_body()).status_code == 429

    clock.advance(60)
    assert post_link(clocked, link_body()).status_code == 200


def test_an_outage_fails_links_too(clocked, clock):
    clocked.set_outage(30, status=502)

    assert post_link(clocked, link_body()).status_code == 502
    assert clocked.calls()["outage_failures"] == 1
    clock.advance(30)
    assert post_link(clocked, link_body()).status_code == 200
