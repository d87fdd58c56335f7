"""The web server's edges, against the real gunicorn:
- slow clients: connections that send their request a byte at a time hold no
  thread, so everyone else is still answered, and each is answered 408 once
  WEB_HEADER_TIMEOUT has passed (config/web_worker.py);
- chunked request bodies reach the API, under the same bound (config/chunked.py);
- with WEB_WORKER=gthread (gunicorn's own worker, for a buffering proxy in
  front), the service works as with its own worker.
"""

import json
import socket
from collections.abc import Iterator

import pytest
import requests

from imagecache.simulator.server import KentikSimulator
from imagecache.wire import BODY_LIMIT
from tests.harness.data import unique_query
from tests.harness.service import Service
from tests.harness.slow import trickling

pytestmark = pytest.mark.e2e

SLOW = 300
# One worker of 8 threads: before the fix, 300 slow clients held all 8 for as
# long as they trickled, whichever worker the kernel gave them to.
THREADS = 8
HEADER_TIMEOUT = 5


@pytest.fixture(scope="module")
def slow_service(
    simulator: KentikSimulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    workdir = tmp_path_factory.mktemp("slow")
    env = {"WEB_CONCURRENCY": 1, "WEB_THREADS": THREADS, "WEB_HEADER_TIMEOUT": HEADER_TIMEOUT}
    with Service(workdir, simulator.url, **env) as service:
        yield service


def test_slow_clients_hold_no_thread_and_are_answered_408(slow_service):
    with trickling(slow_service.port, SLOW) as slow:
        assert requests.get(f"{slow_service.url}/healthz", timeout=10).status_code == 200
        entry_id = slow_service.post(unique_query("slow clients"))
        image = slow_service.get_image(entry_id, timeout=30)
        assert image.status_code == 200, image.text
        assert image.headers["Content-Type"] == "image/png"
        assert requests.get(f"{slow_service.url}/image/{entry_id}", timeout=10).status_code == 200

        for sock in (slow[0], slow[-1]):
            sock.settimeout(HEADER_TIMEOUT + 30)
            answer = sock.recv(4096)
            assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
            assert b'"status": 408' in answer
            assert f"did not arrive within {HEADER_TIMEOUT} s".encode() in answer


def test_a_request_sent_in_pieces_quickly_is_served(slow_service):
    body = b'{"api_query": {"queries": [], "imageType": "png"}}'
    head = (
        b"POST /requests HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    )
    with socket.create_connection(("127.0.0.1", slow_service.port), timeout=10) as sock:
        for piece in (head[:10], head[10:], body[:5], body[5:]):
            sock.sendall(piece)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer
    assert b'"id":' in answer


def chunks(body: bytes, size: int) -> Iterator[bytes]:
    """What requests sends with Transfer-Encoding: chunked, `size` bytes a chunk."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def test_chunked_request_body_is_read(slow_service):
    body = json.dumps({"api_query": unique_query("chunked"), "ttl": 120}).encode()
    response = requests.post(f"{slow_service.url}/requests", data=chunks(body, 100), timeout=10)
    assert response.request.headers["Transfer-Encoding"] == "chunked"
    assert response.status_code == 200, response.text
    image = slow_service.get_image(response.json()["id"], timeout=30)
    assert image.status_code == 200, image.text


def test_chunked_request_body_over_the_bound_is_413(slow_service):
    query = unique_query("chunked and large")
    query["padding"] = "x" * BODY_LIMIT
    body = json.dumps({"api_query": query}).encode()
    response = requests.post(f"{slow_service.url}/requests", data=chunks(body, 65536), timeout=10)
    assert response.status_code == 413, response.text
    assert response.json() == {
        "error": f"The request body is larger than {BODY_LIMIT} bytes.",
        "status": 413,
    }


@pytest.fixture(scope="module")
def gthread_service(
    simulator: KentikSimulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    workdir = tmp_path_factory.mktemp("gthread")
    with Service(workdir, simulator.url, WEB_WORKER="gthread", WEB_CONCURRENCY=1) as service:
        yield service


def test_with_gunicorns_gthread_worker_the_service_posts_serves_and_reports(gthread_service):
    assert "Using worker: gthread" in gthread_service.log_path.read_text(errors="replace")
    entry_id = gthread_service.post(unique_query("gthread"))
    image = gthread_service.get_image(entry_id, timeout=30)
    assert image.status_code == 200, image.text
    assert image.headers["Content-Type"] == "image/png"
    # Again, once ready: the app's own fast path for ready images answers it.
    again = requests.get(f"{gthread_service.url}/image/{entry_id}", timeout=10)
    assert (again.status_code, again.content) == (200, image.content)
    info = requests.get(f"{gthread_service.url}/info", timeout=10)
    assert info.status_code == 200, info.text
    assert entry_id in info.text
