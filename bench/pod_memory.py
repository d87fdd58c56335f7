#!/usr/bin/env python3
"""The memory of each of the image's roles, as its Kubernetes pod runs it
(deploy/kubernetes/): what the manifests' requests and limits are set from.

Starts the `web` role (gunicorn, config/gunicorn.py) and the `worker` role
(`manage.py serve --worker`: the qcluster and its forked workers) as the
entry point does, each in a session of its own, on the production settings
with the pods' process counts (WEB_CONCURRENCY, Q_WORKERS), PostgreSQL and
Redis, against the bundled simulator. A container's memory is what its
processes hold together, shared pages once: the sum of their PSS (read from
/proc/<pid>/smaps_rollup, as bench/run.py does). Printed per role, idle, at
the peak of a burst (sampled every 0.2 s), and settled after it. The burst:
`--fetches` new queries posted (each a fetch of an 1800x900 PNG by the
worker) and their images read, then `--reads` reads of them, 32 at a time.

Usage: .venv/bin/python bench/pod_memory.py [--fetches 200] [--reads 4000]
           [--database-url postgres://...] [--redis-url redis://...]
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import service_memory  # noqa: E402
from bench.waiters import session_pids  # noqa: E402
from imagecache.api.examples import chart_query  # noqa: E402
from imagecache.simulator.server import KentikSimulator  # noqa: E402
from tests.harness.data import E2E_EMAIL, E2E_TOKEN  # noqa: E402
from tests.harness.service import free_port, wait_for  # noqa: E402

# The process counts the manifests give each pod (a pod's os.cpu_count() is
# the node's, not its CPU limit, so the defaults would follow the node).
WEB_CONCURRENCY = "2"
Q_WORKERS = "4"
HOST = "imagecache.example.com"
# As the entry point runs each role (config/entrypoint.sh).
ROLES = {
    "web": [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi"],
    "worker": [sys.executable, "manage.py", "serve", "--worker"],
}


def role_memory(leader: int) -> dict[str, int]:
    """A role's container: every process of the session its command started."""
    pids = session_pids(leader)
    return {**service_memory(pids), "processes": len(pids)}


class PeakSampler:
    """The largest PSS each role's processes held together while it ran."""

    def __init__(self, leaders: dict[str, int]) -> None:
        self.leaders = leaders
        self.peak = {role: {"pss": 0, "rss": 0} for role in leaders}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for role, leader in self.leaders.items():
                memory = role_memory(leader)
                if memory["pss"] > self.peak[role]["pss"]:
                    self.peak[role] = {"pss": memory["pss"], "rss": memory["rss"]}

    def __enter__(self) -> "PeakSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def roles(env: dict[str, str], workdir: Path) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    started: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for role, command in ROLES.items():
            log = (workdir / f"{role}.log").open("ab")
            started[role] = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        yield started
    finally:
        for process in started.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in started.values():
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def settled(leaders: dict[str, int], expected: dict[str, int]) -> dict[str, dict[str, int]]:
    """Each role's memory once it runs all its processes and its RSS holds
    within 5% between two readings a second apart."""
    before = {role: role_memory(leader) for role, leader in leaders.items()}
    for _ in range(30):
        time.sleep(1)
        now = {role: role_memory(leader) for role, leader in leaders.items()}
        if all(
            now[role]["processes"] >= expected[role]
            and abs(now[role]["rss"] - before[role]["rss"]) < 0.05 * before[role]["rss"]
            for role in leaders
        ):
            return now
        before = now
    return before


def burst(url: str, fetches: int, reads: int) -> None:
    session = requests.Session()
    session.headers["Host"] = HOST
    stamp = time.time_ns()

    def fetch(i: int) -> str:
        body = {"api_query": chart_query(f"pod-memory-{stamp}-{i}", "png", width=1800, height=900)}
        answer = session.post(f"{url}/requests", json=body, timeout=30)
        answer.raise_for_status()
        entry = str(answer.json()["id"])
        image = session.get(f"{url}/image/{entry}", timeout=120)
        image.raise_for_status()
        return entry

    with ThreadPoolExecutor(32) as pool:
        entries = list(pool.map(fetch, range(fetches)))

        def read(i: int) -> None:
            session.get(f"{url}/image/{entries[i % len(entries)]}", timeout=30).raise_for_status()

        list(pool.map(read, range(reads)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fetches", type=int, default=200)
    parser.add_argument("--reads", type=int, default=4000)
    parser.add_argument(
        "--database-url", default="postgres://postgres@127.0.0.1:5432/imagecache_pod_memory"
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args(argv)

    subprocess.run(
        [sys.executable, "-m", "tests.backends", args.database_url, args.redis_url],
        cwd=ROOT, check=True,
    )  # fmt: skip
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (
        tempfile.TemporaryDirectory(prefix="pod-memory-") as work,
        KentikSimulator(email=E2E_EMAIL, token=E2E_TOKEN) as simulator,
    ):
        workdir = Path(work)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("KT_", "KENTIK_"))},
            "DJANGO_SETTINGS_MODULE": "config.settings.production",
            "SECRET_KEY": "pod-memory",
            "ALLOWED_HOSTS": HOST,
            "CACHE_PATH": str(workdir / "cache"),
            "DATABASE_URL": args.database_url,
            "REDIS_URL": args.redis_url,
            "Q_NAME": f"podmemory{os.getpid()}",
            "KENTIK_API_URL": simulator.url,
            "KT_AUTH_EMAIL": E2E_EMAIL,
            "KT_AUTH_TOKEN": E2E_TOKEN,
            "BIND": "127.0.0.1",
            "PORT": str(port),
            "WEB_CONCURRENCY": WEB_CONCURRENCY,
            "Q_WORKERS": Q_WORKERS,
            "WEB_ACCESS_LOG": "0",
            "PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics"),
        }
        # The migrate Job's work, before the roles start.
        for command in (["migrate", "--noinput"], ["register_schedules"]):
            subprocess.run(
                [sys.executable, "manage.py", *command],
                cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL,
            )  # fmt: skip
        with roles(env, workdir) as started:
            leaders = {role: process.pid for role, process in started.items()}
            # The web's master and workers; the worker's supervisor, qcluster
            # (guard, monitor, pusher, heartbeat) and its Q_WORKERS workers.
            expected = {"web": 1 + int(WEB_CONCURRENCY), "worker": 5 + int(Q_WORKERS)}

            def ready() -> bool:
                try:
                    answer = requests.get(f"{url}/readyz", headers={"Host": HOST}, timeout=5)
                except requests.RequestException:
                    return False
                return answer.status_code == 200

            wait_for(ready, timeout=120, interval=0.5)
            idle = settled(leaders, expected)
            with PeakSampler(leaders) as sampler:
                burst(url, args.fetches, args.reads)
            after = settled(leaders, expected)
    report: dict[str, Any] = {
        role: {
            "processes": after[role]["processes"],
            "idle_pss_mib": round(idle[role]["pss"] / 2**20, 1),
            "idle_rss_mib": round(idle[role]["rss"] / 2**20, 1),
            "peak_pss_mib": round(sampler.peak[role]["pss"] / 2**20, 1),
            "peak_rss_mib": round(sampler.peak[role]["rss"] / 2**20, 1),
            "after_pss_mib": round(after[role]["pss"] / 2**20, 1),
            "after_rss_mib": round(after[role]["rss"] / 2**20, 1),
        }
        for role in leaders
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
