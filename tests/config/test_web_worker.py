"""The web role's worker (config/web_worker.py) on its own, over real sockets:
which connections go to a thread at once, and which wait on the poller; which
requests it answers from the app's ready images itself, and what it sends.

The worker is built as gunicorn builds it, without running its loop; a
subclass records what would go to a thread instead of starting one.
"""

import logging
import re
import selectors
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger
from gunicorn.workers.gthread import TConn, ThreadWorker

from config.web_worker import HeadersFirstWorker, plain_image_request

GET = b"GET /image/x HTTP/1.1\r\nHost: localhost\r\n\r\n"


class RecordingWorker(HeadersFirstWorker):
    """Takes requests as the worker does, but keeps them rather than handing
    them to a thread."""

    def __init__(self) -> None:
        super().__init__(0, 0, [], None, 30, Config(), logging.getLogger(__name__))
        self.poller = selectors.DefaultSelector()
        self.to_threads: list[Any] = []

    def _dispatch(self, conn: Any) -> None:
        self.to_threads.append(conn)


@pytest.fixture
def worker() -> Iterator[RecordingWorker]:
    worker = RecordingWorker()
    yield worker
    worker.poller.close()


def connection(worker: ThreadWorker, sock: socket.socket) -> TConn:
    worker.nr_conns += 1
    return TConn(worker.cfg, sock, ("127.0.0.1", 40000), ("127.0.0.1", 8000))


def registered(worker: RecordingWorker, sock: socket.socket) -> bool:
    return any(key.fileobj is sock for key in worker.poller.get_map().values())


def test_a_request_that_has_arrived_goes_to_a_thread_without_the_poller(worker, pair):
    # A kept-alive connection the poller found readable: its request is read
    # at once, not after another trip through the poller.
    client, server = pair
    client.sendall(GET)
    conn = connection(worker, server)
    worker.enqueue_req(conn)
    assert worker.to_threads == [conn]
    assert not registered(worker, server)
    assert not worker.arriving


def test_a_request_still_arriving_waits_on_the_poller_and_goes_once_whole(worker, pair):
    client, server = pair
    client.sendall(GET[:10])
    conn = connection(worker, server)
    worker.enqueue_req(conn)
    assert worker.to_threads == []
    assert registered(worker, server)
    assert list(worker.arriving) == [conn]
    client.sendall(GET[10:])
    worker._on_bytes(conn, server)
    assert worker.to_threads == [conn]
    assert not registered(worker, server)
    assert not worker.arriving


def test_a_new_connection_with_nothing_sent_waits_on_the_poller(worker, pair):
    _, server = pair
    conn = connection(worker, server)
    worker.enqueue_req(conn)
    assert worker.to_threads == []
    assert registered(worker, server)


def test_a_client_that_closed_is_let_go_without_a_thread(worker, pair):
    client, server = pair
    client.close()
    conn = connection(worker, server)
    worker.enqueue_req(conn)
    assert worker.to_threads == []
    assert not registered(worker, server)
    assert worker.nr_conns == 0
    assert server.fileno() == -1


# The plain route: a request the worker answers from the app's fast path.

READY = "/image/" + "ab" * 32 + "_1800000000"
PLAIN = f"GET {READY} HTTP/1.1\r\nHost: localhost:8000\r\nUser-Agent: t\r\n\r\n".encode()


def test_a_plain_get_or_head_of_an_image_is_taken_as_it_came():
    request = plain_image_request(PLAIN)
    assert request is not None
    assert (request.method, request.path, request.host, request.close) == (
        "GET",
        READY,
        "localhost:8000",
        False,
    )
    assert request.head == PLAIN
    assert request.fields == [("HOST", "localhost:8000"), ("USER-AGENT", "t")]
    head = plain_image_request(
        PLAIN.replace(b"GET", b"HEAD").replace(b"t\r\n\r", b"t\r\nConnection: Close\r\n\r")
    )
    assert head is not None
    assert (head.method, head.close) == ("HEAD", True)
    assert plain_image_request(PLAIN.replace(b"\r\n\r\n", b"\r\nConnection: keep-alive\r\n\r\n"))


def test_a_plain_get_of_a_chart_is_taken_with_its_query_string():
    for target, path, query in [
        ("/charts/edge-traffic.png", "/charts/edge-traffic.png", ""),
        (
            "/charts/edge-01.svg?device=a%20b&sig=x-_Y",
            "/charts/edge-01.svg",
            "device=a%20b&sig=x-_Y",
        ),
    ]:
        request = plain_image_request(PLAIN.replace(READY.encode(), target.encode()))
        assert request is not None
        assert (request.path, request.query) == (path, query)
    assert plain_image_request(PLAIN).query == ""  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "request_bytes",
    [
        PLAIN.replace(READY.encode(), b"/charts/edge-traffic"),
        PLAIN.replace(READY.encode(), b"/charts/Edge.png"),
        PLAIN.replace(READY.encode(), b"/charts/edge.gif"),
        PLAIN.replace(READY.encode(), b"/charts/edge.png?a=<b>"),
        PLAIN.replace(READY.encode(), b"/charts/edge.png?a='x"),
        PLAIN.replace(READY.encode(), b"/charts/edge.png#x"),
        PLAIN.replace(b"HTTP/1.1", b"HTTP/1.0"),
        PLAIN.replace(b"GET", b"POST"),
        PLAIN.replace(b"GET", b"get"),
        PLAIN.replace(READY.encode(), READY.encode() + b"?x=1"),
        PLAIN.replace(READY.encode(), READY.encode() + b"%2F"),
        PLAIN.replace(READY.encode(), b"/image/../etc/passwd"),
        PLAIN.replace(READY.encode(), b"/static/x.png"),
        PLAIN + PLAIN,  # a pipelined request behind it
        PLAIN + b"x",
        PLAIN[:-2],  # not whole
        PLAIN.replace(b"\r\n", b"\n"),
        PLAIN.replace(b"Host: localhost:8000\r\n", b""),
        PLAIN.replace(b"Host: localhost:8000", b"Host: "),
        PLAIN.replace(b"User-Agent: t", b"Host: evil"),
        PLAIN.replace(b"User-Agent: t", b"Content-Length: 0"),
        PLAIN.replace(b"User-Agent: t", b"Transfer-Encoding: chunked"),
        PLAIN.replace(b"User-Agent: t", b"Expect: 100-continue"),
        PLAIN.replace(b"User-Agent: t", b"Upgrade: h2c"),
        PLAIN.replace(b"User-Agent: t", b"Connection: Upgrade"),
        PLAIN.replace(b"User-Agent: t", b"If-None-Match: *"),
        PLAIN.replace(b"User-Agent: t", b"if-modified-since: x"),
        PLAIN.replace(b"User-Agent: t", b"X-Forwarded-For: 10.0.0.1"),
        PLAIN.replace(b"User-Agent: t", b"X-Forwarded-Proto: https"),
        PLAIN.replace(b"User-Agent: t", b"Forwarded: for=10.0.0.1"),
        PLAIN.replace(b"User-Agent", b"User_Agent"),  # gunicorn drops it
        PLAIN.replace(b"User-Agent: t", b"User-Agent: t\r\n folded"),
        PLAIN.replace(b"User-Agent: t", b"User-Agent: t\x00"),
        PLAIN.replace(b"User-Agent: t", "User-Agent: \u00e9".encode()),
        PLAIN.replace(b"User-Agent: t", b"User-Agent : t"),
        PLAIN.replace(b"User-Agent: t", b"U: " + b"x" * 2049),
        PLAIN.replace(b"User-Agent: t", b"\r\n".join(b"A%d: x" % i for i in range(32))),
    ],
)
def test_any_other_request_is_left_to_gunicorn(request_bytes):
    assert plain_image_request(request_bytes) is None


class Threads(ThreadWorker):
    """Below the web worker: what would go to a thread is kept."""

    to_threads: list[Any]

    def enqueue_req(self, conn: Any) -> None:
        self.to_threads.append(conn)


class App:
    """A WSGI app with the fast path's hook (imagecache/api/fastpath.py): it
    has one ready image, READY."""

    def __init__(self, image: Path) -> None:
        self.image = image
        self.called: list[str] = []
        self.asked: list[tuple[str, str]] = []

    def ready_image(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes] | None:
        self.asked.append((environ["PATH_INFO"], environ["QUERY_STRING"]))
        if environ["PATH_INFO"] != READY or environ["HTTP_HOST"] != "localhost:8000":
            return None
        size = str(self.image.stat().st_size)
        start_response("200 OK", [("Content-Type", "image/png"), ("Content-Length", size)])
        if environ["REQUEST_METHOD"] == "HEAD":
            return []
        return environ["wsgi.file_wrapper"](self.image.open("rb"), 64 * 1024)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        self.called.append(environ["PATH_INFO"])
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"no"]


class ThreadedWorker(HeadersFirstWorker, Threads):
    """The web worker with an app, whose thread work the test runs itself."""

    def __init__(self, app: App) -> None:
        config = Config()
        HeadersFirstWorker.__init__(self, 0, 0, [], None, 30, config, Logger(config))
        self.poller = selectors.DefaultSelector()
        self.to_threads = []
        self.wsgi = app


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "chart.png"
    path.write_bytes(bytes(range(256)) * 300)
    return path


@pytest.fixture
def app_worker(image: Path) -> Iterator[ThreadedWorker]:
    worker = ThreadedWorker(App(image))
    yield worker
    worker.poller.close()


def answered(
    app_worker: ThreadedWorker, pair: tuple[socket.socket, socket.socket], sent: bytes
) -> tuple[Any, bytes]:
    """What the worker's thread returns for a request, and what it sent."""
    client, server = pair
    client.sendall(sent)
    conn = connection(app_worker, server)
    app_worker.enqueue_req(conn)
    assert app_worker.to_threads == [conn]
    kept = app_worker.handle(conn)
    server.shutdown(socket.SHUT_WR)
    received = b""
    while chunk := client.recv(65536):
        received += chunk
    return kept, received


def test_a_plain_request_for_a_ready_image_is_answered_without_the_app(app_worker, pair, image):
    kept, received = answered(app_worker, pair, PLAIN)
    assert kept is True
    head, _, body = received.partition(b"\r\n\r\n")
    assert body == image.read_bytes()
    assert re.fullmatch(
        rb"HTTP/1\.1 200 OK\r\nServer: gunicorn\r\nDate: [^\r]+ GMT\r\n"
        rb"Connection: keep-alive\r\nContent-Type: image/png\r\nContent-Length: 76800",
        head,
    )
    assert app_worker.wsgi.called == []
    assert app_worker.nr == 1


def test_a_plain_chart_request_gives_the_fast_path_its_path_and_query_apart(app_worker, pair):
    sent = PLAIN.replace(READY.encode(), b"/charts/edge.png?device=a%20b&sig=x")
    _, received = answered(app_worker, pair, sent)
    assert app_worker.wsgi.asked == [("/charts/edge.png", "device=a%20b&sig=x")]
    # Declined: gunicorn parses the same bytes, and the app answers.
    assert received.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert app_worker.wsgi.called == ["/charts/edge.png"]


def test_a_plain_head_is_answered_without_a_body_and_close_is_kept(app_worker, pair):
    sent = PLAIN.replace(b"GET", b"HEAD").replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    kept, received = answered(app_worker, pair, sent)
    assert kept is False
    assert received.endswith(b"Content-Length: 76800\r\n\r\n")
    assert b"Connection: close\r\n" in received
    assert app_worker.wsgi.called == []


def test_a_plain_request_the_fast_path_does_not_answer_goes_to_gunicorn_and_the_app(
    app_worker, pair
):
    sent = PLAIN.replace(READY.encode(), READY.encode()[:-1] + b"1")
    _, received = answered(app_worker, pair, sent)
    assert received.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert received.endswith(b"\r\n\r\nno")
    assert app_worker.wsgi.called == [READY[:-1] + "1"]


def test_a_stopping_worker_leaves_plain_requests_to_gunicorn(app_worker, pair):
    app_worker.alive = False
    _, received = answered(app_worker, pair, PLAIN)
    assert b"Connection: close\r\n" in received
    assert app_worker.wsgi.called == [READY]


def test_a_body_the_fast_path_gives_as_bytes_is_sent_and_counted(app_worker, pair):
    def listed(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "image/png"), ("Content-Length", "6")])
        return [b"abc", b"def"]

    app_worker.wsgi.ready_image = listed
    kept, received = answered(app_worker, pair, PLAIN)
    assert kept is True
    assert received.endswith(b"Content-Length: 6\r\n\r\nabcdef")


def test_a_worker_that_begins_to_stop_after_the_look_closes_after_the_answer(
    app_worker, pair, image
):
    client, server = pair
    client.sendall(PLAIN)
    conn = connection(app_worker, server)
    app_worker.enqueue_req(conn)
    app_worker.alive = False  # a stop, between the worker's loop and its thread
    assert app_worker.handle(conn) is False
    server.shutdown(socket.SHUT_WR)
    received = b""
    while chunk := client.recv(65536):
        received += chunk
    assert b"\r\nConnection: close\r\n" in received
    assert received.endswith(image.read_bytes())
    assert app_worker.wsgi.called == []
