"""`manage.py serve` stopping: with a request in flight, by a signal, when it
dies, and when its port is taken."""

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from imagecache.ops.supervisor import listening
from imagecache.processes import process_alive
from imagecache.simulator.server import KentikSimulator
from tests.harness.data import unique_query
from tests.harness.prometheus import parse, value
from tests.harness.service import ROOT, Service, children, descendants, wait_for

pytestmark = pytest.mark.e2e


def sigterm(service: Service) -> None:
    assert service.process is not None
    service.process.send_signal(signal.SIGTERM)


def ctrl_c(service: Service) -> None:
    # What a terminal does: SIGINT to its foreground process group, the one
    # `manage.py serve` leads.
    assert service.process is not None
    os.killpg(service.process.pid, signal.SIGINT)


@pytest.mark.parametrize("stop", [sigterm, ctrl_c], ids=["sigterm", "ctrl-c"])
def test_a_slow_get_in_flight_when_sigterm_arrives_still_completes_with_200(
    simulator: KentikSimulator, tmp_path, stop: Callable[[Service], None]
):
    service = Service(tmp_path, simulator.url, ENTRY_WAIT_TIMEOUT=30).start()
    try:
        query = unique_query(f"slow-get-at-{stop.__name__}")
        # Kentik takes its time: the GET waits on the pending fetch.
        simulator.add_rule(match=f"slow-get-at-{stop.__name__}", delay=3)
        entry_id = service.post(query)
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(service.get_image, entry_id)
            wait_for(lambda: simulator.calls()["in_flight"] == 1)
            wait_for(lambda: _waiters(service) == 1)
            stop(service)
            response = answer.result(timeout=60)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "image/png"
        assert service.process is not None
        assert service.process.wait(timeout=60) == 0
    finally:
        service.drop()
    assert "did not stop" not in service.log()


def _waiters(service: Service) -> float:
    text = requests.get(f"{service.url}/metrics", timeout=5).text
    return value(parse(text), "imagecache_waiters")


def test_a_stop_in_the_middle_of_a_worker_heartbeat_keeps_no_lock_from_the_fetch_in_flight(
    simulator: KentikSimulator, tmp_path
):
    # On the embedded database, whatever the profile: SQLite's single write
    # lock is what a heartbeat's transaction held while the stop waited.
    database = tmp_path / "db.sqlite3"
    interval = 0.2
    service = Service(
        tmp_path,
        simulator.url,
        DATABASE_URL=f"sqlite:///{database}",
        WORKER_HEARTBEAT_INTERVAL=interval,
        ENTRY_WAIT_TIMEOUT=60,
    ).start()
    try:
        query = unique_query("stopped-in-a-heartbeat")
        simulator.add_rule(match="stopped-in-a-heartbeat", delay=3)
        entry_id = service.post(query)
        wait_for(lambda: simulator.calls()["in_flight"] == 1)
        wait_for(lambda: _heartbeat_age(database) < 3 * interval)
        holder = sqlite3.connect(database, timeout=30, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            # The worker's next heartbeat waits for the lock inside its transaction.
            wait_for(lambda: _heartbeat_age(database) > 3 * interval)
            assert service.process is not None
            service.process.send_signal(signal.SIGTERM)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        # The fetch in flight records its image as soon as Kentik answers
        # (in 3 s), not after SQLite's busy timeout (30 s).
        wait_for(lambda: _fetch_state(database) == "ready", timeout=20)
        assert service.process.wait(timeout=60) == 0
    finally:
        service.drop()
    assert "the database did not answer" not in service.log()
    # Its one Kentik call stands: the image is kept for the entry.
    assert simulator.calls()["total"] == 1
    assert entry_id


def _heartbeat_age(database: Path) -> float:
    """Seconds since the worker's last heartbeat, read beside the lock's holder."""
    with closing(sqlite3.connect(database, timeout=30)) as db:
        (seen,) = db.execute("SELECT max(seen_at) FROM imagecache_workerheartbeat").fetchone()
    if seen is None:
        return float("inf")
    return (datetime.now(UTC) - datetime.fromisoformat(seen).replace(tzinfo=UTC)).total_seconds()


def _fetch_state(database: Path) -> str:
    with closing(sqlite3.connect(database, timeout=30)) as db:
        (state,) = db.execute("SELECT state FROM imagecache_fetch").fetchone()
    return str(state)


# Small, but with every kind of process: gunicorn's master and workers, and
# the qcluster's process, sentinel, workers, monitor and pusher.
SMALL = {"WEB_CONCURRENCY": 2, "Q_WORKERS": 2}
# What each kind of node runs: `manage.py serve`, and `serve --worker`.
PROCESSES = {False: 1 + 2 + 1 + 1 + 2 + 2, True: 1 + 1 + 2 + 2}
# How soon the last process of a node must be gone once its supervisor is.
ORPHAN_DEADLINE = 15


def _started(tmp_path: Path, kentik_url: str, *, worker: bool) -> Service:
    service = Service(tmp_path, kentik_url, **SMALL)
    if worker:
        service.manage("migrate", "--verbosity", "0")
    process = service.start(worker=worker).process
    assert process is not None
    # Every process forked (the web workers boot after gunicorn listens).
    wait_for(lambda: len(descendants(process.pid)) == PROCESSES[worker])
    return service


def _all_gone(pids: list[int]) -> bool:
    return not [pid for pid in pids if process_alive(pid)]


def _qcluster(service: Service) -> int:
    assert service.process is not None
    for pid in children(service.process.pid):
        if b"manage.py\0worker" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    raise AssertionError("no qcluster")


@pytest.mark.parametrize(
    ("worker", "victim"),
    [(False, "supervisor"), (True, "supervisor"), (False, "qcluster")],
    ids=["serve", "serve --worker", "serve's qcluster"],
)
def test_no_process_outlives_a_kill_9_of_its_parent(
    simulator: KentikSimulator, tmp_path, worker: bool, victim: str
):
    # A kill -9 or an OOM kill leaves no one to stop the children, which are
    # in process groups of their own: they must end by themselves.
    service = _started(tmp_path, simulator.url, worker=worker)
    assert service.process is not None
    if not worker:
        # A fetch in flight that Kentik takes its time over: the qcluster's
        # graceful stop would wait for it.
        simulator.add_rule(match="in-flight-at-a-kill", delay=120)
        service.post(unique_query("in-flight-at-a-kill"))
        wait_for(lambda: simulator.calls()["in_flight"] == 1)
    every = descendants(service.process.pid)
    killed = service.process.pid if victim == "supervisor" else _qcluster(service)
    try:
        os.kill(killed, signal.SIGKILL)
        wait_for(lambda: _all_gone(every), timeout=ORPHAN_DEADLINE)
        service.process.wait(timeout=60)
    finally:
        for pid in every:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        service.drop()
    if not worker:
        # The next start finds the port free.
        assert not listening("127.0.0.1", service.port)


@pytest.mark.parametrize("worker", [False, True], ids=["serve", "serve --worker"])
def test_sighup_stops_the_service_as_sigterm_does(simulator: KentikSimulator, tmp_path, worker):
    # The terminal that ran `make run` was closed.
    service = _started(tmp_path, simulator.url, worker=worker)
    assert service.process is not None
    every = descendants(service.process.pid)
    try:
        service.process.send_signal(signal.SIGHUP)
        assert service.process.wait(timeout=60) == 0
        wait_for(lambda: _all_gone(every), timeout=ORPHAN_DEADLINE)
    finally:
        for pid in every:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        service.drop()
    assert "did not stop" not in service.log()


@pytest.mark.parametrize(("worker", "variable"), [(False, "PORT"), (True, "WORKER_METRICS_PORT")])
def test_a_start_on_a_taken_port_says_so_in_one_line_and_exits(
    simulator: KentikSimulator, tmp_path, worker: bool, variable: str
):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        service = Service(tmp_path, simulator.url, **{variable: port})
        try:
            if worker:
                # As a worker host's is: its start would use the tables.
                service.manage("migrate", "--verbosity", "0")
            result = subprocess.run(
                [sys.executable, "manage.py", "serve", *(["--worker"] if worker else [])],
                cwd=ROOT,
                env=service.env,
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            service.drop()
    output = (result.stdout + result.stderr).strip()
    assert result.returncode != 0
    assert len(output.splitlines()) == 1, output
    assert f"127.0.0.1:{port}" in output and variable in output
