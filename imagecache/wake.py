"""Wake-ups between the processes of one host, on UNIX datagram sockets.

What PostgreSQL's NOTIFY and Redis' blocking pop give the production
profile, for the embedded one: the ORM broker's pusher is woken by an
enqueue, and the web processes' waiters by a fetch that left flight, instead
of finding out at their next poll: those polls were most of the time SQLite
added to the wait for a new image.

Each listening process binds `<directory>/<channel>-<pid>`; a sender sends
one datagram to every socket of the channel, and never blocks: a socket
whose process is gone is removed, a full one is skipped. The polls stay as
the fallback for what a wake-up cannot reach (another host or container, a
datagram dropped), so a lost one costs latency, never an answer.

A leaf: it imports nothing of the app.
"""

import contextlib
import errno
import os
import select
import socket
from pathlib import Path

# The longest directory of sockets: a socket's path, this directory and
# `/<channel>-<pid>`, must fit in a sockaddr_un (107 bytes and a NUL).
MAX_DIRECTORY = 80


class Listener:
    """This process's socket on a channel; made in the process that reads it."""

    def __init__(self, directory: Path, channel: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{channel}-{os.getpid()}"
        self.pid = os.getpid()
        # A process that had this pid before may have left its socket.
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(str(self.path))

    def wait(self, timeout: float) -> list[bytes]:
        """The datagrams that came within `timeout` seconds (all waiting ones)."""
        ready, _, _ = select.select([self.socket], [], [], timeout)
        got: list[bytes] = []
        while ready:
            try:
                got.append(self.socket.recv(64, socket.MSG_DONTWAIT))
            except BlockingIOError:
                break
        return got

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()
        self.socket.close()


def send(directory: Path, channel: str, payload: bytes = b"") -> int:
    """Send `payload` to every listener of the channel; how many took it."""
    try:
        names = [name for name in os.listdir(directory) if name.startswith(f"{channel}-")]
    except FileNotFoundError:
        return 0
    sent = 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        for name in names:
            path = os.path.join(directory, name)
            try:
                sock.sendto(payload, socket.MSG_DONTWAIT, path)
                sent += 1
            except OSError as exc:
                if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                    # Nobody reads it any more: its process is gone.
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                # EAGAIN: its reader is behind; it polls anyway.
    return sent
