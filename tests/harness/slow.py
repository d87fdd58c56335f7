"""Slow clients, for the web server's tests and bench/slow_clients.py:
connections that send a request's head a byte a second."""

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"s" * 600 + b"\r\n\r\n"


@contextmanager
def trickling(port: int, count: int) -> Iterator[list[socket.socket]]:
    """`count` connections to 127.0.0.1:`port`, each sending HEAD a byte a
    second (10 minutes' worth), until the block ends."""
    sockets = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]
    stop = threading.Event()

    def trickle() -> None:
        for i in range(len(HEAD)):
            for sock in sockets:
                try:
                    sock.send(HEAD[i : i + 1])
                except OSError:
                    pass  # answered 408 and closed by the service
            if stop.wait(1.0):
                return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        yield sockets
    finally:
        stop.set()
        thread.join(timeout=10)
        for sock in sockets:
            sock.close()
