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
"""

import errno
import re
import selectors
import time
from collections import deque
from functools import partial
from typing import Any

from gunicorn import http, util
from gunicorn.http2 import negotiation
from gunicorn.workers.gthread import ThreadWorker

_HEAD_END = b"\r\n\r\n"
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length[ \t]*:[ \t]*(\d{1,12})[ \t]*\r\n", re.I)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding[ \t]*:[^\r\n]*chunked", re.I)
# A client that asks to continue sends its body only once the thread says so.
_EXPECT = re.compile(rb"\r\nexpect[ \t]*:", re.I)


class HeadersFirstWorker(ThreadWorker):
    """ThreadWorker whose threads only take requests that have arrived."""

    # WEB_HEADER_TIMEOUT, set from config/gunicorn.py.
    header_timeout = 10.0
    # DATA_UPLOAD_MAX_MEMORY_SIZE (config/settings/base.py): the largest body
    # the API takes.
    body_limit = 1024 * 1024

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
        if (
            self.cfg.is_ssl
            or conn.is_http2
            or negotiation.prior_knowledge_allowed(self.cfg, conn.client)
        ):
            super().enqueue_req(conn)
            return
        if not hasattr(conn, "arrived"):
            conn.arrived = bytearray()
        buffered = conn.parser.unreader.buf.getvalue() if conn.parser is not None else b""
        if buffered:
            # Read ahead by the last request's body drain: it comes first.
            conn.parser.unreader.buf.truncate(0)
            conn.parser.unreader.buf.seek(0)
            conn.arrived[:0] = buffered
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
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_bytes, conn))

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
            self.nr_conns -= 1
            conn.close()

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
        if conn.parser is None:
            conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
        conn.parser.unreader.unread(bytes(conn.arrived))
        conn.arrived = bytearray()
        # The bytes are here: handle() must not wait for the socket to be readable.
        conn.data_ready = True
        conn.sock.setblocking(True)
        super().enqueue_req(conn)

    def _forget(self, conn: Any) -> None:
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass
        self.arriving.remove(conn)

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        while self.arriving and (self.arriving[0].header_deadline <= now or not self.alive):
            conn = self.arriving[0]
            self._forget(conn)
            if self.alive:
                mesg = f"the request did not arrive within {self.header_timeout:g} s"
                try:
                    util.write_error(conn.sock, 408, "Request Timeout", mesg)
                except OSError:
                    pass
            self.nr_conns -= 1
            conn.close()
