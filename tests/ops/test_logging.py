"""Logs: JSON lines on demand, a line per request and per fetch, and never a
Kentik credential, whatever carries it."""

import io
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from gunicorn.glogging import SafeAtoms

from imagecache import kentik
from imagecache.models import Fetch
from imagecache.ops import request_ids
from imagecache.ops.log import AccessFields, JSONFormatter, RedactSecrets
from imagecache.ops.request_ids import RequestIdFilter
from imagecache.services import fetching
from imagecache.services.entries import entry_create
from tests.harness.data import QUERY
from tests.harness.service import ROOT


@pytest.fixture
def output() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger whose handler is built as settings.LOGGING builds the console
    one with LOG_FORMAT=json: the redacting filter, the JSON formatter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecrets())
    handler.setFormatter(JSONFormatter())
    logger = logging.getLogger("tests.logging")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_line_has_time_level_logger_message_and_extra_fields(output):
    logger, stream = output
    logger.info("fetch %s: ready", 12, extra={"fetch_id": 12, "duration_ms": 20.5})
    [line] = lines(stream)
    assert line["level"] == "INFO"
    assert line["logger"] == "tests.logging"
    assert line["message"] == "fetch 12: ready"
    assert (line["fetch_id"], line["duration_ms"]) == (12, 20.5)
    assert line["time"].endswith("+00:00")
    assert line["process"] == os.getpid()


def test_json_line_carries_the_traceback(output):
    logger, stream = output
    try:
        raise ValueError("broken")
    except ValueError:
        logger.exception("it failed")
    [line] = lines(stream)
    assert line["message"] == "it failed"
    assert "ValueError: broken" in line["exception"]


def test_credentials_are_redacted_from_message_arguments_extra_and_traceback(output, settings):
    logger, stream = output
    token, email = settings.KT_AUTH_TOKEN, settings.KT_AUTH_EMAIL
    logger.warning(f"headers {email} {token}")
    header = f"X-CH-Auth-API-Token: {token}"
    logger.warning("token %s for %s", token, email, extra={"header": header})
    try:
        raise RuntimeError(f"the server echoed {token}")
    except RuntimeError:
        logger.exception("call failed")
    text = stream.getvalue()
    assert token not in text
    assert email not in text
    first, second, third = lines(stream)
    assert first["message"] == "headers *** ***"
    assert second["message"] == "token *** for ***"
    assert second["header"] == "X-CH-Auth-API-Token: ***"
    assert "the server echoed ***" in third["exception"]


def test_redaction_applies_to_the_plain_format_too(settings):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecrets())
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    token = settings.KT_AUTH_TOKEN
    record = logging.LogRecord("x", logging.ERROR, "", 0, "auth %s", (token,), None)
    handler.handle(record)
    assert stream.getvalue() == "ERROR auth ***\n"


def start(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KT_", "LOG_"))}
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings.local", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_log_format_json_switches_the_console_to_json_lines_without_the_token():
    result = start(
        "import logging; from django.conf import settings; "
        "logging.getLogger('imagecache.x').warning('calling with %s', settings.KT_AUTH_TOKEN)",
        LOG_FORMAT="json",
        KT_AUTH_EMAIL="ops@example.com",
        KT_AUTH_TOKEN="tok-0123456789abcdef",
    )
    assert result.returncode == 0, result.stderr
    [line] = [json.loads(line) for line in result.stderr.splitlines()]
    assert (line["level"], line["logger"], line["message"]) == (
        "WARNING",
        "imagecache.x",
        "calling with ***",
    )
    assert "tok-0123456789abcdef" not in result.stderr


def test_plain_is_the_default_format_and_is_redacted_too():
    result = start(
        "import logging; logging.getLogger('imagecache.x').warning('tok-0123456789abcdef')",
        KT_AUTH_EMAIL="ops@example.com",
        KT_AUTH_TOKEN="tok-0123456789abcdef",
    )
    assert result.returncode == 0, result.stderr
    # "<date> <time> WARNING imagecache.x <pid> ***"
    [line] = result.stderr.splitlines()
    assert line.split()[2:4] == ["WARNING", "imagecache.x"]
    assert line.endswith(" ***")


def test_unknown_log_format_stops_start_up_naming_the_variable():
    result = start("pass", LOG_FORMAT="xml")
    assert result.returncode != 0
    assert "LOG_FORMAT" in result.stderr.splitlines()[-1]


@pytest.mark.django_db
def test_one_line_per_request_with_method_path_status_duration_and_entry_id(client, caplog):
    entry_id = "0" * 64 + "_1700000000.5"
    with caplog.at_level(logging.DEBUG, logger="imagecache.requests"):
        client.get(f"/image/{entry_id}")
        client.get("/healthz")
    image, healthz = [r for r in caplog.records if r.name == "imagecache.requests"]
    assert image.levelno == logging.INFO
    assert image.getMessage().startswith(f"GET /image/{entry_id} 404 ")
    assert (image.method, image.path, image.status) == ("GET", f"/image/{entry_id}", 404)
    assert image.entry_id == entry_id
    assert image.duration_ms >= 0
    # Probes come every few seconds: DEBUG, not INFO.
    assert healthz.levelno == logging.DEBUG
    assert not hasattr(healthz, "entry_id")


@pytest.mark.django_db
def test_one_line_per_fetch_with_its_outcome_status_and_duration(fetch_chart, caplog):
    ready = entry_create(api_query=QUERY)
    fetch_chart.side_effect = [
        kentik.Chart(media_type="image/png", data=b"png"),
        kentik.KentikError(503, "down for maintenance"),
    ]
    failing = entry_create(api_query={**QUERY, "imageType": "svg"})
    with caplog.at_level(logging.INFO, logger=fetching.__name__):
        fetching.fetch_run(fetch_id=ready.fetch_id)
        fetching.fetch_run(fetch_id=failing.fetch_id)
    records = [r for r in caplog.records if hasattr(r, "outcome")]
    assert [(r.fetch_id, r.outcome, r.status) for r in records] == [
        (ready.fetch_id, "ready", 200),
        (failing.fetch_id, "failed", 503),
    ]
    assert records[1].levelno == logging.WARNING
    assert "down for maintenance" in records[1].getMessage()
    assert all(r.duration_ms >= 0 for r in records)


@pytest.mark.django_db
def test_an_answer_the_service_chose_is_logged_once_and_not_as_an_error(client, settings, caplog):
    settings.ENTRY_WAIT_TIMEOUT = 0
    entry = entry_create(api_query=QUERY)  # pending: its task is never enqueued here
    with caplog.at_level(logging.INFO):
        response = client.get(f"/image/{entry.id}")
        missing = client.get(f"/image/{'0' * 64}_4070908800")
    assert (response.status_code, missing.status_code) == (500, 404)
    logged = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    assert [r for r in logged if r[0] == "django.request"] == []
    assert ("imagecache.requests", "WARNING") in {(name, level) for name, level, _ in logged}
    assert len([r for r in logged if r[0] == "imagecache.requests"]) == 2


# --- Request ids ---------------------------------------------------------------

HOSTILE_REQUEST_IDS = {
    "newlines": "abc\r\nX-Injected: 1",
    "10 kB": "a" * 10_000,
    "quotes": "\"abc'<script>",
    "empty": "",
}


@pytest.fixture
def json_root() -> Iterator[io.StringIO]:
    """The root logger's lines as the console writes them with LOG_FORMAT=json."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.addFilter(RedactSecrets())
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.mark.django_db
def test_the_proxys_request_id_is_on_the_answer_each_line_and_the_fetch(
    client, json_root, fetch_chart
):
    response = client.post(
        "/requests",
        {"api_query": QUERY},
        content_type="application/json",
        headers={"X-Request-ID": "proxy-42"},
    )
    assert response.status_code == 200, response.content
    assert response.headers["X-Request-ID"] == "proxy-42"
    logged = [line for line in lines(json_root) if line["logger"].startswith("imagecache")]
    assert logged
    assert {line.get("request_id") for line in logged} == {"proxy-42"}
    assert Fetch.objects.get().request_id == "proxy-42"


@pytest.mark.django_db
def test_a_request_without_an_id_gets_a_new_one_on_its_answer_and_lines(client, json_root):
    first = client.get("/info")
    second = client.get("/info")
    made = first.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    assert second.headers["X-Request-ID"] != made
    assert [line["request_id"] for line in lines(json_root)] == [
        made,
        second.headers["X-Request-ID"],
    ]


@pytest.mark.parametrize("offered", HOSTILE_REQUEST_IDS.values(), ids=HOSTILE_REQUEST_IDS.keys())
def test_a_hostile_request_id_is_replaced(offered):
    made = request_ids.request_id_accept(offered)
    assert re.fullmatch(r"[0-9a-f]{32}", made)


@pytest.mark.django_db
def test_a_hostile_request_id_is_replaced_on_the_answer(client):
    # The test client passes any header value; a real server refuses a newline.
    response = client.get("/info", headers={"X-Request-ID": HOSTILE_REQUEST_IDS["10 kB"]})
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])


@pytest.mark.django_db
def test_the_fetchs_lines_carry_the_id_of_the_request_that_started_it(fetch_chart, json_root):
    with request_ids.request_id_bound("post-7"):
        entry = entry_create(api_query=QUERY)
    fetching.fetch_run(fetch_id=entry.fetch_id)
    logged = [line for line in lines(json_root) if line["logger"] == fetching.__name__]
    assert logged
    assert {line.get("request_id") for line in logged} == {"post-7"}


def test_gunicorns_access_atoms_become_fields_of_the_line():
    atoms = SafeAtoms(
        {
            "h": "10.0.0.1",
            "m": "GET",
            "U": "/info",
            "s": "200",
            "B": 12,
            "M": 3,
            "a": "curl",
            "{x-request-id}o": "abc",
        }
    )
    record = logging.LogRecord(
        "gunicorn.access", logging.INFO, "", 0, '%(h)s "%(r)s"', (atoms,), None
    )
    assert AccessFields().filter(record)
    line = json.loads(JSONFormatter().format(record))
    assert (line["method"], line["path"], line["status"], line["request_id"]) == (
        "GET",
        "/info",
        200,
        "abc",
    )
