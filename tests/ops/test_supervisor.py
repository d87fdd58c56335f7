"""The supervisor of `manage.py serve`: its signal handlers, and how it stops
its children."""

import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagecache.ops import supervisor
from imagecache.ops.supervisor import Supervisor
from imagecache.processes import SUPERVISOR_PID, supervisor_gone
from tests.harness.service import ROOT

# A child that, once signalled, exits only when its sibling was signalled too:
# stopping children one at a time would leave the first waiting for the
# second until the deadline.
SIBLING = """
import pathlib, signal, sys, time
mine, theirs = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
def stop(signum, frame):
    mine.touch()
    deadline = time.monotonic() + 60
    while not theirs.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    sys.exit(0 if theirs.exists() else 3)
signal.signal(signal.SIGTERM, stop)
pathlib.Path(sys.argv[1] + ".ready").touch()
while True:
    time.sleep(1)
"""


@pytest.fixture
def handlers() -> Iterator[None]:
    """The test process's own handlers, back after the test."""
    saved = {signum: signal.getsignal(signum) for signum in supervisor.STOPS}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_signal_handlers_are_installed_before_anything_starts(handlers):
    runner = Supervisor(lambda line: None)
    assert signal.getsignal(signal.SIGTERM) == runner._on_signal
    assert signal.getsignal(signal.SIGINT) == runner._on_signal
    # The terminal closed: stop, as for SIGTERM, rather than die and leave the children.
    assert signal.getsignal(signal.SIGHUP) == runner._on_signal


def test_nothing_starts_after_a_signal(handlers, tmp_path):
    runner = Supervisor(lambda line: None)
    signal.raise_signal(signal.SIGTERM)  # say, during the migrations
    runner.start("web", [sys.executable, "-c", "pass"], {})
    assert runner.children == []
    assert runner.wait() == 0


def test_every_child_is_signalled_at_once(handlers, tmp_path, monkeypatch):
    # A deadline the children cannot reach unless they are signalled together.
    monkeypatch.setattr(supervisor, "STOP_TIMEOUT", 60)
    runner = Supervisor(lambda line: None)
    first, second = tmp_path / "first", tmp_path / "second"
    for mine, theirs in ((first, second), (second, first)):
        argv = [sys.executable, "-c", SIBLING, str(mine), str(theirs)]
        runner.start(mine.name, argv, {})
    for child in (first, second):
        _wait_for_file(Path(f"{child}.ready"))
    runner.stop()
    assert [process.returncode for _, process in runner.children] == [0, 0]


def test_each_child_has_a_process_group_of_its_own(handlers, tmp_path):
    # A Ctrl-C at the terminal reaches the supervisor alone, which signals each
    # child once.
    runner = Supervisor(lambda line: None)
    ready = tmp_path / "child"
    runner.start("child", [sys.executable, "-c", SIBLING, str(ready), str(ready)], {})
    _wait_for_file(Path(f"{ready}.ready"))
    ((_, process),) = runner.children
    try:
        assert os.getpgid(process.pid) == process.pid != os.getpgid(0)
    finally:
        runner.stop()
    assert process.returncode == 0


def test_the_stop_deadline_outlasts_gunicorns_graceful_timeout():
    from config import gunicorn

    assert supervisor.STOP_TIMEOUT > gunicorn.graceful_timeout


# A web worker just forked, before its own signal handlers: the master's queue
# as the fork copied it (argv[1]: a signal already in it, or "none"), then a
# stop sent to the worker itself ("kill"), or nothing.
JUST_FORKED = """
import os, queue, signal, sys, time, types
from config import gunicorn
server = types.SimpleNamespace(SIG_QUEUE=queue.SimpleQueue())
if sys.argv[1] != "none":
    server.SIG_QUEUE.put(getattr(signal, sys.argv[1]))
gunicorn.post_fork(server, None)
print("booting", flush=True)
if sys.argv[2] == "kill":
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)  # the handler runs before the sleep ends
    print("still booting", flush=True)
"""


@pytest.mark.parametrize(
    ("queued", "then", "printed"),
    [
        ("SIGTERM", "", ""),  # the stop came before the hook: taken, not lost
        ("SIGINT", "", ""),
        ("none", "kill", "booting\n"),  # it comes after: the worker ends at once
        ("SIGCHLD", "", "booting\n"),  # not a stop: it boots
    ],
)
def test_a_stop_between_a_web_workers_fork_and_its_handlers_ends_it(queued, then, printed):
    import subprocess

    result = subprocess.run(
        [sys.executable, "-c", JUST_FORKED, queued, then or "-"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout) == (0, printed), result.stderr


def _wait_for_file(path: Path) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def test_the_simulator_replaces_a_token_from_a_file_in_the_childrens_environment(handlers):
    # A token from a file without an email is no credentials: the children
    # get the simulator's, and must not see both KT_AUTH_TOKEN and its _FILE.
    runner = Supervisor(lambda line: None)
    env = {"KT_AUTH_TOKEN_FILE": "/run/secrets/kentik_token"}
    runner.start_simulator(env)
    try:
        assert runner.simulator is not None
        assert env["KENTIK_API_URL"] == runner.simulator.url
        assert "KT_AUTH_TOKEN_FILE" not in env
        assert env["KT_AUTH_TOKEN"]
    finally:
        runner.stop()


def test_the_address_is_announced_once_the_server_listens(handlers, tmp_path):
    lines: list[str] = []
    runner = Supervisor(lines.append)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        checks: list[bool] = []

        def when() -> bool:
            checks.append(supervisor.listening("127.0.0.1", port))
            if checks[-1]:
                runner.stopping = True
            elif len(checks) == 2:
                server.listen()
            return checks[-1]

        assert runner.wait(announce="on :port", when=when) == 0
    assert checks == [False, False, True]
    assert lines == ["on :port"]
    assert supervisor.listening("0.0.0.0", port) is False


# A supervisor in a process of its own (argv[1]: where its child writes down
# the signal it gets).
ORPHANED = """
import os, signal, sys, django
django.setup()
from imagecache.ops.supervisor import Supervisor
from imagecache.processes import SUPERVISOR_PID, supervisor_gone
CHILD = (
    "import pathlib, signal, sys, time\\n"
    "def got(signum, frame):\\n"
    "    pathlib.Path(sys.argv[1]).write_text(signal.Signals(signum).name)\\n"
    "    sys.exit(0)\\n"
    "for signum in (signal.SIGTERM, signal.SIGQUIT):\\n"
    "    signal.signal(signum, got)\\n"
    "pathlib.Path(sys.argv[1] + '.ready').touch()\\n"
    "while True:\\n"
    "    time.sleep(1)\\n"
)
runner = Supervisor(print)
runner.start(
    "child", [sys.executable, "-c", CHILD, sys.argv[1]], dict(os.environ),
    on_orphan=signal.SIGQUIT,
)
print(runner.children[0][1].pid, flush=True)
signal.pause()
"""


def test_a_child_gets_its_signal_when_the_supervisor_is_killed(tmp_path):
    import subprocess

    got = tmp_path / "got"
    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHANED, str(got)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        _wait_for_file(Path(f"{got}.ready"))
        parent.kill()
        parent.wait()
        # gunicorn's quick stop, as `serve` asks for its web child.
        _wait_for_file(got)
        assert got.read_text() == "SIGQUIT"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def test_a_child_that_lost_its_supervisor_knows_it(monkeypatch):
    monkeypatch.delenv(SUPERVISOR_PID, raising=False)
    assert not supervisor_gone()  # not started by a supervisor: it runs on
    monkeypatch.setenv(SUPERVISOR_PID, str(os.getppid()))
    assert not supervisor_gone()
    monkeypatch.setenv(SUPERVISOR_PID, str(os.getppid() + 1))
    assert supervisor_gone()


def test_a_port_another_server_listens_on_is_taken():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert supervisor.port_taken("127.0.0.1", port)
        # gunicorn's wildcard bind would fail on it too.
        assert supervisor.port_taken("0.0.0.0", port)
    assert not supervisor.port_taken("127.0.0.1", port)
