"""The web role's gunicorn worker: gthread, but a request reaches a thread only
once its headers (and a small body of declared length) have arrived.

gunicorn's gthread worker hands a connection to a thread as soon as its first
byte arrives, and the thread then blocks until the headers are complete. A
client that sends its headers a byte every few seconds holds a thread for as
long as it likes: 300 such connections hold every thread of 4 workers x 64,
and every other client waits. Here the worker's own event loop reads what
arrives, without blocking, into a buffer of the connection's; a thread gets
the connection when the request's head is complete, when the buffer passes
gunicorn's own header limits (its parser then answers 400/431), or never: a
request not complete within WEB_HEADER_TIMEOUT is answered 408 and closed.
A waiting connection costs a socket and its buffer, not a thread.

Bodies of known length up to DATA_UPLOAD_MAX_MEMORY_SIZE (the API's bound) are
buffered the same way; a chunked or larger body is read by the thread, as
before. TLS and HTTP/2 connections (neither is configured here) take
gunicorn's own path.

A request whose head has come whole is also looked at once more: the plainest
GET or HEAD of an image or of a saved chart's image (`plain_image_request`) is
answered by the thread from the app's fast path for ready images
(imagecache/api/fastpath.py) without
gunicorn's parser, environ and response objects, which cost a cached GET most
of its CPU. Every other request, and one the fast path does not answer, is
parsed by gunicorn from the same bytes.
"""

import errno
import os
import re
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property, partial
from typing import Any

from config import gunicorn_internals as gunicorn
from imagecache.ids import CHART_SLUG_PATTERN
from imagecache.media import IMAGE_TYPES
from imagecache.ops import request_ids
from imagecache.wire import BODY_LIMIT, CHARTS_PATH, IMAGE_PATH

_HEAD_END = b"\r\n\r\n"
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length[ \t]*:[ \t]*(\d{1,12})[ \t]*\r\n", re.I)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding[ \t]*:[^\r\n]*chunked", re.I)
# A client that asks to continue sends its body only once the thread says so.
_EXPECT = re.compile(rb"\r\nexpect[ \t]*:", re.I)

# The plainest request for an image, whole and alone in the buffer: no body,
# no pipelined request behind it, HTTP/1.1, header names of RFC 9110's token
# characters but "_" (which gunicorn drops), values of visible ASCII, space
# and tab, and well inside gunicorn's limits. Anything else is parsed by
# gunicorn, as every request was before.
_IMAGE_PATH = re.escape(IMAGE_PATH.encode("ascii"))
# A saved chart's image may carry a query string (parameters, a signature) of
# characters that need no decoding but %-escapes, which Django's reader decodes.
_CHART_PATH = (
    re.escape(CHARTS_PATH.encode("ascii"))
    + CHART_SLUG_PATTERN.encode("ascii")
    + rb"\.(?:"
    + b"|".join(image.extension.encode("ascii") for image in IMAGE_TYPES)
    + rb")"
)
_PLAIN_IMAGE = re.compile(
    rb"(GET|HEAD) (?:(" + _IMAGE_PATH + rb"[0-9A-Za-z_]{1,128})"
    rb"|(" + _CHART_PATH + rb")(?:\?([0-9A-Za-z._~%&=+-]{1,1024}))?) HTTP/1\.1\r\n"
    rb"((?:[!#$%&'*+.^`|~0-9A-Za-z-]{1,64}:[\t -~]{0,2048}\r\n){1,32})\r\n\Z"
)
# Fields that change what gunicorn or Django make of a request (a body, an
# upgrade, a proxy's view of the client, a conditional answer): with any of
# them, the request is gunicorn's.
_THEIRS = (b"content-length", b"transfer-encoding", b"expect", b"upgrade", b"http2-settings")
_THEIRS_PREFIXES = (b"if-", b"x-forwarded-", b"forwarded")
# The request id's field, as `PlainImageRequest.fields` names it.
_REQUEST_ID = request_ids.HEADER.upper()
# A cheap look before the regular expression's.
_PLAIN_STARTS = tuple(
    method + b" " + path.encode("ascii")
    for method in (b"GET", b"HEAD")
    for path in (IMAGE_PATH, CHARTS_PATH)
)


@dataclass(frozen=True)
class PlainImageRequest:
    """A request the worker answers from the app's ready images itself."""

    method: str
    path: str
    query: str  # a chart's; an image's has none
    host: str
    close: bool  # the client sent "Connection: close"
    head: bytes  # as it arrived, for gunicorn if the app does not answer it
    fields: list[tuple[str, str]]  # for the access log, as gunicorn names them


def plain_image_request(arrived: bytes | bytearray) -> PlainImageRequest | None:
    """The request in `arrived`, if it is a plain GET or HEAD of an image
    (see _PLAIN_IMAGE); None for any other."""
    match = _PLAIN_IMAGE.match(arrived)
    if match is None:
        return None
    method, image_path, chart_path, query, block = match.groups()
    hosts: list[bytes] = []
    close = False
    fields = []
    for line in block.split(b"\r\n")[:-1]:
        raw_name, _, raw_value = line.partition(b":")
        name, value = raw_name.lower(), raw_value.strip(b" \t")
        if name in _THEIRS or name.startswith(_THEIRS_PREFIXES):
            return None
        if name == b"host":
            hosts.append(value)
        elif name == b"connection":
            options = {option.strip(b" \t") for option in value.lower().split(b",")}
            if not options <= {b"keep-alive", b"close"}:
                return None
            close = close or b"close" in options
        fields.append((raw_name.decode("ascii").upper(), value.decode("ascii")))
    if len(hosts) != 1 or not hosts[0]:
        return None
    return PlainImageRequest(
        method=method.decode("ascii"),
        path=(image_path or chart_path).decode("ascii"),
        query=(query or b"").decode("ascii"),
        host=hosts[0].decode("ascii"),
        close=close,
        head=bytes(arrived),
        fields=fields,
    )


class _ImageFile:
    """The app's `wsgi.file_wrapper` on the worker's own path: it hands the
    file back rather than wrapping it."""

    def __init__(self, image: Any, block_size: int = 0) -> None:
        self.image = image


@dataclass
class _Answer:
    """The fast path's answer, as it is sent."""

    status: str
    headers: list[tuple[str, str]]
    sent: int = 0


class HeadersFirstWorker(gunicorn.GthreadWorker):
    """ThreadWorker whose threads only take requests that have arrived."""

    # WEB_HEADER_TIMEOUT, set from config/gunicorn.py.
    header_timeout = 10.0
    # The largest body the API takes (DATA_UPLOAD_MAX_MEMORY_SIZE).
    body_limit = BODY_LIMIT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Connections whose request is still arriving, oldest deadline first.
        self.arriving: deque[Any] = deque()
        # Past this much, gunicorn's parser is the one to refuse the head.
        self.head_limit = (
            self.cfg.limit_request_line
            + self.cfg.limit_request_fields * (self.cfg.limit_request_field_size + 2)
            + 4
        )

    def enqueue_req(self, conn: Any) -> None:
        if gunicorn.own_path(self, conn):
            super().enqueue_req(conn)
            return
        if not hasattr(conn, "arrived"):
            conn.arrived = bytearray()
        # Read ahead by the last request's body drain: it comes first.
        conn.arrived[:0] = gunicorn.read_ahead_take(conn)
        if self._arrived(conn):
            self._dispatch(conn)
            return
        conn.sock.setblocking(False)
        # Readable (the poller said so), or new: what has come is read now,
        # not after another trip through the poller.
        arrived = self._read(conn)
        if arrived is not None:
            self._taken(conn, arrived)
            return
        conn.header_deadline = time.monotonic() + self.header_timeout
        self.arriving.append(conn)
        gunicorn.readable_watch(self, conn.sock, partial(self._on_bytes, conn))

    def _on_bytes(self, conn: Any, client: Any) -> None:
        arrived = self._read(conn)
        if arrived is not None:
            self._forget(conn)
            self._taken(conn, arrived)

    def _read(self, conn: Any) -> bool | None:
        """Read what the client sent: True once a thread can take the request,
        False when the client closed, None while it is still arriving."""
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno not in (errno.ECONNRESET, errno.ENOTCONN, errno.EPIPE):
                self.log.debug("Reading a request failed: %s", exc)
            data = b""
        if not data:
            return False
        conn.arrived += data
        return True if self._arrived(conn) else None

    def _taken(self, conn: Any, arrived: bool) -> None:
        if arrived:
            self._dispatch(conn)
        else:
            gunicorn.connection_drop(self, conn)

    def _arrived(self, conn: Any) -> bool:
        """Whether the thread can take the request: its head has come (with a
        small body of declared length), or more than a head may hold."""
        arrived = conn.arrived
        end = arrived.find(_HEAD_END)
        if end < 0:
            return len(arrived) > self.head_limit
        head = bytes(arrived[: end + 2])
        if _CHUNKED.search(head) or _EXPECT.search(head):
            return True
        length = _CONTENT_LENGTH.search(head)
        if length is None or int(length.group(1)) > self.body_limit:
            return True
        return len(arrived) >= end + len(_HEAD_END) + int(length.group(1))

    def _dispatch(self, conn: Any) -> None:
        conn.plain = self._plain(conn.arrived)
        # A plain request's bytes are given to gunicorn only if the fast path declines it.
        gunicorn.request_give_back(self, conn, bytes(conn.arrived) if conn.plain is None else b"")
        conn.arrived = bytearray()
        gunicorn.connection_ready(conn)
        super().enqueue_req(conn)

    @cached_property
    def _plain_route(self) -> bool:
        """Whether this worker answers plain requests itself at all: with
        keep-alive, gunicorn's own request hooks, no SCRIPT_NAME, and an app
        with a fast path (read once the worker has loaded its app)."""
        return bool(
            self.cfg.keepalive
            and gunicorn.request_hooks_default(self.cfg)
            and not os.environ.get("SCRIPT_NAME")
            and hasattr(gunicorn.loaded_app(self), "ready_image")
        )

    def _plain(self, arrived: bytearray) -> PlainImageRequest | None:
        """The request, if this worker may answer it itself (see `handle`)."""
        if (
            not arrived.startswith(_PLAIN_STARTS)
            or gunicorn.worker_stopping(self)
            or gunicorn.requests_left(self) <= 1
            or not self._plain_route
        ):
            return None
        return plain_image_request(arrived)

    def handle(self, conn: Any) -> Any:
        """A plain request for a ready image (`plain_image_request`) is
        answered here, from the app's fast path (imagecache/api/fastpath.py),
        without gunicorn's parser, its WSGI environ and its response: most of
        a cached GET's CPU went there. The
        answer is the one gunicorn sends, byte for byte but its Date. Any
        other request, and one the fast path does not answer (or fails on),
        goes gunicorn's way with the bytes that came."""
        plain, conn.plain = getattr(conn, "plain", None), None
        if plain is None:
            return super().handle(conn)
        started = time.perf_counter()
        environ: dict[str, Any] = {
            "REQUEST_METHOD": plain.method,
            "PATH_INFO": plain.path,
            "QUERY_STRING": plain.query,
            "HTTP_HOST": plain.host,
            "wsgi.url_scheme": "http",
            "wsgi.file_wrapper": _ImageFile,
        }
        # The proxy's request id, which the fast path repeats on its answer.
        for name, value in plain.fields:
            if name == _REQUEST_ID:
                environ[request_ids.ENVIRON_KEY] = value
        answer: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]]) -> None:
            answer[:] = [status, headers]

        ready_image: Callable[..., Iterable[bytes] | None] = gunicorn.loaded_app(self).ready_image
        try:
            body = ready_image(environ, start_response)
        except Exception:  # noqa: BLE001 - gunicorn runs the app again and answers its error
            body = None
        if body is None:
            gunicorn.request_give_back(self, conn, plain.head)
            return super().handle(conn)
        status, headers = answer
        sending = _Answer(status, headers)
        try:
            keep = self._plain_send(conn, plain, sending, body)
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                self.log.exception("Socket error answering a ready image.")
            keep = False
        if gunicorn.access_logged(self):
            environ.update(
                RAW_URI=plain.path + (f"?{plain.query}" if plain.query else ""),
                SERVER_PROTOCOL="HTTP/1.1",
                REMOTE_ADDR=conn.client[0] if isinstance(conn.client, tuple) else str(conn.client),
                **{f"HTTP_{name.replace('-', '_')}": value for name, value in plain.fields},
            )
            took = timedelta(seconds=time.perf_counter() - started)
            answered = (sending.status, sending.headers, sending.sent)
            gunicorn.access_log(self, environ, plain.fields, answered, took)
        return keep

    def _plain_send(
        self, conn: Any, plain: PlainImageRequest, logged: _Answer, body: Iterable[bytes]
    ) -> bool:
        """Send the fast path's answer: whether the connection stays open."""
        gunicorn.connection_begin(conn)
        gunicorn.request_counted(self)
        close = plain.close or gunicorn.worker_stopping(self) or gunicorn.keepalive_full(self)
        head = gunicorn.answer_head(logged.status, logged.headers, close)
        if not isinstance(body, _ImageFile):  # HEAD, or an app without the file wrapper
            conn.sock.sendall(head)
            for chunk in body if plain.method != "HEAD" else ():
                conn.sock.sendall(chunk)
                logged.sent += len(chunk)
            return not close
        with body.image as image:
            conn.sock.sendall(head, socket.MSG_MORE)
            size = os.fstat(image.fileno()).st_size
            while logged.sent < size:
                sent = os.sendfile(
                    conn.sock.fileno(), image.fileno(), logged.sent, size - logged.sent
                )
                if not sent:  # the file shrank: the answer cannot end well
                    return False
                logged.sent += sent
        return not close

    def _forget(self, conn: Any) -> None:
        gunicorn.readable_unwatch(self, conn.sock)
        self.arriving.remove(conn)

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        stopping = gunicorn.worker_stopping(self)
        while self.arriving and (self.arriving[0].header_deadline <= now or stopping):
            conn = self.arriving[0]
            self._forget(conn)
            if not stopping:
                mesg = f"the request did not arrive within {self.header_timeout:g} s"
                try:
                    gunicorn.error_write(conn.sock, 408, "Request Timeout", mesg)
                except OSError:
                    pass
            gunicorn.connection_drop(self, conn)
