"""Each of gunicorn's insides the service relies on (config/gunicorn_internals.py),
checked against the installed gunicorn: a gunicorn that changes one fails
here, by name. Over real sockets, with gunicorn's own objects."""

import logging
import os
import selectors
import signal
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import gunicorn
import pytest
from gunicorn import util
from gunicorn.arbiter import Arbiter
from gunicorn.config import Config
from gunicorn.glogging import Logger
from gunicorn.http.errors import LimitRequestLine
from gunicorn.http.wsgi import Response
from gunicorn.workers.gthread import TConn

from config import gunicorn_internals as internals
from tests.config.test_web_worker import connection

GET = b"GET /info HTTP/1.1\r\nHost: localhost\r\n\r\n"


class Worker(internals.GthreadWorker):
    """gthread's worker as gunicorn builds it, recording the calls it makes
    of the methods the service's worker overrides."""

    def __init__(self, config: Config | None = None) -> None:
        config = config or Config()
        super().__init__(0, 0, [], None, 30, config, Logger(config))
        self.enqueued: list[Any] = []
        self.murders = 0

    def enqueue_req(self, conn: Any) -> None:
        self.enqueued.append(conn)

    def murder_pending(self) -> None:
        self.murders += 1
        self.alive = False  # one turn of the loop is enough


@pytest.fixture
def worker() -> Iterator[Worker]:
    # What gthread's init_process makes, without its thread pool or its loop.
    worker = Worker()
    worker.poller = selectors.DefaultSelector()
    worker.method_queue.init()
    yield worker
    worker.poller.close()
    worker.method_queue.close()


def test_checked_with_the_installed_gunicorn():
    # An upgrade runs this module again: then CHECKED_WITH is brought up to date.
    assert gunicorn.__version__ == internals.CHECKED_WITH


def test_a_new_connection_goes_to_enqueue_req():
    worker = Worker()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        with socket.create_connection(listener.getsockname()):
            worker.accept(listener)
    (conn,) = worker.enqueued
    assert isinstance(conn, TConn)
    assert worker.nr_conns == 1
    conn.close()


def test_a_kept_alive_connection_that_turns_readable_goes_to_enqueue_req(worker, pair):
    conn = connection(worker, pair[1])
    worker.keepalived_conns.append(conn)
    worker.poller.register(conn.sock, 1)
    worker.on_client_socket_readable(conn, conn.sock)
    assert worker.enqueued == [conn]


def test_a_connection_with_bytes_read_ahead_goes_back_to_enqueue_req(worker, pair):
    conn = connection(worker, pair[1])
    internals.request_give_back(worker, conn, GET)
    done: Any = SimpleNamespace(cancelled=lambda: False, result=lambda: True)
    worker.finish_request(conn, done)
    assert worker.enqueued == [conn]


def test_a_handle_that_answers_true_keeps_the_connection_alive(worker, pair):
    conn = connection(worker, pair[1])
    internals.request_give_back(worker, conn, b"")
    done: Any = SimpleNamespace(cancelled=lambda: False, result=lambda: True)
    worker.finish_request(conn, done)
    assert list(worker.keepalived_conns) == [conn]


def test_the_loop_calls_murder_pending_each_turn(worker):
    worker.ppid = os.getppid()
    worker.tpool = SimpleNamespace(shutdown=lambda wait: None)
    worker.method_queue.defer(lambda: None)  # the loop's first wait ends at once
    thread = threading.Thread(target=worker.run)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert worker.murders >= 1


def test_enqueue_req_runs_handle_in_a_thread_of_the_pool():
    ran = threading.Event()

    class Handled(internals.GthreadWorker):
        def handle(self, conn: Any) -> bool:
            ran.set()
            return False

    config = Config()
    handled = Handled(0, 0, [], None, 30, config, Logger(config))
    handled.tpool = handled.get_thread_pool()
    handled.method_queue.init()
    try:
        handled.enqueue_req(SimpleNamespace())
        assert ran.wait(timeout=30)
    finally:
        handled.tpool.shutdown(wait=True)
        handled.method_queue.close()


def test_error_writer_install_makes_gunicorns_refusals_ours(worker, pair, monkeypatch):
    monkeypatch.setattr(util, "write_error", util.write_error)
    written: list[tuple[int, str, str]] = []
    internals.error_writer_install(
        lambda sock, status, reason, mesg: written.append((status, reason, mesg))
    )
    worker.handle_error(None, pair[1], ("127.0.0.1", 40000), LimitRequestLine(5000, 4094))
    assert written and written[0][:2] == (414, "URI Too Long")


def test_error_write_answers_with_what_was_installed(pair, monkeypatch):
    monkeypatch.setattr(util, "write_error", util.write_error)
    internals.error_writer_install(lambda sock, status, reason, mesg: sock.sendall(b"%d" % status))
    internals.error_write(pair[1], 408, "Request Timeout", "late")
    assert pair[0].recv(10) == b"408"


def test_write_nonblock_sends_a_small_answer_without_blocking(pair):
    internals.write_nonblock(pair[1], b"HTTP/1.1 400 Bad Request\r\n\r\n")
    assert pair[0].recv(100) == b"HTTP/1.1 400 Bad Request\r\n\r\n"
    assert pair[1].getblocking()  # as it was


def test_signals_the_arbiter_queued_are_taken():
    app = SimpleNamespace(cfg=Config(), logger_class=Logger)
    app.cfg.set("workers", 1)
    arbiter = Arbiter(app)
    arbiter.signal(signal.SIGTERM, None)
    arbiter.signal(signal.SIGHUP, None)
    assert internals.signals_queued_take(arbiter) == [signal.SIGTERM, signal.SIGHUP]
    assert internals.signals_queued_take(arbiter) == []


def test_own_path_is_tls_or_http2_only(worker, pair):
    conn = connection(worker, pair[1])
    assert not internals.own_path(worker, conn)
    conn.is_http2 = True
    assert internals.own_path(worker, conn)


def test_read_ahead_is_taken_from_the_parser(worker, pair):
    conn = connection(worker, pair[1])
    assert internals.read_ahead_take(conn) == b""
    internals.request_give_back(worker, conn, GET)
    assert internals.read_ahead_take(conn) == GET
    assert internals.read_ahead_take(conn) == b""


def test_what_is_given_back_is_parsed_before_the_socket(worker, pair):
    pair[0].sendall(b"GET /later HTTP/1.1\r\nHost: localhost\r\n\r\n")
    conn = connection(worker, pair[1])
    internals.request_give_back(worker, conn, GET)
    internals.connection_begin(conn)
    assert next(conn.parser).path == "/info"
    assert next(conn.parser).path == "/later"


def test_a_ready_connection_is_not_waited_on(worker, pair):
    conn = connection(worker, pair[1])
    internals.connection_ready(conn)
    assert conn.wait_for_data(0)  # nothing is on the socket
    assert conn.sock.getblocking()


def test_a_dropped_connection_is_closed_and_uncounted(worker, pair):
    conn = connection(worker, pair[1])
    internals.connection_drop(worker, conn)
    assert worker.nr_conns == 0
    assert pair[1].fileno() == -1


def test_a_watched_socket_calls_back_from_the_loop_once_readable(worker, pair):
    called: list[Any] = []
    internals.readable_watch(worker, pair[1], called.append)
    pair[0].sendall(b"x")
    worker.wait_for_and_dispatch_events(timeout=30)
    assert called == [pair[1]]
    internals.readable_unwatch(worker, pair[1])
    internals.readable_unwatch(worker, pair[1])  # twice is no error
    assert not worker.poller.get_map()


def test_keepalive_is_full_at_worker_connections_less_threads(pair):
    config = Config()
    config.set("worker_connections", 3)
    config.set("threads", 2)
    full = Worker(config)
    assert not internals.keepalive_full(full)
    full.keepalived_conns.append(connection(full, pair[1]))
    assert internals.keepalive_full(full)


def test_a_worker_told_to_stop_is_stopping(worker):
    worker.alive = True
    assert not internals.worker_stopping(worker)
    worker.handle_exit(signal.SIGTERM, None)
    assert internals.worker_stopping(worker)


def test_requests_left_count_down_to_max_requests():
    config = Config()
    config.set("max_requests", 10)
    counted = Worker(config)
    left = internals.requests_left(counted)
    internals.request_counted(counted)
    assert internals.requests_left(counted) == left - 1 <= 10


def test_the_loaded_app_is_the_one_the_application_gave():
    app = object()
    loaded = Worker()
    loaded.app = SimpleNamespace(wsgi=lambda: app)
    loaded.load_wsgi()
    assert internals.loaded_app(loaded) is app


def test_request_hooks_are_default_until_set():
    config = Config()
    assert internals.request_hooks_default(config)
    config.set("pre_request", lambda worker, req: None)
    assert not internals.request_hooks_default(config)


def test_the_answer_head_is_gunicorns_but_its_date(pair):
    request = SimpleNamespace(version=(1, 1), method="GET", should_close=lambda: False)
    headers = [("Content-Type", "image/png"), ("Content-Length", "3")]
    for close in (False, True):
        response = Response(request, pair[1], Config())
        response.start_response("200 OK", headers)
        if close:
            response.force_close()
        response.send_headers()
        sent = pair[0].recv(65536)
        ours = internals.answer_head("200 OK", headers, close)
        date = [line for line in sent.split(b"\r\n") if line.startswith(b"Date: ")]
        assert ours.replace(ours.split(b"\r\n")[2], date[0]) == sent


def test_the_access_log_reads_what_it_is_given(caplog):
    config = Config()
    config.set("accesslog", "-")
    config.set("access_log_format", '%(s)s %(b)s "%({user-agent}i)s" %({content-type}o)s')
    log = Logger(config)
    logged = SimpleNamespace(log=log)
    assert internals.access_logged(logged)
    with caplog.at_level(logging.INFO, logger="gunicorn.access"):
        internals.access_log(
            logged,
            {"REQUEST_METHOD": "GET", "RAW_URI": "/image/x", "SERVER_PROTOCOL": "HTTP/1.1"},
            [("USER-AGENT", "probe")],
            ("200 OK", [("Content-Type", "image/png")], 3),
            timedelta(milliseconds=2),
        )
    assert caplog.messages[-1:] == ['200 3 "probe" image/png']
