"""Starts the real service as `make run` does (`manage.py serve`: gunicorn and
the django-q2 cluster) on loopback ports, against a Kentik stand-in."""

import contextlib
import math
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from tests import backends
from tests.harness.data import E2E_EMAIL, E2E_TOKEN

ROOT = Path(__file__).resolve().parent.parent.parent


def wait_for(condition: Callable[[], Any], timeout: float = 30, interval: float = 0.05) -> Any:
    """Poll until `condition()` is truthy; its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"not true within {timeout} s: {condition}")


_MAX_AGE = re.compile(r"max-age=(\d+)")


def same_but_max_age(first: str, second: str, elapsed: float) -> bool:
    """Whether two Cache-Control values of one image, asked `elapsed` seconds
    apart (the first first), agree: the same, but that the second's max-age
    may be less by the seconds of the clock that turned meanwhile."""
    ages = [_MAX_AGE.search(value) for value in (first, second)]
    if ages[0] is None or ages[1] is None:
        return first == second
    turned = int(ages[0].group(1)) - int(ages[1].group(1))
    masked = [_MAX_AGE.sub("max-age=-", value) for value in (first, second)]
    return masked[0] == masked[1] and 0 <= turned <= math.floor(elapsed) + 1


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`, read from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid:
            found.append(int(stat.parent.name))
    return found


def descendants(pid: int) -> list[int]:
    return [d for child in children(pid) for d in [child, *descendants(child)]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    """One node of the service. On the production profile (DATABASE_URL is
    PostgreSQL, REDIS_URL set) it gets a database and a queue of its own;
    otherwise SQLite and the ORM broker in its work directory. `env` wins."""

    def __init__(self, workdir: Path, kentik_url: str, **env: Any) -> None:
        self.workdir = workdir
        # The tree it runs from: another (a checkout of an earlier commit) may be set.
        self.root = ROOT
        self.port = free_port()
        self.own_database: str | None = None
        backend: dict[str, str] = {"DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}"}
        if backends.profile_is_production() and "DATABASE_URL" not in env:
            self.own_database = backends.create_database()
            backend = {
                "DATABASE_URL": self.own_database,
                "REDIS_URL": os.environ.get("REDIS_URL", backends.REDIS_URL),
                "Q_NAME": backends.redis_namespace(),
            }
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "service.log"
        self.env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("KT_", "KENTIK_")) and k not in ("DATABASE_URL", "REDIS_URL")
            },
            "DJANGO_SETTINGS_MODULE": "config.settings.local",
            "CACHE_PATH": str(workdir / "cache"),
            **backend,
            "PORT": str(self.port),
            "BIND": "127.0.0.1",
            "KENTIK_API_URL": kentik_url,
            "KT_AUTH_EMAIL": E2E_EMAIL,
            "KT_AUTH_TOKEN": E2E_TOKEN,
            "KENTIK_API_BACKOFF": "0.1",
            "WEB_ACCESS_LOG": "0",
            **{k: str(v) for k, v in env.items()},
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60, *, worker: bool = False) -> "Service":
        """`manage.py serve`, until it answers; with `worker`, `manage.py serve
        --worker` (the database migrated already), until its heartbeat."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        ready = self._worker_beats if worker else self._answers
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "serve", *(["--worker"] if worker else [])],
            cwd=self.root,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited:\n{self.log()}")
            if ready():
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the service did not answer in {timeout} s:\n{self.log()}")

    def _answers(self) -> bool:
        try:
            return requests.get(f"{self.url}/info", timeout=5).status_code == 200
        except (requests.ConnectionError, requests.Timeout):
            return False

    def _worker_beats(self) -> bool:
        return bool(self.sql("SELECT count(*) FROM imagecache_workerheartbeat")[0][0])

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.signal_all(signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> "Service":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.drop()

    def drop(self) -> None:
        """Stop, and drop the database made for this service, if any."""
        self.stop()
        if self.own_database:
            backends.drop_database(self.own_database)
            self.own_database = None

    def kill(self) -> None:
        """kill -9 every process of the service, as a crash or an OOM kill would."""
        assert self.process is not None
        self.signal_all(signal.SIGKILL)
        self.process.wait()

    def signal_all(self, signum: int) -> None:
        """Send `signum` to every process of the service: the supervisor's
        process group, and the group of each child (each has its own)."""
        assert self.process is not None
        groups = {self.process.pid, *children(self.process.pid)}
        for group in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signum)

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run SQL on the service's own database (SQLite or PostgreSQL), to look
        at or damage; `?` placeholders."""
        url = self.env["DATABASE_URL"]
        if url.startswith("sqlite"):
            with closing(sqlite3.connect(urlsplit(url).path, timeout=30)) as db, db:
                return db.execute(query, params).fetchall()
        import psycopg

        with psycopg.connect(url.replace("postgres://", "postgresql://", 1), autocommit=True) as pg:
            cursor = pg.execute(query.replace("?", "%s"), params)
            return cursor.fetchall() if cursor.description else []

    def manage(self, *args: str) -> str:
        """Run a management command as an operator would, with the service's settings."""
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def problems(self) -> str:
        """The service's log lines at ERROR or worse, and their tracebacks: a
        failure's cause among a busy test's many lines."""
        kept, keep = [], False
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line[:4].isdigit() or line.startswith("["):  # a new line, time first
                keep = any(level in line for level in (" ERROR ", " CRITICAL ", "[ERROR]"))
            if keep:
                kept.append(line)
        return "\n".join(kept)[-5000:]

    def post(self, api_query: dict[str, Any], ttl: int | None = None) -> str:
        body: dict[str, Any] = {"api_query": api_query}
        if ttl is not None:
            body["ttl"] = ttl
        response = requests.post(f"{self.url}/requests", json=body, timeout=10)
        assert response.status_code == 200, f"{response.text}\n{self.problems()}"
        return str(response.json()["id"])

    def get_image(self, entry_id: str, timeout: float = 60) -> requests.Response:
        return requests.get(f"{self.url}/image/{entry_id}", timeout=timeout)
