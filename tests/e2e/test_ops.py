"""Health, metrics and logs of the real service: `manage.py serve` with two
gunicorn workers and a qcluster of four, against the Kentik simulator.

The metrics of every process (both web workers, every django-q2 worker) are
summed through PROMETHEUS_MULTIPROC_DIR: the totals must be exact."""

import os
import re
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from imagecache.services import fetching
from imagecache.simulator.server import KentikSimulator
from tests.harness.data import unique_query
from tests.harness.prometheus import Samples, parse, value
from tests.harness.service import Service, children, descendants, wait_for

pytestmark = pytest.mark.e2e

LOG = "imagecache.requests"
POST_200 = {"endpoint": "request-create", "method": "POST", "status": "200"}


@pytest.fixture(scope="module")
def ops_service(
    simulator: KentikSimulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    workdir = tmp_path_factory.mktemp("ops")
    service = Service(
        workdir,
        simulator.url,
        WEB_CONCURRENCY=2,
        Q_WORKERS=4,
        KENTIK_API_TIMEOUT=5,
        KENTIK_API_RETRIES=1,
        ENTRY_WAIT_TIMEOUT=30,
        # Given, so that the test can look at the files; the service empties it.
        PROMETHEUS_MULTIPROC_DIR=workdir / "metrics",
    ).start()
    yield service
    service.drop()


def scrape(service: Service) -> Samples:
    response = requests.get(f"{service.url}/metrics", timeout=10)
    assert response.status_code == 200
    return parse(response.text)


def readyz(service: Service) -> requests.Response:
    return requests.get(f"{service.url}/readyz", timeout=10)


def readyz_answers(service: Service, status: int, timeout: float) -> dict[str, Any]:
    """The body of the first /readyz answer with `status`."""
    answers: list[requests.Response] = []

    def answered() -> bool:
        answers.append(readyz(service))
        return answers[-1].status_code == status

    wait_for(answered, timeout)
    body: dict[str, Any] = answers[-1].json()
    return body


def child_running(service: Service, name: str) -> int:
    """The pid of the child of `manage.py serve` whose command line has `name`."""
    assert service.process is not None
    for pid in children(service.process.pid):
        if name in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
            return pid
    raise AssertionError(f"no {name} process")


def pids_of(log: str, logger: str, pattern: str) -> set[int]:
    """The processes that wrote the lines of `logger` matching `pattern` (plain format)."""
    line = re.compile(rf" {re.escape(logger)} (\d+) {pattern}")
    return {int(m.group(1)) for m in line.finditer(log)}


def wait_until_serving(service: Service, pid: int) -> None:
    """Until the web worker `pid` has answered a request (its log line says so)."""

    def served() -> bool:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: requests.get(f"{service.url}/info", timeout=10), range(8)))
        log = service.log_path.read_text(errors="replace")
        return pid in pids_of(log, LOG, r"GET /info")

    wait_for(served, timeout=30, interval=0.2)


def test_metric_totals_are_exact_across_web_and_queue_workers(ops_service, simulator):
    service = ops_service
    readyz_answers(service, 200, timeout=30)
    simulator.add_rule(match="ops-totals", delay=0.3)
    simulator.add_rule(match="ops-refused", status=400, message="bad query")
    before = scrape(service)

    queries = [unique_query(f"ops-totals-{n}") for n in range(12)]
    with ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(service.post, queries))
        # Two more of the first query while its fetch is in flight or fresh.
        ids += list(pool.map(service.post, [queries[0], queries[0]]))
        refused = service.post(unique_query("ops-refused"))
        responses = list(pool.map(service.get_image, ids))
    assert [r.status_code for r in responses] == [200] * 14
    assert service.get_image(refused).status_code == 400
    # Which web worker accepts a connection is the kernel's choice: unknown ids
    # (404, counted and logged, nothing else) until both have served the API.
    unknown = f"{'0' * 64}_{int(time.time()) + 3600}"
    log_pattern = r"(POST /requests|GET /image/)"
    not_found = 0
    while len(pids_of(service.log_path.read_text(errors="replace"), LOG, log_pattern)) < 2:
        assert not_found < 400, "one web worker served every request"
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda _: service.get_image(unknown).status_code, range(8)))
        assert statuses == [404] * 8
        not_found += 8

    def fetches_counted() -> Samples | None:
        # A queue worker counts its fetch just after it stores what a GET answered.
        samples = scrape(service)
        done = sum(
            value(samples, "imagecache_fetch_duration_seconds_count", outcome=outcome)
            - value(before, "imagecache_fetch_duration_seconds_count", outcome=outcome)
            for outcome in ("ready", "failed")
        )
        return samples if done >= 13 else None

    after = wait_for(fetches_counted)

    def added(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    def requests_added(endpoint: str, method: str, status: str) -> float:
        labels = {"endpoint": endpoint, "method": method, "status": status}
        return added("imagecache_http_requests_total", **labels)

    assert requests_added("request-create", "POST", "200") == 15
    assert requests_added("image-get", "GET", "200") == 14
    assert requests_added("image-get", "GET", "400") == 1
    assert requests_added("image-get", "GET", "404") == not_found
    assert added("imagecache_cache_misses_total") == 13
    assert added("imagecache_shared_fetches_total") == 2
    assert added("imagecache_cache_hits_total") == 14
    assert added("imagecache_kentik_calls_total", status="200") == 12
    assert added("imagecache_kentik_calls_total", status="400") == 1
    assert simulator.calls()["total"] == 13
    assert added("imagecache_fetch_duration_seconds_count", outcome="ready") == 12
    assert added("imagecache_fetch_duration_seconds_count", outcome="failed") == 1
    assert value(after, "imagecache_waiters") == 0
    assert value(after, "imagecache_entries", state="ready") == len(set(ids))
    assert value(after, "imagecache_fetches", state="failed") == 1

    # The sums above came from several processes of each kind.
    log = service.log_path.read_text(errors="replace")
    assert len(pids_of(log, LOG, log_pattern)) == 2
    assert len(pids_of(log, fetching.__name__, r"fetch \d+: ready")) >= 2


def test_a_dead_web_workers_counts_stay_and_its_waiters_go(ops_service):
    service = ops_service
    metrics_dir = Path(service.env["PROMETHEUS_MULTIPROC_DIR"])
    before = scrape(service)
    posts = value(before, "imagecache_http_requests_total", **POST_200)
    gunicorn = child_running(service, "gunicorn")
    workers = children(gunicorn)
    victim = workers[0]
    assert (metrics_dir / f"counter_{victim}.db").exists()

    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in children(gunicorn) and len(children(gunicorn)) == 2)
    (replacement,) = set(children(gunicorn)) - set(workers)

    # gunicorn's child_exit hook dropped the dead worker's gauge, not its counts.
    assert not (metrics_dir / f"gauge_livesum_{victim}.db").exists()
    assert (metrics_dir / f"counter_{victim}.db").exists()
    after = scrape(service)
    assert value(after, "imagecache_http_requests_total", **POST_200) == posts
    assert value(after, "imagecache_waiters") == 0
    # The tests that come next need two workers taking requests: wait until
    # the replacement has loaded its application and answered one.
    wait_until_serving(service, replacement)


def test_readyz_names_the_worker_while_the_cluster_is_stopped(ops_service):
    """`kill -9` of the qcluster would make `manage.py serve` stop everything
    (a child died); SIGSTOP stops every process of the cluster but keeps the
    service up, as a hung or unreachable worker host would."""
    service = ops_service
    ready = readyz_answers(service, 200, timeout=30)
    assert ready["checks"]["worker"] == {
        "status": "ok",
        "heartbeats": 1,
        "clusters": 1,
        "workers": 4,
    }

    qcluster = child_running(service, "manage.py\0worker")
    cluster = [qcluster, *descendants(qcluster)]
    for pid in cluster:
        os.kill(pid, signal.SIGSTOP)
    try:
        # Its last report expires 3 s after it stopped, its heartbeat 5 s after.
        body = readyz_answers(service, 503, timeout=20)
    finally:
        for pid in cluster:
            os.kill(pid, signal.SIGCONT)
    assert body["failed"] == ["worker"]
    assert body["error"] == "Not ready: worker"
    assert "no django-q2 cluster has reported" in body["checks"]["worker"]["error"]
    assert {body["checks"][name]["status"] for name in ("database", "storage", "broker")} == {"ok"}

    assert readyz_answers(service, 200, timeout=15)["status"] == "ok"


def test_healthz_and_metrics_answer_without_the_workers_help(ops_service):
    response = requests.get(f"{ops_service.url}/healthz", timeout=5)
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    response = requests.get(f"{ops_service.url}/metrics", timeout=5)
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "# TYPE imagecache_kentik_calls_total counter" in response.text
