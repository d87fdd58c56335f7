"""Logs their tools read, from the real processes: with LOG_FORMAT=json every
line gunicorn writes is a JSON object (its access lines with the request's
id), and the worker's lines about a fetch carry the id of the POST that
started it."""

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from imagecache.services import fetching
from imagecache.simulator.server import KentikSimulator
from tests.harness.data import unique_query
from tests.harness.service import Service, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def json_service(
    simulator: KentikSimulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    with Service(
        tmp_path_factory.mktemp("logs"),
        simulator.url,
        LOG_FORMAT="json",
        WEB_ACCESS_LOG=1,
        WEB_CONCURRENCY=1,
        Q_WORKERS=1,
        ENTRY_WAIT_TIMEOUT=30,
    ) as service:
        yield service


def json_lines(service: Service) -> list[dict[str, Any]]:
    """The log's JSON objects (manage.py serve's own few lines are not)."""
    found = []
    for line in service.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return found


def raw_get(service: Service, path: str, request_id: bytes) -> bytes:
    """A GET whose X-Request-ID no HTTP client would send."""
    with socket.create_connection(("127.0.0.1", service.port), timeout=30) as sock:
        sock.sendall(
            b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"X-Request-ID: " + request_id + b"\r\nConnection: close\r\n\r\n"
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_gunicorns_lines_are_json_and_every_line_carries_its_requests_id(json_service):
    service = json_service
    posted = requests.post(
        f"{service.url}/requests",
        json={"api_query": unique_query("request ids")},
        headers={"X-Request-ID": "post-e2e-1"},
        timeout=10,
    )
    assert posted.status_code == 200, posted.text
    assert posted.headers["X-Request-ID"] == "post-e2e-1"
    entry_id = posted.json()["id"]
    waited = requests.get(
        f"{service.url}/image/{entry_id}", headers={"X-Request-ID": "get-e2e-2"}, timeout=60
    )
    assert (waited.status_code, waited.headers["X-Request-ID"]) == (200, "get-e2e-2")
    # Ready now: answered by the web worker's fast path, without Django.
    fast = requests.get(
        f"{service.url}/image/{entry_id}", headers={"X-Request-ID": "get-e2e-3"}, timeout=10
    )
    assert (fast.status_code, fast.headers["X-Request-ID"]) == (200, "get-e2e-3")
    made = requests.get(f"{service.url}/image/{entry_id}", timeout=10).headers["X-Request-ID"]
    hostile = raw_get(service, f"/image/{entry_id}", b"\"quoted' <id>")
    assert b"quoted" not in hostile.split(b"\r\n\r\n")[0]

    def fetch_lines() -> list[dict[str, Any]]:
        return [line for line in json_lines(service) if line["logger"] == fetching.__name__]

    # The worker's lines about the fetch carry the POST's id.
    fetched = wait_for(lambda: [line for line in fetch_lines() if "ready" in line["message"]])
    assert {line.get("request_id") for line in fetched} == {"post-e2e-1"}

    def access_ids() -> set[str]:
        return {
            line.get("request_id", "")
            for line in json_lines(service)
            if line["logger"] == "gunicorn.access"
        }

    wait_for(lambda: {"post-e2e-1", "get-e2e-2", "get-e2e-3", made} <= access_ids())
    lines = json_lines(service)
    request_lines = {
        line.get("request_id") for line in lines if line["logger"] == "imagecache.requests"
    }
    assert {"post-e2e-1", "get-e2e-2"} <= request_lines
    assert any(line["logger"] == "gunicorn.error" for line in lines)
    # No line in gunicorn's own plain format ("[date] [pid] [LEVEL] ...").
    log = service.log_path.read_text(errors="replace")
    assert not [line for line in log.splitlines() if "] [INFO] " in line]
