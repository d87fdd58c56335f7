"""Every use the service makes of gunicorn's insides: what no gunicorn release
promises to keep (its gthread worker's methods and attributes, its connection
and parser objects, its arbiter's signal queue, `util.write_error`).

config/web_worker.py and config/gunicorn.py reach gunicorn's insides only
through this module, and tests/config/test_gunicorn_internals.py checks each of
these against the installed gunicorn, so that an upgrade that changes one
fails there, by name, rather than in production. gunicorn's settings,
hooks and logger are its public interface and are used directly.
"""

import queue
import selectors
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from gunicorn import SERVER, http, util
from gunicorn.config import PostRequest, PreRequest
from gunicorn.http2 import negotiation
from gunicorn.workers.gthread import ThreadWorker

# The gunicorn these were checked against (pyproject.toml pins it).
CHECKED_WITH = "27.0.1"

# The base of config/web_worker.py's worker. gthread's loop calls three of its
# methods, which that worker overrides: `enqueue_req(conn)` for each connection
# with a request to read (new, kept alive, or with bytes read ahead),
# `handle(conn)` in a thread, answering whether to keep the connection, and
# `murder_pending()` once per turn of the loop and while it stops.
GthreadWorker = ThreadWorker

ErrorWriter = Callable[[socket.socket, int, str, str], None]


def error_writer_install(write: ErrorWriter) -> None:
    """Make `write` gunicorn's answer to a request it refuses itself (400,
    414, 431, ...): gunicorn has no setting for it, and its workers look the
    function up on `util` each time."""
    util.write_error = write


def error_write(sock: socket.socket, status: int, reason: str, message: str) -> None:
    """Answer an error the way gunicorn does (with what error_writer_install set)."""
    util.write_error(sock, status, reason, message)


def write_nonblock(sock: socket.socket, data: bytes) -> None:
    """Send `data`, small enough for the socket's buffer (an error answer),
    without waiting for the client: the socket is left as it was."""
    util.write_nonblock(sock, data)


def signals_queued_take(arbiter: Any) -> list[int]:
    """The signals the arbiter's handlers queued and it has not yet taken.
    In a freshly forked worker, this is the worker's copy of the queue."""
    taken = []
    while True:
        try:
            taken.append(arbiter.SIG_QUEUE.get_nowait())
        except queue.Empty:
            return taken


def own_path(worker: Any, conn: Any) -> bool:
    """Whether the connection may be TLS or HTTP/2, which gunicorn reads itself."""
    cfg = worker.cfg
    return bool(
        cfg.is_ssl or conn.is_http2 or negotiation.prior_knowledge_allowed(cfg, conn.client)
    )


def read_ahead_take(conn: Any) -> bytes:
    """What the connection's parser read past the last request (draining its
    body): the start of the next one."""
    return b"" if conn.parser is None else bytes(conn.parser.unreader.take_buffered())


def request_give_back(worker: Any, conn: Any, data: bytes) -> None:
    """Have gunicorn's parser read `data` before anything more from the socket."""
    if conn.parser is None:
        conn.parser = http.get_parser(worker.cfg, conn.sock, conn.client)
    conn.parser.unreader.unread(data)


def connection_ready(conn: Any) -> None:
    """The request has arrived: gthread's thread must not wait for the socket to
    be readable first (the bytes are no longer on it)."""
    conn.data_ready = True
    conn.sock.setblocking(True)


def connection_begin(conn: Any) -> None:
    """What gthread's thread does to a connection before reading a request."""
    conn.sock.setblocking(True)
    conn.init()


def connection_drop(worker: Any, conn: Any) -> None:
    """Close a connection no thread holds, and count it gone (the worker
    accepts new ones only below `worker_connections`)."""
    worker.nr_conns -= 1
    conn.close()


def readable_watch(worker: Any, sock: socket.socket, callback: Callable[[Any], None]) -> None:
    """Call `callback(sock)` from the worker's loop when `sock` is readable."""
    worker.poller.register(sock, selectors.EVENT_READ, callback)


def readable_unwatch(worker: Any, sock: socket.socket) -> None:
    """Stop watching `sock` (nothing if it was not watched, or is closed)."""
    try:
        worker.poller.unregister(sock)
    except (KeyError, ValueError, OSError):
        pass


def keepalive_full(worker: Any) -> bool:
    """Whether the worker keeps no more connections alive (it closes them)."""
    return len(worker.keepalived_conns) >= worker.max_keepalived


def worker_stopping(worker: Any) -> bool:
    """Whether the worker was told to stop (it answers what it has, then exits)."""
    return not worker.alive


def requests_left(worker: Any) -> int:
    """How many more requests the worker answers before it restarts (`max_requests`)."""
    return int(worker.max_requests - worker.nr)


def request_counted(worker: Any) -> None:
    """Count a request the worker answered without gunicorn's request path."""
    worker.nr += 1


def access_logged(worker: Any) -> bool:
    """Whether the worker's access log is on (what it is given is logged)."""
    return bool(worker.log.access_log_enabled)


def loaded_app(worker: Any) -> Any:
    """The WSGI application the worker loaded."""
    return worker.wsgi


def request_hooks_default(cfg: Any) -> bool:
    """Whether `pre_request` and `post_request` are gunicorn's own (which only log)."""
    return cfg.pre_request is PreRequest.default and cfg.post_request is PostRequest.default


def answer_head(status: str, headers: list[tuple[str, str]], close: bool) -> bytes:
    """The head gunicorn sends with an HTTP/1.1 answer of the application's."""
    return "".join(
        [
            f"HTTP/1.1 {status}\r\nServer: {SERVER}\r\nDate: {util.http_date()}\r\n",
            f"Connection: {'close' if close else 'keep-alive'}\r\n",
            *[f"{name}: {value}\r\n" for name, value in headers],
            "\r\n",
        ]
    ).encode("latin-1")


@dataclass
class _Answer:
    """What gunicorn's access log reads of an answer."""

    status: str
    headers: list[tuple[str, str]]
    sent: int


@dataclass
class _Request:
    """What gunicorn's access log reads of a request."""

    headers: list[tuple[str, str]]


def access_log(
    worker: Any,
    environ: dict[str, Any],
    request_headers: list[tuple[str, str]],
    answer: tuple[str, list[tuple[str, str]], int],
    took: timedelta,
) -> None:
    """Log an answer made without gunicorn's request and response objects in
    its access log. `request_headers` are named as gunicorn names them
    (upper case); `answer` is the status, the headers and the bytes sent."""
    status, headers, sent = answer
    worker.log.access(_Answer(status, headers, sent), _Request(request_headers), environ, took)
