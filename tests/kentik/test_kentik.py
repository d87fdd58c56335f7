"""The Kentik seam against a real HTTP stand-in: the bundled simulator on loopback.

No database and no mocks: `kentik.fetch_chart` talks HTTP to a KentikSimulator
started per test, configured through Django settings.
"""

import base64
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
import urllib3
from kentik_api.public.errors import TimedOutError
from prometheus_client import REGISTRY

from imagecache import kentik
from imagecache.api import examples
from imagecache.simulator.render import render_chart
from imagecache.simulator.server import KentikSimulator
from tests.harness.service import free_port

EMAIL = "tests@example.com"
TOKEN = "kentik-t0ken-that-must-stay-secret"


def chart_query(image_type: str = "png", **query: Any) -> dict[str, Any]:
    """A topXchart body like the ones clients send, nulls included."""
    return examples.chart_query(image_type=image_type, **query)


def fetch_error(query: dict[str, Any]) -> kentik.KentikError:
    """The KentikError a fetch raises; whatever it says, it never carries the token."""
    with pytest.raises(kentik.KentikError) as raised:
        kentik.fetch_chart(json.dumps(query))
    assert TOKEN not in raised.value.message
    assert TOKEN not in str(raised.value)
    return raised.value


def header(headers: dict[str, str], name: str) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == name.lower()), None)


@pytest.fixture
def sim(settings) -> Iterator[KentikSimulator]:
    """A simulator that accepts only EMAIL and TOKEN, with the seam pointed at it."""
    settings.KT_AUTH_EMAIL = EMAIL
    settings.KT_AUTH_TOKEN = TOKEN
    settings.KENTIK_API_TIMEOUT = 0.5
    settings.KENTIK_API_RETRIES = 2
    settings.KENTIK_API_BACKOFF = 0.01
    settings.KENTIK_RETRY_AFTER_MAX = 5.0
    with KentikSimulator(email=EMAIL, token=TOKEN) as simulator:
        settings.KENTIK_API_URL = simulator.url
        yield simulator


# ------------------------------------------------------------------------ success


@pytest.mark.parametrize(
    ("image_type", "media_type"),
    [
        ("png", "image/png"),
        ("jpg", "image/jpeg"),
        ("svg", "image/svg+xml"),
        ("pdf", "application/pdf"),
    ],
)
def test_chart_has_the_media_type_and_exact_bytes_kentik_sent(sim, image_type, media_type):
    query = chart_query(image_type)

    chart = kentik.fetch_chart(json.dumps(query))

    expected_type, expected_bytes = render_chart(query)
    assert chart.media_type == media_type == expected_type
    assert chart.data == expected_bytes
    assert sim.calls()["total"] == 1


def test_query_reaches_kentik_with_nulls_and_key_order_unchanged(sim):
    query_json = json.dumps(
        {
            "zeta": None,
            "imageType": "png",
            "queries": [{"query": {"metric": "bytes", "filters_obj": None, "aggs": None}}],
            "alpha": {"y": None, "b": 1},
        }
    )

    kentik.fetch_chart(query_json)

    sent = sim.calls()["last_bodies"][-1]
    assert json.loads(sent, object_pairs_hook=list) == json.loads(
        query_json, object_pairs_hook=list
    )


def test_auth_headers_and_json_content_type_are_sent(sim):
    kentik.fetch_chart(json.dumps(chart_query()))

    sent = sim.calls()["last_headers"][-1]
    assert header(sent, "X-CH-Auth-Email") == EMAIL
    # The simulator masks the token it received; that it answered 200 proves it was right.
    assert header(sent, "X-CH-Auth-API-Token") == "***"
    assert header(sent, "Content-Type") == "application/json"


# ------------------------------------------------------------- Kentik's own errors


def test_bad_query_is_400_with_kentiks_message(sim):
    query = chart_query()
    del query["imageType"]

    error = fetch_error(query)

    assert error.status == 400
    assert error.message.startswith("Request body has no 'imageType'")
    assert sim.calls()["total"] == 1


def test_400_keeps_the_message_of_a_json_error_body(sim):
    sim.add_rule(status=400, message="Invalid dimension: nope")

    error = fetch_error(chart_query())

    assert (error.status, error.message) == (400, "Invalid dimension: nope")


def test_400_keeps_a_plain_text_error_body(sim):
    sim.add_rule(status=400, body="Bad query:\n  metric unknown\n", content_type="text/plain")

    error = fetch_error(chart_query())

    assert (error.status, error.message) == (400, "Bad query: metric unknown")


def test_wrong_token_is_401_logged_naming_the_settings_but_no_credential(sim, settings, caplog):
    caplog.set_level(logging.DEBUG)
    wrong_token = "wrong-t0ken-also-secret"
    settings.KT_AUTH_TOKEN = wrong_token

    error = fetch_error(chart_query())

    assert error.status == 401
    assert wrong_token not in error.message
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == kentik.__name__]
    assert len(errors) == 1
    assert "KT_AUTH_EMAIL" in errors[0].getMessage()
    assert "KT_AUTH_TOKEN" in errors[0].getMessage()
    assert "401" in errors[0].getMessage()
    # At any level, from any logger: neither token, nor (since c4238ed) the email.
    assert wrong_token not in caplog.text
    assert TOKEN not in caplog.text
    assert EMAIL not in caplog.text
    assert sim.calls()["total"] == 1, "a refused credential is not retried"


@pytest.mark.parametrize("retries", [0, 2])
def test_429_is_not_retried_but_raised_with_its_retry_after(sim, settings, retries):
    # Kentik's "slow down" is for the whole deployment to wait out
    # (services.shield), not for this fetch to retry on its own.
    settings.KENTIK_API_RETRIES = retries
    sim.add_rule(status=429, message="Rate limit exceeded", retry_after="7")

    error = fetch_error(chart_query())

    assert isinstance(error, kentik.RateLimited)
    assert (error.status, error.message, error.retry_after) == (429, "Rate limit exceeded", 7.0)
    assert error.transient
    assert sim.calls()["total"] == 1


def test_503_with_retry_after_is_a_slow_down_too(sim):
    sim.add_rule(status=503, message="Maintenance", retry_after="100")

    error = fetch_error(chart_query())

    assert isinstance(error, kentik.RateLimited)
    assert (error.status, error.retry_after) == (503, 100.0)
    assert sim.calls()["total"] == 1


@pytest.mark.parametrize("retry_after", ["soon-ish", "-"])
def test_garbled_retry_after_is_a_slow_down_without_a_time(sim, retry_after):
    sim.add_rule(status=429, message="Slow down", retry_after=retry_after)

    error = fetch_error(chart_query())

    assert isinstance(error, kentik.RateLimited)
    assert error.retry_after is None


@pytest.mark.parametrize("status", [502, 503, 504])
def test_other_retried_statuses_keep_their_status_once_retries_run_out(sim, status):
    sim.add_rule(status=status, message=f"Upstream {status}")

    error = fetch_error(chart_query())

    assert (error.status, error.message) == (status, f"Upstream {status}")
    assert sim.calls()["total"] == 3


def test_503_then_success_recovers(sim):
    sim.add_rule(status=503, message="Busy", times=1)
    query = chart_query()

    chart = kentik.fetch_chart(json.dumps(query))

    assert chart.data == render_chart(query)[1]
    assert sim.calls()["total"] == 2


@pytest.mark.parametrize("status", [500, 404, 403])
def test_statuses_outside_the_retry_list_are_not_retried(sim, status):
    sim.add_rule(status=status, message=f"Kentik says {status}")

    error = fetch_error(chart_query())

    assert (error.status, error.message) == (status, f"Kentik says {status}")
    assert sim.calls()["total"] == 1


def test_error_body_without_a_message_says_so(sim):
    sim.add_rule(status=500, body="", content_type="text/plain")

    error = fetch_error(chart_query())

    assert (error.status, error.message) == (500, "Kentik answered 500 with no message")


def test_long_kentik_message_is_shortened(sim):
    sim.add_rule(status=400, message="x" * 5000)

    error = fetch_error(chart_query())

    assert len(error.message) == kentik.MESSAGE_LIMIT
    assert error.message.endswith("…")


# --------------------------------------------------------------------- Retry-After


def test_the_gate_is_asked_before_each_retry_and_may_withhold_it(sim, settings):
    settings.KENTIK_API_RETRIES = 3
    sim.add_rule(status=502, message="Bad gateway")
    asked = []

    def gate() -> None:
        asked.append(sim.calls()["total"])
        if len(asked) == 2:
            raise kentik.CallWithheld("paused")

    with pytest.raises(kentik.CallWithheld):
        kentik.fetch_chart(json.dumps(chart_query()), gate=gate)

    # Asked after the first call and after the second; the third never went.
    assert asked == [1, 2]
    assert sim.calls()["total"] == 2


def test_retries_none_makes_one_attempt(sim, settings):
    settings.KENTIK_API_RETRIES = 3
    sim.add_rule(status=503, message="Busy")

    with pytest.raises(kentik.KentikError) as caught:
        kentik.fetch_chart(json.dumps(chart_query()), retries=0)

    assert (caught.value.status, caught.value.transient) == (503, True)
    assert sim.calls()["total"] == 1


def test_each_attempt_is_counted_by_its_status(sim):
    sim.add_rule(status=502, message="Bad gateway", times=1)
    before = REGISTRY.get_sample_value("imagecache_kentik_attempts_total", {"status": "502"}) or 0
    ok = REGISTRY.get_sample_value("imagecache_kentik_attempts_total", {"status": "200"}) or 0

    kentik.fetch_chart(json.dumps(chart_query()))

    assert (
        REGISTRY.get_sample_value("imagecache_kentik_attempts_total", {"status": "502"})
        == before + 1
    )
    assert (
        REGISTRY.get_sample_value("imagecache_kentik_attempts_total", {"status": "200"}) == ok + 1
    )


def test_refusals_are_not_transient_and_kentik_failures_are(sim):
    sim.add_rule(status=400, message="Bad", times=1)
    assert not fetch_error(chart_query()).transient
    sim.add_rule(status=500, message="Oops", times=3)
    assert fetch_error(chart_query()).transient


@pytest.mark.parametrize(
    ("status", "deployment"), [(500, False), (502, True), (503, True), (504, False)]
)
def test_a_gateway_failure_speaks_of_the_deployment_and_a_failed_render_of_the_query(
    sim, status, deployment
):
    sim.add_rule(status=status, message="No")

    error = fetch_error(chart_query())

    assert (error.status, error.transient, error.deployment) == (status, True, deployment)


# ----------------------------------------------------------------- transport errors


def test_kentik_that_never_answers_is_504_naming_the_timeout(sim, settings):
    settings.KENTIK_API_TIMEOUT = 0.3
    settings.KENTIK_API_RETRIES = 1
    sim.add_rule(hang=True)

    started = time.monotonic()
    error = fetch_error(chart_query())

    assert error.status == 504
    assert error.message == "Kentik did not answer within 0.3 s"
    assert sim.calls()["total"] == 2, "a read timeout is retried like any other attempt"
    assert time.monotonic() - started < 3
    # Kentik took the query and did not render it in time: this query's failure.
    assert (error.transient, error.deployment) == (True, False)


def test_closed_port_is_502_could_not_be_reached(settings):
    settings.KT_AUTH_EMAIL = EMAIL
    settings.KT_AUTH_TOKEN = TOKEN
    settings.KENTIK_API_URL = f"http://127.0.0.1:{free_port()}/api/v5"
    settings.KENTIK_API_TIMEOUT = 0.5
    settings.KENTIK_API_RETRIES = 1
    settings.KENTIK_API_BACKOFF = 0.01

    error = fetch_error(chart_query())

    assert error.status == 502
    assert "could not be reached" in error.message
    assert (error.transient, error.deployment) == (True, True)


def test_a_connect_timeout_is_kentik_not_reachable_not_a_slow_query():
    timed_out = urllib3.exceptions.ConnectTimeoutError(None, "Connection to kentik timed out")
    pool = urllib3.HTTPConnectionPool("kentik.example", 443)
    retried = urllib3.exceptions.MaxRetryError(pool, "/api/v5/query/topXchart", timed_out)
    try:
        try:
            raise requests.ConnectTimeout(retried)
        except requests.ConnectTimeout as exc:
            raise TimedOutError(str(exc)) from exc
    except TimedOutError as exc:
        error = kentik._transport_error(exc)

    assert (error.status, error.transient, error.deployment) == (502, True, True)
    assert "could not be reached" in error.message


@pytest.mark.parametrize(
    "body",
    [
        "<html>Gateway says hi</html>",
        '{"imageData": "iVBORw0KGgo="}',
        '{"dataUri": "data:image/gif;base64,R0lGODlhAQABAAAAACw="}',
        '{"dataUri": "not a data uri"}',
        '{"dataUri": "data:image/png;utf8,<svg/>"}',
        "[1, 2, 3]",
    ],
    ids=["html", "no-datauri", "unknown-mime", "not-a-uri", "not-base64", "json-list"],
)
def test_unreadable_answer_is_502_could_not_be_read(sim, body):
    sim.add_rule(status=200, body=body)

    error = fetch_error(chart_query())

    assert error.status == 502
    assert "could not be read" in error.message


@pytest.mark.parametrize(
    "asked, answered",
    [("png", "image/svg+xml"), ("jpg", "image/png"), ("pdf", "image/svg+xml")],
)
def test_answer_of_another_media_type_than_asked_for_is_502_naming_both(sim, asked, answered):
    payload = base64.b64encode(b"<svg xmlns='http://www.w3.org/2000/svg'/>").decode()
    sim.add_rule(status=200, body=json.dumps({"dataUri": f"data:{answered};base64,{payload}"}))

    error = fetch_error(chart_query(asked))

    assert error.status == 502
    expected = {"png": "image/png", "jpg": "image/jpeg", "pdf": "application/pdf"}[asked]
    assert error.message == (
        f"Kentik answered {answered} to a query whose imageType '{asked}' is {expected}"
    )


def test_data_uri_whose_payload_is_not_base64_is_502_not_an_empty_chart(sim):
    sim.add_rule(status=200, body='{"dataUri": "data:image/png;base64,!!!!"}')

    error = fetch_error(chart_query())

    assert error.status == 502
    assert "could not be read" in error.message


class _Handler(BaseHTTPRequestHandler):
    """Reads a POST, counts it, and lets the server's `answer` write the reply."""

    server: "_StandIn"
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.posts += 1
        try:
            self.server.answer(self)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client hung up, as a deadline or a size bound makes it

    def log_message(self, format: str, *args: Any) -> None:
        pass


Answer = Callable[[_Handler], None]


class _StandIn(ThreadingHTTPServer):
    """A Kentik stand-in on loopback that answers as a test scripts it."""

    daemon_threads = True

    def __init__(self, answer: Answer) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answer = answer
        self.posts = 0
        self.stopping = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/api/v5"


@pytest.fixture
def stand_in(sim, settings) -> Iterator[Callable[[Answer], _StandIn]]:
    """Starts a stand-in and points the seam at it (the simulator stays up)."""
    running: list[tuple[_StandIn, threading.Thread]] = []

    def start(answer: Answer) -> _StandIn:
        server = _StandIn(answer)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        running.append((server, thread))
        settings.KENTIK_API_URL = server.url
        return server

    yield start
    for server, thread in running:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_redirect_is_not_followed(sim, stand_in):
    def redirect(handler: _Handler) -> None:
        handler.send_response(307)
        handler.send_header("Location", f"{sim.url}/query/topXchart")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    redirector = stand_in(redirect)

    error = fetch_error(chart_query())

    assert error.status == 502
    assert "redirect" in error.message
    assert sim.url in error.message
    assert redirector.posts == 1
    assert sim.calls()["total"] == 0, "the auth headers must not follow a redirect"


CHART_ANSWER = json.dumps(
    {"dataUri": "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" * 8).decode()}
).encode()


def trickled(part: str, seconds: float = 10.0) -> Answer:
    """A valid chart whose headers or body come a byte at a time over `seconds`:
    each read waits far less than the read timeout, the whole far longer."""

    def answer(handler: _Handler) -> None:
        head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(CHART_ANSWER)
        )
        slow = head if part == "headers" else CHART_ANSWER
        if part == "body":
            handler.wfile.write(head)
        for i in range(len(slow)):
            if handler.server.stopping.wait(seconds / len(slow)):
                return
            handler.wfile.write(slow[i : i + 1])
        if part == "headers":
            handler.wfile.write(CHART_ANSWER)

    return answer


@pytest.mark.parametrize("part", ["headers", "body"])
def test_answer_trickled_past_the_timeout_is_504_within_the_deadline(settings, stand_in, part):
    settings.KENTIK_API_TIMEOUT = 0.5
    settings.KENTIK_API_RETRIES = 1
    kentik_stand_in = stand_in(trickled(part))

    error = fetch_error(chart_query())

    assert error.status == 504
    assert error.message == "Kentik did not answer within 0.5 s"
    # Each attempt was cut off at its deadline: the whole trickle (10 s) would
    # have been a valid chart. A trickle of headers is a read timeout, which
    # is retried; one of the body is not.
    assert kentik_stand_in.posts == (2 if part == "headers" else 1)


def test_answer_declared_larger_than_kentik_max_bytes_is_502_unread(settings, stand_in):
    settings.KENTIK_MAX_BYTES = 4096

    def huge(handler: _Handler) -> None:
        handler.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n{")
        handler.server.stopping.wait(30)

    stand_in(huge)

    error = fetch_error(chart_query())

    assert error.status == 502
    assert error.message == (
        "Kentik's answer is 1000000000 bytes: larger than KENTIK_MAX_BYTES (4096 bytes)"
    )


def test_answer_streamed_past_kentik_max_bytes_is_cut_off_at_it(settings, stand_in):
    settings.KENTIK_MAX_BYTES = 1024 * 1024
    settings.KENTIK_API_TIMEOUT = 30

    def streamed(handler: _Handler) -> None:
        # No Content-Length: the body ends when the connection does, 16 MiB on.
        handler.wfile.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        handler.wfile.write(b'{"dataUri": "data:image/png;base64,')
        for _ in range(256):
            handler.wfile.write(b"A" * 65536)
        handler.wfile.write(b'"}')

    stand_in(streamed)

    error = fetch_error(chart_query())

    assert error.status == 502
    assert error.message == (
        "Kentik's answer is over 1048576 bytes: larger than KENTIK_MAX_BYTES (1048576 bytes)"
    )


def test_token_echoed_by_kentik_is_not_repeated_in_the_error(sim):
    sim.add_rule(status=403, message=f"API token {TOKEN} is not allowed for this query")

    error = fetch_error(chart_query())

    assert error.status == 403


# ------------------------------------------------------------------------ settings


def test_changed_settings_take_effect_without_a_restart(sim, settings):
    kentik.fetch_chart(json.dumps(chart_query()))
    settings.KT_AUTH_TOKEN = "rotated-token"

    error = fetch_error(chart_query())

    assert error.status == 401
