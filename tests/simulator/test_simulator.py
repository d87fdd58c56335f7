"""The bundled Kentik simulator: chart answers, errors, rules, counters and CLI.

None of these tests needs Django or a database; the simulator runs in-process on
a free port, except for the CLI tests, which start it as a subprocess.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import http.client
import io
import json
import re
import select
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from PIL import Image

from imagecache.api import examples
from imagecache.hashing import query_hash
from imagecache.simulator.render import render_chart
from imagecache.simulator.rules import RuleError
from imagecache.simulator.server import KentikSimulator
from tests.harness.service import ROOT

EMAIL = "simulator@example.com"
TOKEN = "s3cret-t0ken"
HEADERS = {"X-CH-Auth-Email": EMAIL, "X-CH-Auth-API-Token": TOKEN}
SVG_NS = "{http://www.w3.org/2000/svg}"
DELAY = 0.3


def chart_body(image_type: str = "png", **query: Any) -> dict[str, Any]:
    """A topXchart body like the ones the cache sends, with some query fields replaced."""
    return examples.chart_query(image_type=image_type, **query)


def post_chart(
    sim: KentikSimulator,
    body: Any,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> requests.Response:
    """POST a body (a dict as JSON, a str or bytes as is) to the simulator's topXchart."""
    all_headers = {"Content-Type": "application/json", **(HEADERS if headers is None else headers)}
    data = json.dumps(body) if isinstance(body, dict | list) else body
    return requests.post(
        f"{sim.url}/query/topXchart", data=data, headers=all_headers, timeout=timeout
    )


def image_of(response: requests.Response) -> tuple[str, bytes]:
    """The mime type and the bytes of a successful chart answer."""
    assert response.status_code == 200, response.text
    match = re.fullmatch(r"data:([^;,]+);base64,(.+)", response.json()["dataUri"], re.DOTALL)
    assert match is not None
    return match.group(1), base64.b64decode(match.group(2), validate=True)


def control_url(sim: KentikSimulator, path: str) -> str:
    return f"http://127.0.0.1:{sim.port}{path}"


@pytest.fixture
def sim() -> Iterator[KentikSimulator]:
    """A simulator that accepts only EMAIL and TOKEN."""
    simulator = KentikSimulator(email=EMAIL, token=TOKEN).start()
    try:
        yield simulator
    finally:
        simulator.stop()


@pytest.fixture
def open_sim() -> Iterator[KentikSimulator]:
    """A simulator configured without credentials: any non-empty pair is accepted."""
    with KentikSimulator() as simulator:
        yield simulator


# ------------------------------------------------------------------------- images


def test_png_answer_is_a_png_of_the_requested_size(sim: KentikSimulator) -> None:
    mime, data = image_of(post_chart(sim, chart_body("png", width=640, height=300)))

    assert mime == "image/png"
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        assert image.size == (640, 300)


def test_size_defaults_to_800_by_400(sim: KentikSimulator) -> None:
    _, data = image_of(post_chart(sim, chart_body("png")))

    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (800, 400)


def test_size_is_clamped_to_200_to_2000(sim: KentikSimulator) -> None:
    _, data = image_of(post_chart(sim, chart_body("png", width=10, height="5000")))

    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (200, 2000)


@pytest.mark.parametrize("image_type", ["jpg", "jpeg"])
def test_jpeg_answer_is_a_jpeg(sim: KentikSimulator, image_type: str) -> None:
    mime, data = image_of(post_chart(sim, chart_body(image_type)))

    assert mime == "image/jpeg"
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"
        assert image.size == (800, 400)


def test_pdf_answer_is_a_pdf(sim: KentikSimulator) -> None:
    mime, data = image_of(post_chart(sim, chart_body("pdf")))

    assert mime == "application/pdf"
    assert data.startswith(b"%PDF-")
    assert data.rstrip().endswith(b"%%EOF")


def test_svg_answer_is_an_svg_document_with_the_chart(sim: KentikSimulator) -> None:
    mime, data = image_of(post_chart(sim, chart_body("svg", query_title="Edge <&> traffic")))

    assert mime == "image/svg+xml"
    assert data.startswith(b"<?xml")
    root = ET.fromstring(data)
    assert root.tag == f"{SVG_NS}svg"
    assert (root.get("width"), root.get("height")) == ("800", "400")
    assert root.findtext(f"{SVG_NS}title") == "Edge <&> traffic"
    assert root.findall(f"{SVG_NS}polygon"), "a stacked area chart draws bands"
    texts = [element.text for element in root.iter(f"{SVG_NS}text")]
    assert "Edge <&> traffic" in texts
    assert "now" in texts


@pytest.mark.parametrize("image_type", ["png", "jpg", "svg", "pdf"])
def test_same_query_gives_identical_bytes(sim: KentikSimulator, image_type: str) -> None:
    first = image_of(post_chart(sim, chart_body(image_type)))
    second = image_of(post_chart(sim, chart_body(image_type)))

    assert first == second


def test_different_queries_give_different_bytes(sim: KentikSimulator) -> None:
    bodies = [
        chart_body(),
        chart_body(query_title="Another title"),
        chart_body(lookback_seconds=86400),
        chart_body(dimension=["AS_src"]),
        chart_body(topx="3"),
    ]

    images = {image_of(post_chart(sim, body))[1] for body in bodies}

    assert len(images) == len(bodies)


@pytest.mark.parametrize("viz_type", ["stackedArea", "line", "bar", "sankey"])
def test_every_viz_type_draws_a_valid_png(sim: KentikSimulator, viz_type: str) -> None:
    _, data = image_of(post_chart(sim, chart_body(viz_type=viz_type, dimension=["Proto"])))

    with Image.open(io.BytesIO(data)) as image:
        image.verify()


def test_line_and_bar_charts_differ_from_stacked_areas(sim: KentikSimulator) -> None:
    svgs = {
        viz: image_of(post_chart(sim, chart_body("svg", viz_type=viz)))[1]
        for viz in ("stackedArea", "line", "bar")
    }

    assert ET.fromstring(svgs["stackedArea"]).findall(f"{SVG_NS}polygon")
    assert not ET.fromstring(svgs["line"]).findall(f"{SVG_NS}polygon")
    assert len(ET.fromstring(svgs["bar"]).findall(f"{SVG_NS}rect")) > 24


def test_odd_query_values_still_draw_a_chart(sim: KentikSimulator) -> None:
    body = chart_body(
        query_title="line\nbreaks\x00" + "x" * 50_000,
        dimension=["AS_src" * 100, None, 3],
        topx="inf",
        width="1e999",
        lookback_seconds="nan",
        metric=["not", "a", "string"],
    )

    started = time.monotonic()
    _, data = image_of(post_chart(sim, body))

    assert time.monotonic() - started < 2
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (800, 400)


def test_answers_parse_with_kentik_apis_own_response_class(sim: KentikSimulator) -> None:
    payloads = pytest.importorskip("kentik_api.requests_payload.queries_payload")
    response = post_chart(sim, chart_body("jpg"))

    result = payloads.QueryChartResponse.from_json(response.text).to_query_chart_result()

    assert result.image_type.value == "jpeg"
    assert result.image_data == image_of(response)[1]


def test_default_chart_draws_quickly() -> None:
    body = chart_body("png")
    render_chart(body)  # the first call loads the font

    best = min(_timed(lambda: render_chart(body)) for _ in range(5))

    # The target is < 50 ms; the margin keeps a busy test machine from failing it.
    assert best < 0.2


def _timed(action: Any) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


# ----------------------------------------------------------------- authentication


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-CH-Auth-Email": EMAIL},
        {"X-CH-Auth-API-Token": TOKEN},
        {"X-CH-Auth-Email": EMAIL, "X-CH-Auth-API-Token": "wrong-token"},
        {"X-CH-Auth-Email": "someone@example.com", "X-CH-Auth-API-Token": TOKEN},
        {"X-CH-Auth-Email": "", "X-CH-Auth-API-Token": TOKEN},
    ],
    ids=["none", "email-only", "token-only", "wrong-token", "wrong-email", "empty-email"],
)
def test_configured_credentials_must_match_exactly(
    sim: KentikSimulator, headers: dict[str, str]
) -> None:
    response = post_chart(sim, chart_body(), headers=headers)

    assert response.status_code == 401
    assert response.json()["error"].startswith("Authentication failed: ")
    assert TOKEN not in response.text
    assert "wrong-token" not in response.text


def test_without_configured_credentials_any_non_empty_pair_is_accepted(
    open_sim: KentikSimulator,
) -> None:
    accepted = post_chart(
        open_sim, chart_body(), {"X-CH-Auth-Email": "a@b.c", "X-CH-Auth-API-Token": "x"}
    )
    refused = post_chart(
        open_sim, chart_body(), {"X-CH-Auth-Email": "a@b.c", "X-CH-Auth-API-Token": ""}
    )

    assert image_of(accepted)[0] == "image/png"
    assert refused.status_code == 401


# -------------------------------------------------------------------- bad bodies


def _without_query(body: dict[str, Any]) -> dict[str, Any]:
    del body["queries"][0]["query"]
    return body


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"imageType": "png"}, "queries"),
        ({"queries": [], "imageType": "png"}, "empty"),
        ({"queries": {"query": {}}, "imageType": "png"}, "queries"),
        ({"queries": ["x"], "imageType": "png"}, "queries[0]"),
        (_without_query(chart_body()), "queries[0]"),
        (chart_body("gif"), "imageType"),
        ({"queries": chart_body()["queries"]}, "imageType"),
        ([chart_body()], "object"),
        ("this is not json", "JSON"),
        ('{"queries": NaN, "imageType": "png"}', "JSON"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        (b"\xff\xfe\x00", "UTF-8"),
    ],
    ids=[
        "missing-queries",
        "empty-queries",
        "queries-not-a-list",
        "item-not-an-object",
        "item-without-query",
        "bad-image-type",
        "missing-image-type",
        "body-not-an-object",
        "not-json",
        "nan",
        "nested-too-deeply",
        "not-utf8",
    ],
)
def test_bad_bodies_get_400_naming_the_problem(sim: KentikSimulator, body: Any, named: str) -> None:
    response = post_chart(sim, body)

    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/json"
    assert named in response.json()["error"]


# -------------------------------------------------------------------------- rules


def test_status_rule_sends_its_status_retry_after_and_message(sim: KentikSimulator) -> None:
    sim.add_rule(status=429, retry_after=7, message="Slow down")

    response = post_chart(sim, chart_body())

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response.json() == {"error": "Slow down"}


def test_rule_times_are_consumed_then_normal_answers_resume(sim: KentikSimulator) -> None:
    sim.add_rule(status=503, times=2)

    statuses = [post_chart(sim, chart_body()).status_code for _ in range(3)]

    assert statuses == [503, 503, 200]


def test_rule_match_only_hits_bodies_containing_it(sim: KentikSimulator) -> None:
    sim.add_rule(match="Doomed chart", status=500, message="boom")

    hit = post_chart(sim, chart_body(query_title="Doomed chart"))
    missed = post_chart(sim, chart_body(query_title="Fine chart"))

    assert (hit.status_code, hit.json()) == (500, {"error": "boom"})
    assert missed.status_code == 200


def test_first_matching_rule_with_times_left_wins(sim: KentikSimulator) -> None:
    sim.add_rule(status=502, times=1)
    sim.add_rule(status=504)

    statuses = [post_chart(sim, chart_body()).status_code for _ in range(3)]

    assert statuses == [502, 504, 504]


def test_delay_rule_delays_a_normal_answer(sim: KentikSimulator) -> None:
    sim.add_rule(delay=DELAY)

    started = time.monotonic()
    response = post_chart(sim, chart_body())

    assert time.monotonic() - started >= DELAY
    assert image_of(response)[0] == "image/png"


def test_default_delay_applies_unless_a_rule_gives_one() -> None:
    with KentikSimulator(email=EMAIL, token=TOKEN, delay=DELAY) as slow:
        started = time.monotonic()
        assert post_chart(slow, chart_body()).status_code == 200
        assert time.monotonic() - started >= DELAY

        slow.add_rule(delay=0, match="quick")
        started = time.monotonic()
        assert post_chart(slow, chart_body(query_title="quick")).status_code == 200
        assert time.monotonic() - started < DELAY


def test_hang_rule_never_answers_and_stop_still_returns_promptly() -> None:
    simulator = KentikSimulator(email=EMAIL, token=TOKEN).start()
    try:
        simulator.add_rule(hang=True)
        with pytest.raises(requests.exceptions.ReadTimeout):
            post_chart(simulator, chart_body(), timeout=0.5)
        assert simulator.calls()["in_flight"] == 1
    finally:
        started = time.monotonic()
        simulator.stop()
        stopped_in = time.monotonic() - started

    assert stopped_in < 2.0
    assert simulator.calls()["in_flight"] == 0


def test_body_rule_sends_the_raw_body(sim: KentikSimulator) -> None:
    sim.add_rule(body="{not json", times=1)
    sim.add_rule(body="<html>Bad gateway</html>", status=502, content_type="text/html")

    broken = post_chart(sim, chart_body())
    html = post_chart(sim, chart_body())

    assert (broken.status_code, broken.text) == (200, "{not json")
    assert broken.headers["Content-Type"] == "application/json"
    assert (html.status_code, html.text) == (502, "<html>Bad gateway</html>")
    assert html.headers["Content-Type"] == "text/html"


@pytest.mark.parametrize(
    "rule",
    [
        {"bogus": 1},
        {"status": "500"},
        {"status": 42},
        {"delay": -1},
        {"times": 1.5},
        {"hang": "yes"},
        {"retry_after": "1\r\nX-Evil: 1"},
    ],
)
def test_invalid_rules_are_refused(sim: KentikSimulator, rule: dict[str, Any]) -> None:
    with pytest.raises(RuleError):
        sim.add_rule(**rule)

    response = requests.post(control_url(sim, "/_sim/rules"), json=rule, timeout=5)

    assert response.status_code == 400
    assert response.json()["error"]


# ----------------------------------------------------------------------- counters


def test_calls_count_every_post_including_rejected_ones(sim: KentikSimulator) -> None:
    body = chart_body()
    post_chart(sim, body)
    post_chart(sim, body, headers={})
    post_chart(sim, chart_body("gif"))
    post_chart(sim, "not json")

    calls = sim.calls()

    assert calls["total"] == 4
    assert calls["by_query"] == {
        query_hash(body): 2,
        query_hash(chart_body("gif")): 1,
        hashlib.sha256(b"not json").hexdigest(): 1,
    }
    assert calls["in_flight"] == 0
    assert calls["max_in_flight"] == 1
    assert json.loads(calls["last_bodies"][0]) == body
    assert calls["last_bodies"][-1] == "not json"


def test_last_headers_mask_the_token(sim: KentikSimulator) -> None:
    post_chart(sim, chart_body())

    headers = sim.calls()["last_headers"][-1]

    assert headers["X-CH-Auth-API-Token"] == "***"
    assert headers["X-CH-Auth-Email"] == EMAIL
    assert TOKEN not in json.dumps(sim.calls())


def test_calls_keep_only_the_last_20_bodies_and_headers(sim: KentikSimulator) -> None:
    for number in range(25):
        post_chart(sim, f"body {number}")

    calls = sim.calls()

    assert calls["total"] == 25
    assert calls["last_bodies"] == [f"body {number}" for number in range(5, 25)]
    assert len(calls["last_headers"]) == 20


def test_concurrent_calls_are_served_in_parallel(sim: KentikSimulator) -> None:
    sim.add_rule(delay=DELAY)
    workers = 8
    barrier = threading.Barrier(workers)

    def call(_: int) -> int:
        barrier.wait()
        return post_chart(sim, chart_body()).status_code

    with ThreadPoolExecutor(workers) as pool:
        statuses = list(pool.map(call, range(workers)))

    assert statuses == [200] * workers
    # All in flight at once: parallel, whatever the load makes of the clock.
    assert sim.calls()["max_in_flight"] == workers
    assert sim.calls()["in_flight"] == 0


def test_copes_with_a_thousand_fresh_connections(sim: KentikSimulator) -> None:
    def call(number: int) -> int:
        # A new connection each time, as a client without a pool would make; plain
        # http.client because requests' per-call setup would dominate the run time.
        connection = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=5)
        try:
            connection.request(
                "POST", "/api/v5/query/topXchart", body=json.dumps({"n": number}), headers=HEADERS
            )
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(call, range(1000)))

    assert statuses == [400] * 1000
    assert sim.calls()["total"] == 1000


def test_keep_alive_connection_serves_several_answers(sim: KentikSimulator) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=5)
    try:
        answers = []
        for body in (chart_body(), {"bad": True}, chart_body("svg")):
            connection.request(
                "POST",
                "/api/v5/query/topXchart",
                body=json.dumps(body),
                headers={**HEADERS, "Content-Type": "application/json"},
            )
            response = connection.getresponse()
            assert response.getheader("Content-Length") is not None
            answers.append((response.status, json.loads(response.read())))
    finally:
        connection.close()

    assert [status for status, _ in answers] == [200, 400, 200]
    assert answers[2][1]["dataUri"].startswith("data:image/svg+xml;base64,")


def test_reset_clears_rules_and_counters(sim: KentikSimulator) -> None:
    sim.add_rule(status=500)
    post_chart(sim, chart_body())

    sim.reset()

    assert sim.calls() == {
        "total": 0,
        "by_query": {},
        "by_status": {},
        "rate_limited": 0,
        "outage_failures": 0,
        "in_flight": 0,
        "max_in_flight": 0,
        "last_bodies": [],
        "last_headers": [],
        "links": {"total": 0, "by_query": {}, "by_status": {}, "last_bodies": []},
    }
    assert post_chart(sim, chart_body()).status_code == 200


# -------------------------------------------------------------- HTTP control API


def test_http_control_endpoints_add_rules_report_calls_and_reset(sim: KentikSimulator) -> None:
    first = requests.post(
        control_url(sim, "/_sim/rules"), json={"status": 503, "times": 1}, timeout=5
    )
    second = requests.post(
        control_url(sim, "/_sim/rules"), json={"match": "nope", "status": 500}, timeout=5
    )
    assert (first.json(), second.json()) == ({"rules": 1}, {"rules": 2})

    body = chart_body()
    assert post_chart(sim, body).status_code == 503
    assert post_chart(sim, body).status_code == 200

    calls = requests.get(control_url(sim, "/_sim/calls"), timeout=5).json()
    assert calls["total"] == 2
    assert calls["by_query"] == {query_hash(body): 2}
    assert calls["by_status"] == {"503": 1, "200": 1}
    assert calls["last_headers"][-1]["X-CH-Auth-API-Token"] == "***"
    assert set(calls) == {
        "total",
        "by_query",
        "by_status",
        "rate_limited",
        "outage_failures",
        "in_flight",
        "max_in_flight",
        "last_bodies",
        "last_headers",
        "links",
    }

    reset = requests.post(control_url(sim, "/_sim/reset"), timeout=5)
    assert reset.status_code == 200
    assert requests.get(control_url(sim, "/_sim/calls"), timeout=5).json()["total"] == 0
    requests.post(control_url(sim, "/_sim/rules"), json={"times": 0}, timeout=5)
    assert requests.post(control_url(sim, "/_sim/rules"), json={}, timeout=5).json()["rules"] == 2


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v5/query/topXchart"),
        ("POST", "/api/v5/query/topXdata"),
        ("GET", "/_sim/rules"),
        ("DELETE", "/_sim/calls"),
        ("PUT", "/_sim/rate_limit"),
        ("PATCH", "/_sim/outage"),
        ("GET", "/"),
    ],
)
def test_anything_else_is_a_json_404(sim: KentikSimulator, method: str, path: str) -> None:
    response = requests.request(method, control_url(sim, path), timeout=5)

    assert response.status_code == 404
    assert "error" in response.json()


# -------------------------------------------------------------------------- modes


class FakeClock:
    """The simulator's clock, moved by the test: the modes' time without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def clocked(clock: FakeClock) -> Iterator[KentikSimulator]:
    """A simulator whose modes run on `clock`."""
    with KentikSimulator(email=EMAIL, token=TOKEN, clock=clock) as simulator:
        yield simulator


def statuses_of(sim: KentikSimulator, count: int, **kwargs: Any) -> list[int]:
    return [post_chart(sim, chart_body(), **kwargs).status_code for _ in range(count)]


def test_rate_limit_answers_429_with_retry_after_past_n_calls(
    clocked: KentikSimulator, clock: FakeClock
) -> None:
    clocked.set_rate_limit(3)
    accepted = []
    for _ in range(3):
        accepted.append(post_chart(clocked, chart_body()).status_code)
        clock.advance(10)

    refused = post_chart(clocked, chart_body())

    assert accepted == [200, 200, 200]
    assert refused.status_code == 429
    # The first call, 30 s ago, leaves the window in 30 s.
    assert refused.headers["Retry-After"] == "30"
    assert refused.headers["Content-Type"] == "application/json"
    assert "rate limit of 3 calls per minute" in refused.json()["error"]


def test_rate_limit_window_slides_and_refused_calls_do_not_count(
    clocked: KentikSimulator, clock: FakeClock
) -> None:
    clocked.set_rate_limit(2)
    assert statuses_of(clocked, 2) == [200, 200]
    clock.advance(59.5)
    # Refused again and again: none of these take a place in the window.
    assert statuses_of(clocked, 5) == [429] * 5

    clock.advance(0.5)

    # Both calls of 60 s ago have left; the refused ones never entered.
    assert statuses_of(clocked, 3) == [200, 200, 429]


def test_retry_after_is_whole_seconds_rounded_up_and_at_least_1(
    clocked: KentikSimulator, clock: FakeClock
) -> None:
    clocked.set_rate_limit(1)
    post_chart(clocked, chart_body())

    clock.advance(58.5)
    in_a_second_and_a_half = post_chart(clocked, chart_body()).headers["Retry-After"]
    clock.advance(1.4)
    in_a_tenth = post_chart(clocked, chart_body()).headers["Retry-After"]

    assert (in_a_second_and_a_half, in_a_tenth) == ("2", "1")


def test_rate_limit_counts_per_credentials(open_sim: KentikSimulator) -> None:
    open_sim.set_rate_limit(1)
    alice = {"X-CH-Auth-Email": "alice@example.com", "X-CH-Auth-API-Token": "a"}
    alice_other_token = {"X-CH-Auth-Email": "alice@example.com", "X-CH-Auth-API-Token": "b"}
    bob = {"X-CH-Auth-Email": "bob@example.com", "X-CH-Auth-API-Token": "a"}

    assert statuses_of(open_sim, 2, headers=alice) == [200, 429]
    assert statuses_of(open_sim, 2, headers=alice_other_token) == [200, 429]
    assert statuses_of(open_sim, 2, headers=bob) == [200, 429]


def test_a_limit_set_over_another_keeps_its_window(
    clocked: KentikSimulator, clock: FakeClock
) -> None:
    clocked.set_rate_limit(3)
    for _ in range(3):
        post_chart(clocked, chart_body())
        clock.advance(10)

    clocked.set_rate_limit(4)
    raised = statuses_of(clocked, 2)
    clocked.set_rate_limit(2)
    lowered = post_chart(clocked, chart_body())

    assert raised == [200, 429]
    # 4 calls in the window, made 30, 20, 10 and 0 s ago; 3 must leave for one
    # more to fit: the third, made 10 s ago, leaves in 50 s.
    assert lowered.status_code == 429
    assert lowered.headers["Retry-After"] == "50"


def test_cleared_rate_limit_lets_every_call_through_and_forgets_its_window(
    clocked: KentikSimulator,
) -> None:
    clocked.set_rate_limit(1)
    assert statuses_of(clocked, 2) == [200, 429]

    clocked.clear_rate_limit()
    unlimited = statuses_of(clocked, 3)
    clocked.set_rate_limit(1)

    assert unlimited == [200, 200, 200]
    assert statuses_of(clocked, 2) == [200, 429]


def test_calls_count_answers_by_status_and_by_mode(
    clocked: KentikSimulator, clock: FakeClock
) -> None:
    clocked.set_rate_limit(2)
    statuses_of(clocked, 3)
    post_chart(clocked, chart_body("gif"))
    clocked.set_outage(30, status=503)
    statuses_of(clocked, 2)

    calls = clocked.calls()

    assert calls["total"] == 6
    assert calls["by_status"] == {"200": 2, "429": 2, "503": 2}
    assert (calls["rate_limited"], calls["outage_failures"]) == (2, 2)


def test_rate_limit_is_set_read_and_cleared_over_http(clocked: KentikSimulator) -> None:
    url = control_url(clocked, "/_sim/rate_limit")
    before = requests.get(url, timeout=5).json()

    set_ = requests.post(url, json={"calls_per_minute": 1}, timeout=5)
    limited = statuses_of(clocked, 2)
    read = requests.get(url, timeout=5).json()
    cleared = requests.delete(url, timeout=5)

    assert before == {"rate_limit": None}
    assert (set_.status_code, set_.json()) == (200, {"rate_limit": {"calls_per_minute": 1}})
    assert limited == [200, 429]
    assert read == {"rate_limit": {"calls_per_minute": 1}}
    assert (cleared.status_code, cleared.json()) == (200, {"rate_limit": None})
    assert statuses_of(clocked, 2) == [200, 200]


def test_outage_fails_every_call_then_ends_by_itself(
    clocked: KentikSimulator, clock: FakeClock
) -> None:
    clocked.set_outage(60, status=503, retry_after=10)
    clock.advance(59.9)
    during = post_chart(clocked, chart_body())
    clock.advance(0.1)
    after = post_chart(clocked, chart_body())

    assert during.status_code == 503
    assert during.headers["Retry-After"] == "10"
    assert during.headers["Content-Type"] == "application/json"
    assert "outage" in during.json()["error"]
    assert image_of(after)[0] == "image/png"
    assert clocked.calls()["outage_failures"] == 1


def test_outage_sends_its_message_and_no_retry_after_unless_given(
    clocked: KentikSimulator,
) -> None:
    clocked.set_outage(5, status=502, message="Bad gateway")

    response = post_chart(clocked, chart_body())

    assert (response.status_code, response.json()) == (502, {"error": "Bad gateway"})
    assert "Retry-After" not in response.headers


def test_outage_answers_every_call_and_its_calls_use_up_the_rate_limit(
    clocked: KentikSimulator, clock: FakeClock
) -> None:
    clocked.set_rate_limit(2)
    clocked.set_outage(10)
    # Past the limit too: the outage's status, not a 429.
    during = statuses_of(clocked, 3)
    clock.advance(10)
    after = post_chart(clocked, chart_body())
    clock.advance(50)

    assert during == [503, 503, 503]
    # The first two outage calls, 10 s ago, fill the window; the third did not fit.
    assert after.status_code == 429
    assert after.headers["Retry-After"] == "50"
    assert statuses_of(clocked, 3) == [200, 200, 429]
    assert (clocked.calls()["rate_limited"], clocked.calls()["outage_failures"]) == (2, 3)


def test_outage_answers_at_once_before_any_rule(clocked: KentikSimulator) -> None:
    clocked.add_rule(hang=True)
    clocked.add_rule(status=500)
    clocked.set_outage(10, status=504)

    # A hang rule would hold this call until the timeout.
    response = post_chart(clocked, chart_body(), timeout=30)

    assert response.status_code == 504


def test_outage_is_set_read_and_cleared_over_http(
    clocked: KentikSimulator, clock: FakeClock
) -> None:
    url = control_url(clocked, "/_sim/outage")
    outage = {"seconds": 60, "status": 503, "retry_after": "5", "message": "Down"}

    set_ = requests.post(url, json=outage, timeout=5)
    clock.advance(15)
    read = requests.get(url, timeout=5).json()
    during = post_chart(clocked, chart_body()).status_code
    cleared = requests.delete(url, timeout=5).json()

    expected = {**outage, "seconds": 60.0, "seconds_left": 60.0}
    assert (set_.status_code, set_.json()) == (200, {"outage": expected})
    assert read == {"outage": {**expected, "seconds_left": 45.0}}
    assert during == 503
    assert cleared == {"outage": None}
    assert post_chart(clocked, chart_body()).status_code == 200


def test_an_ended_outage_reads_as_none(clocked: KentikSimulator, clock: FakeClock) -> None:
    clocked.set_outage(1)
    clock.advance(1)

    assert requests.get(control_url(clocked, "/_sim/outage"), timeout=5).json() == {"outage": None}


def test_reset_clears_the_modes(clocked: KentikSimulator) -> None:
    clocked.set_rate_limit(1)
    clocked.set_outage(60)

    clocked.reset()

    assert statuses_of(clocked, 3) == [200, 200, 200]
    assert clocked.calls()["by_status"] == {"200": 3}


@pytest.mark.parametrize(
    "rate_limit",
    [
        {},
        {"calls_per_minute": 0},
        {"calls_per_minute": -1},
        {"calls_per_minute": 1.5},
        {"calls_per_minute": "30"},
        {"calls_per_minute": True},
        {"calls_per_minute": None},
        {"calls_per_minute": 10**7},
        {"calls_per_minute": 30, "window": 10},
    ],
)
def test_invalid_rate_limits_are_refused(sim: KentikSimulator, rate_limit: dict[str, Any]) -> None:
    # A missing or unknown field is Python's own TypeError here.
    with pytest.raises((RuleError, TypeError)):
        sim.set_rate_limit(**rate_limit)

    response = requests.post(control_url(sim, "/_sim/rate_limit"), json=rate_limit, timeout=5)

    assert response.status_code == 400
    assert response.json()["error"]
    assert sim.calls()["rate_limited"] == 0
    assert requests.get(control_url(sim, "/_sim/rate_limit"), timeout=5).json() == {
        "rate_limit": None
    }


@pytest.mark.parametrize(
    "outage",
    [
        {},
        {"seconds": 0},
        {"seconds": -5},
        {"seconds": 86401},
        {"seconds": "60"},
        {"seconds": True},
        {"seconds": 60, "status": 200},
        {"seconds": 60, "status": 600},
        {"seconds": 60, "status": "503"},
        {"seconds": 60, "retry_after": "1\r\nX-Evil: 1"},
        {"seconds": 60, "retry_after": "\u00e9t\u00e9 \u2603"},
        {"seconds": 60, "retry_after": [1]},
        {"seconds": 60, "message": 7},
        {"seconds": 60, "until": 5},
    ],
)
def test_invalid_outages_are_refused(sim: KentikSimulator, outage: dict[str, Any]) -> None:
    # A missing or unknown field is Python's own TypeError here.
    with pytest.raises((RuleError, TypeError)):
        sim.set_outage(**outage)

    response = requests.post(control_url(sim, "/_sim/outage"), json=outage, timeout=5)

    assert response.status_code == 400
    assert response.json()["error"]
    assert post_chart(sim, chart_body()).status_code == 200


@pytest.mark.parametrize("path", ["/_sim/rate_limit", "/_sim/outage"])
@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b"30",
        b"null",
        b"{not json",
        b"\xff\xfe",
        b'{"seconds": NaN, "calls_per_minute": Infinity}',
        b'{"seconds": 1e999, "calls_per_minute": 1e999}',
        b'{"seconds": ' + b"9" * 5000 + b"}",
        b'{"calls_per_minute": 1' + b"0" * 5000 + b"}",
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_hostile_mode_bodies_get_400_and_leave_the_simulator_serving(
    sim: KentikSimulator, path: str, body: bytes
) -> None:
    response = requests.post(
        control_url(sim, path),
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=5,
    )

    assert response.status_code == 400
    assert response.json()["error"]
    assert post_chart(sim, chart_body()).status_code == 200


# ---------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_cli_prints_its_url_serves_charts_and_exits_0_on_signal(
    stop_signal: signal.Signals,
) -> None:
    command = [sys.executable, "-m", "imagecache.simulator", "--port", "0"]
    command += ["--email", EMAIL, "--token", TOKEN]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    try:
        ready, _, _ = select.select([process.stdout], [], [], 15)
        assert ready, "the simulator printed nothing within 15 s"
        line = process.stdout.readline()
        match = re.fullmatch(
            r"Kentik simulator listening on (http://127\.0\.0\.1:(\d+)/api/v5)\n", line
        )
        assert match is not None, line
        url = match.group(1)

        response = requests.post(
            f"{url}/query/topXchart", json=chart_body(), headers=HEADERS, timeout=5
        )
        rules = requests.post(
            url.replace("/api/v5", "/_sim/rules"), json={"status": 429}, timeout=5
        )

        assert image_of(response)[0] == "image/png"
        assert rules.json() == {"rules": 1}

        process.send_signal(stop_signal)
        assert process.wait(timeout=5) == 0
        _, stderr = process.communicate(timeout=5)
        assert stderr == "", "nothing is logged per request without --verbose"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_same_query_gives_same_chart_in_every_process(sim: KentikSimulator) -> None:
    """The chart's data comes from the query alone, not from the process or the clock."""
    body = chart_body("svg", query_title="Across processes")
    script = (
        "import json, sys; from imagecache.simulator.render import render_chart; "
        "sys.stdout.buffer.write(render_chart(json.loads(sys.argv[1]))[1])"
    )
    other = subprocess.run(
        [sys.executable, "-c", script, json.dumps(copy.deepcopy(body))],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=30,
    )

    assert other.stdout == image_of(post_chart(sim, body))[1]


def test_cli_sets_the_rate_limit_and_refuses_a_bad_one() -> None:
    command = [sys.executable, "-m", "imagecache.simulator", "--port", "0", "--rate-limit", "1"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    try:
        ready, _, _ = select.select([process.stdout], [], [], 15)
        assert ready, "the simulator printed nothing within 15 s"
        url = process.stdout.readline().rsplit(" ", 1)[1].strip()

        statuses = [
            requests.post(
                f"{url}/query/topXchart", json=chart_body(), headers=HEADERS, timeout=5
            ).status_code
            for _ in range(2)
        ]

        assert statuses == [200, 429]
    finally:
        process.terminate()
        process.wait(timeout=5)

    refused = subprocess.run(
        [sys.executable, "-m", "imagecache.simulator", "--rate-limit", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 2
    assert "--rate-limit: 'calls_per_minute' must be an integer" in refused.stderr
