"""Plain requests for ready images, which the web worker answers itself
(config/web_worker.py), against the real gunicorn: the same answer as
gunicorn's own path, on connections that carry other requests too."""

import json
import re
import socket
import time
from collections.abc import Iterator

import pytest

from imagecache.simulator.server import KentikSimulator
from tests.harness.data import unique_query
from tests.harness.service import Service, same_but_max_age, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def service(
    simulator: KentikSimulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """With gunicorn's access log, as `make run` has it."""
    with Service(tmp_path_factory.mktemp("plain"), simulator.url, WEB_ACCESS_LOG=1) as service:
        yield service


@pytest.fixture(scope="module")
def ready(service: Service) -> str:
    entry_id = service.post(unique_query("plain-requests"), ttl=3600)
    assert service.get_image(entry_id).status_code == 200
    # The worker links a ready image for the fast path once its waiters are
    # told, not before: a plain request before the link gets Django's answer.
    wait_for(lambda: (service.workdir / "cache" / "by-id" / entry_id).exists(), timeout=10)
    return entry_id


class Connection:
    """A client connection that keeps what it read past one answer: two
    pipelined answers may come in one read."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.unread = b""

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, size: int) -> bytes:
        if self.unread:
            data, self.unread = self.unread[:size], self.unread[size:]
            return data
        return self.sock.recv(size)


@pytest.fixture
def conn(service: Service) -> Iterator[Connection]:
    with socket.create_connection(("127.0.0.1", service.port), timeout=20) as sock:
        yield Connection(sock)


def plain(method: str, entry_id: str, *fields: str) -> bytes:
    lines = [f"{method} /image/{entry_id} HTTP/1.1", "Host: 127.0.0.1", *fields, "", ""]
    return "\r\n".join(lines).encode()


def answer(conn: Connection, method: str = "GET") -> tuple[bytes, bytes]:
    """One answer read off the connection: its head and its body. What came
    after it stays unread, for the next answer."""
    data = conn.recv(65536)
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, f"closed before the head: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"\r\ncontent-length: (\d+)", head, re.I)
    size = 0 if method == "HEAD" or length is None else int(length.group(1))
    while len(body) < size:
        chunk = conn.recv(65536)
        assert chunk, "closed before the body's end"
        body += chunk
    body, conn.unread = body[:size], body[size:]
    return head, body


def dated(head: bytes) -> bytes:
    """The head without its Date and Cache-Control (a second of the clock may turn between two)."""
    return re.sub(rb"\r\n(Date|Cache-Control): [^\r]+", rb"\r\n\1: -", head)


def cache_control(head: bytes) -> str:
    found = re.search(rb"\r\nCache-Control: ([^\r]+)", head)
    assert found is not None, head
    return found.group(1).decode()


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_the_plain_answer_is_gunicorns(service, ready, conn, method):
    # A field of a proxy's sends the same request through gunicorn's parser.
    asked = time.monotonic()
    # The proxy's request id, so that both answers carry the same one.
    conn.sendall(plain(method, ready, "X-Request-ID: r-1"))
    head, body = answer(conn, method)
    conn.sendall(plain(method, ready, "X-Request-ID: r-1", "X-Forwarded-For: 10.0.0.1"))
    theirs_head, theirs_body = answer(conn, method)
    elapsed = time.monotonic() - asked
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert dated(head) == dated(theirs_head)
    assert same_but_max_age(cache_control(head), cache_control(theirs_head), elapsed)
    assert body == theirs_body
    if method == "GET":
        assert body == service.get_image(ready).content


def test_a_kept_alive_connection_carries_plain_and_other_requests(service, ready, conn):
    image = service.get_image(ready).content
    query = json.dumps({"api_query": unique_query("plain-requests"), "ttl": 3600}).encode()
    post = (
        b"POST /requests HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(query), query)
    )
    conn.sendall(plain("GET", ready))
    assert answer(conn)[1] == image
    conn.sendall(post)
    head, body = answer(conn)
    assert head.startswith(b"HTTP/1.1 201") or head.startswith(b"HTTP/1.1 200"), head
    assert json.loads(body)["id"].split("_")[0] == ready.split("_")[0]
    conn.sendall(plain("GET", ready))
    assert answer(conn)[1] == image
    # Two sent at once (the second is gunicorn's: it is not alone in the buffer).
    conn.sendall(plain("GET", ready) + plain("HEAD", ready, "Connection: close"))
    assert answer(conn)[1] == image
    head, _ = answer(conn, "HEAD")
    assert b"\r\nConnection: close\r\n" in head
    assert conn.recv(1) == b""


def test_connection_close_is_honoured(ready, conn):
    conn.sendall(plain("GET", ready, "Connection: close"))
    head, _ = answer(conn)
    assert b"\r\nConnection: close\r\n" in head
    assert conn.recv(1) == b""


def test_an_id_the_fast_path_does_not_have_is_the_apps_json_404(ready, conn):
    unknown = "0" * 64 + "_" + ready.split("_")[1]
    conn.sendall(plain("GET", unknown))
    head, body = answer(conn)
    assert head.startswith(b"HTTP/1.1 404 ")
    assert b"\r\nContent-Type: application/json" in head
    assert json.loads(body)["status"] == 404


def test_a_plain_answer_is_in_the_access_log(service, ready, conn):
    conn.sendall(plain("GET", ready, "User-Agent: plain-access-log"))
    _, body = answer(conn)
    line = f'127.0.0.1 "GET /image/{ready} HTTP/1.1" 200 {len(body)} '
    wait_for(lambda: line in service.log_path.read_text(errors="replace"), timeout=10)
