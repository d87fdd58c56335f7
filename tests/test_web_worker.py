"""The web role's worker (config/web_worker.py) on its own, over real sockets:
which connections go to a thread at once, and which wait on the poller.

The worker is built as gunicorn builds it, without running its loop; a
subclass records what would go to a thread instead of starting one.
"""

import logging
import selectors
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.workers.gthread import TConn

from config.web_worker import HeadersFirstWorker

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


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    client, server = socket.socketpair()
    yield client, server
    client.close()
    server.close()


def connection(worker: RecordingWorker, sock: socket.socket) -> TConn:
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
