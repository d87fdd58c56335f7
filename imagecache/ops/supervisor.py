"""`manage.py serve`'s supervisor: the Kentik simulator when there are no
credentials, then the django-q2 cluster and gunicorn as child processes,
until a signal or one of them stops.

Its signal handlers are installed when it is made, before anything starts:
a SIGTERM or Ctrl-C during the migrations stops what was started and starts
nothing more. Stopping signals every child at once and gives them one
deadline, no shorter than gunicorn's graceful timeout, so that requests in
flight (a client waiting on a pending image) are answered.

Each child runs in a process group of its own, so that a Ctrl-C typed at the
terminal reaches the supervisor alone and every child gets one signal, the
supervisor's SIGTERM: gunicorn then stops gracefully rather than quickly, and
the qcluster never gets a second signal while its handler of the first runs
(django-q2's `Cluster.sig_handler` is not reentrant). SIGHUP (the terminal
closed) stops as SIGTERM does.

Being in groups of their own, nothing would reach the children if the
supervisor died without stopping them (kill -9, the OOM killer): they would
serve on, holding the port. So each asks the kernel for a signal when the
supervisor dies (see `start`), and the qcluster also watches its parent.
"""

import errno
import functools
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from django.conf import settings

from config import gunicorn as gunicorn_config
from imagecache.ops.local_kentik import LOCAL_EMAIL, LOCAL_TOKEN
from imagecache.ops.metrics_dir import metrics_dir_prepare
from imagecache.processes import SUPERVISOR_PID, die_with_parent

if TYPE_CHECKING:
    from imagecache.simulator.server import KentikSimulator

# What the children get, together, to stop once signalled: gunicorn's graceful
# timeout, for its requests in flight, and a little for its own exit.
STOP_TIMEOUT = gunicorn_config.graceful_timeout + 5

# What stops the supervisor, and with it every child: SIGHUP is the terminal
# that closed.
STOPS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Supervisor:
    def __init__(self, write: Callable[[str], None]) -> None:
        self.write = write
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.stopping = False
        self.metrics_dir: Path | None = None
        self.simulator: KentikSimulator | None = None
        for signum in STOPS:
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def prepare_metrics_dir(self, env: dict[str, str]) -> None:
        """One metrics directory for every child, removed at the end if made here."""
        self.metrics_dir = metrics_dir_prepare(env)

    def start_simulator(self, env: dict[str, str]) -> None:
        """Start the bundled simulator in this process and point `env` at it."""
        # Here, not at the top: the simulator and Pillow are loaded only when charts are
        # simulated, and the production image has neither.
        from imagecache.simulator.server import KentikSimulator

        simulator = KentikSimulator(
            email=LOCAL_EMAIL,
            token=LOCAL_TOKEN,
            delay=float(env.get("SIMULATOR_DELAY", "1.0")),
        ).start()
        self.simulator = simulator
        env.update(
            KENTIK_API_URL=simulator.url, KT_AUTH_EMAIL=LOCAL_EMAIL, KT_AUTH_TOKEN=LOCAL_TOKEN
        )
        # A token from a file, without an email: the children would see both forms.
        env.pop("KT_AUTH_TOKEN_FILE", None)
        self.write(
            "No Kentik credentials (KT_AUTH_EMAIL and KT_AUTH_TOKEN are not set): "
            f"charts come from the bundled Kentik simulator at {simulator.url}"
        )

    def start(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        *,
        on_orphan: int = signal.SIGTERM,
    ) -> None:
        """Start a child, unless a signal came meanwhile. The child gets
        `on_orphan` from the kernel if this process dies without stopping it."""
        if self.stopping:
            return
        # The kernel signals the child when the thread that forked it ends:
        # this one must be the main thread, which lasts as long as the process.
        assert threading.current_thread() is threading.main_thread()
        process = subprocess.Popen(
            argv,
            env={**env, SUPERVISOR_PID: str(os.getpid())},
            cwd=Path(settings.BASE_DIR),
            process_group=0,
            preexec_fn=functools.partial(die_with_parent, on_orphan, os.getpid()),
        )
        self.children.append((name, process))

    def wait(self, *, announce: str = "", when: Callable[[], bool] | None = None) -> int:
        """Until a signal, or a child exits; then stop every child. Writes
        `announce` once `when()` is true (the web server listens): a line
        written before would send a newcomer's first request to a port that
        refuses it."""
        code = 0
        while not self.stopping:
            if announce and (when is None or when()):
                self.write(announce)
                announce = ""
            for name, process in self.children:
                if process.poll() is not None:
                    self.write(f"{name} exited with {process.returncode}; stopping")
                    code = process.returncode or 1
                    self.stopping = True
                    break
            time.sleep(0.2)
        self.stop()
        return code

    def stop(self) -> None:
        """Signal every child at once, wait for them until one deadline, kill
        those still running then; the simulator (which they may still call) last."""
        running = [(name, process) for name, process in self.children if process.poll() is None]
        for _, process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for name, process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.write(f"{name} did not stop in {STOP_TIMEOUT} s; killing it")
                process.kill()
                process.wait()
        if self.simulator is not None:
            self.simulator.stop()
            self.simulator = None
        if self.metrics_dir is not None:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
            self.metrics_dir = None


def listening(host: str, port: int) -> bool:
    """Whether a server takes connections on host:port (a wildcard bind is
    reached on loopback)."""
    host = host.strip("[]")
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def port_taken(host: str, port: int) -> bool:
    """Whether host:port is bound by another server already: gunicorn's bind
    (also with SO_REUSEADDR) would fail after five tries and a traceback each."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror:
        return False  # not an address: gunicorn says so
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", os.environ.get("DJANGO_SETTINGS_MODULE", ""))
    env["PYTHONUNBUFFERED"] = "1"
    return env
