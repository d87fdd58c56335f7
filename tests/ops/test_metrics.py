"""/metrics: counters after real requests and fetches (against the simulator,
django-q2 in sync mode), the waiters gauge, and the gauges of what the cache
holds, checked against the database row by row."""

import os
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.test import Client
from django.utils import timezone
from prometheus_client import REGISTRY

from imagecache import leases
from imagecache.api import examples
from imagecache.models import Entry, Fetch, WorkerHeartbeat
from imagecache.ops.metrics_dir import METRICS_DIR, METRICS_DIR_PREPARED, metrics_dir_prepare
from imagecache.simulator.server import KentikSimulator
from imagecache.waiting.waiter import FetchWaiter, Look
from tests.harness.data import NOW
from tests.harness.prometheus import Samples, parse, value


def scrape(client: Client) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "no-store" in response["Cache-Control"]
    return parse(response.content.decode())


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@pytest.fixture
def sim(settings: Any) -> Iterator[KentikSimulator]:
    settings.KENTIK_API_RETRIES = 0
    with KentikSimulator(email=settings.KT_AUTH_EMAIL, token=settings.KT_AUTH_TOKEN) as simulator:
        settings.KENTIK_API_URL = simulator.url
        yield simulator


@pytest.fixture
def post(client: Client, django_capture_on_commit_callbacks: Any) -> Any:
    """POST a request; its fetch runs (django-q2 is synchronous in tests)
    unless `run=False`. The entry id."""

    def post(api_query: dict[str, Any], run: bool = True, **fields: Any) -> str:
        with django_capture_on_commit_callbacks(execute=run):
            response = client.post(
                "/requests", {"api_query": api_query, **fields}, content_type="application/json"
            )
        assert response.status_code == 200, response.content
        return str(response.json()["id"])

    return post


@pytest.mark.django_db
def test_requests_hits_misses_shared_fetches_and_kentik_calls_are_counted(client, sim, post):
    before = scrape(client)
    first = post(examples.chart_query("counted"))
    second = post(examples.chart_query("counted"))  # shares the first's fetch
    sim.add_rule(match="refused", status=500, message="internal error")
    refused = post(examples.chart_query("refused"))
    assert client.get(f"/image/{first}").status_code == 200
    assert client.get(f"/image/{second}").status_code == 200
    assert client.get(f"/image/{refused}").status_code == 500
    assert client.get("/image/nonsense").status_code == 404
    after = scrape(client)

    def requests(endpoint: str, method: str, status: str) -> float:
        labels = {"endpoint": endpoint, "method": method, "status": status}
        return delta(before, after, "imagecache_http_requests_total", **labels)

    assert requests("request-create", "POST", "200") == 3
    assert requests("image-get", "GET", "200") == 2
    assert requests("image-get", "GET", "500") == 1
    assert requests("image-get", "GET", "404") == 1
    # The first scrape; the second is counted once it has answered.
    assert requests("metrics", "GET", "200") == 1
    assert delta(before, after, "imagecache_cache_misses_total") == 2
    assert delta(before, after, "imagecache_shared_fetches_total") == 1
    assert delta(before, after, "imagecache_cache_hits_total") == 2
    assert delta(before, after, "imagecache_kentik_calls_total", status="200") == 1
    assert delta(before, after, "imagecache_kentik_calls_total", status="500") == 1
    assert sim.calls()["total"] == 2
    duration = "imagecache_fetch_duration_seconds_count"
    assert delta(before, after, duration, outcome="ready") == 1
    assert delta(before, after, duration, outcome="failed") == 1


@pytest.mark.django_db
def test_unknown_paths_and_methods_are_counted_without_new_series(client):
    before = scrape(client)
    client.get("/no/such/path")
    client.generic("BREW", "/info")
    after = scrape(client)
    requests = "imagecache_http_requests_total"
    assert delta(before, after, requests, endpoint="unmatched", method="GET", status="404") == 1
    assert delta(before, after, requests, endpoint="info", method="other", status="405") == 1


def test_waiters_gauge_counts_the_requests_waiting_now():
    done = threading.Event()
    waiter = FetchWaiter(
        lambda ids: Look(in_flight=set() if done.is_set() else set(ids)), interval=0.005
    )

    def waiting() -> float:
        return REGISTRY.get_sample_value("imagecache_waiters") or 0.0

    before = waiting()
    threads = [threading.Thread(target=waiter.wait, args=(7, 30)) for _ in range(3)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while waiting() != before + 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert waiting() == before + 3
    done.set()
    for thread in threads:
        thread.join()
    assert waiting() == before


@pytest.mark.django_db
def test_entries_fetches_and_bytes_gauges_match_the_database(client, sim, post):
    post(examples.chart_query("ready-1", "png"), ttl=600)
    # Another ttl: another entry, sharing the fetch.
    post(examples.chart_query("ready-1", "png"), ttl=601)
    post(examples.chart_query("ready-2", "svg"), ttl=600)
    post(examples.chart_query("expiring", "jpg"), ttl=5)
    post(examples.chart_query("pending"), run=False)
    sim.add_rule(match="failing", status=503, message="down")
    post(examples.chart_query("failing"))

    with time_machine.travel(timezone.now() + timedelta(seconds=10)):
        samples = scrape(client)
        now = timezone.now()
        entries = Counter(
            "expired" if entry.expires_at <= now else entry.fetch.state
            for entry in Entry.objects.select_related("fetch")
        )
    fetches = Counter(fetch.state for fetch in Fetch.objects.all())
    stored: Counter[str] = Counter()
    for fetch in Fetch.objects.all():
        stored[fetch.state] += fetch.size or 0

    assert entries == {"ready": 3, "expired": 1, "pending": 1, "failed": 1}
    for state in ("pending", "fetching", "ready", "failed", "expired"):
        assert value(samples, "imagecache_entries", state=state) == entries[state], state
    for state in ("pending", "fetching", "ready", "failed"):
        assert value(samples, "imagecache_fetches", state=state) == fetches[state], state
        assert value(samples, "imagecache_stored_bytes", state=state) == stored[state], state
    assert stored["ready"] > 0


def test_metrics_dir_is_made_when_unset(tmp_path):
    env: dict[str, str] = {}
    made = metrics_dir_prepare(env)
    try:
        assert made is not None and made.is_dir()
        assert env[METRICS_DIR] == env[METRICS_DIR_PREPARED] == str(made)
    finally:
        if made is not None:
            os.rmdir(made)


def test_temp_metrics_dirs_of_dead_runs_are_removed_and_live_ones_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = tmp_path / f"imagecache-metrics-{gone.pid}-abc"
    live = tmp_path / f"imagecache-metrics-{os.getpid()}-def"
    other = tmp_path / "imagecache-metrics-notapid"
    for directory in (dead, live, other):
        directory.mkdir()
        (directory / "counter_1.db").write_bytes(b"")
    made = metrics_dir_prepare({})
    assert made is not None
    assert made.name.startswith(f"imagecache-metrics-{os.getpid()}-")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, made.name])


def test_metrics_dir_is_emptied_of_a_previous_run(tmp_path: Path):
    (tmp_path / "counter_123.db").write_bytes(b"old")
    (tmp_path / "README").write_text("not ours")
    env = {METRICS_DIR: str(tmp_path)}
    assert metrics_dir_prepare(env) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README"]
    assert env[METRICS_DIR_PREPARED] == str(tmp_path)


def test_metrics_dir_prepared_for_this_process_is_left_alone(tmp_path: Path):
    """gunicorn, started by `manage.py serve` after the qcluster, must not
    empty the directory the qcluster already writes to."""
    (tmp_path / "counter_123.db").write_bytes(b"the qcluster's")
    env = {METRICS_DIR: str(tmp_path), METRICS_DIR_PREPARED: str(tmp_path)}
    assert metrics_dir_prepare(env) is None
    assert (tmp_path / "counter_123.db").exists()


@pytest.mark.django_db
def test_oldest_pending_fetch_age_is_read_at_scrape_time(client, post):
    with time_machine.travel(NOW, tick=False):
        assert value(scrape(client), "imagecache_oldest_pending_fetch_age_seconds") == 0
        post(examples.chart_query("pending-old"), run=False)
    with time_machine.travel(NOW + timedelta(seconds=90), tick=False):
        post(examples.chart_query("pending-new"), run=False)
    with time_machine.travel(NOW + timedelta(seconds=125), tick=False):
        assert value(scrape(client), "imagecache_oldest_pending_fetch_age_seconds") == 125


@pytest.mark.django_db
def test_cache_max_bytes_is_exported_for_the_alert_on_stored_bytes(client, settings):
    assert value(scrape(client), "imagecache_cache_max_bytes") == 0
    settings.CACHE_MAX_BYTES = 5_000_000
    assert value(scrape(client), "imagecache_cache_max_bytes") == 5_000_000


@pytest.mark.django_db
def test_worker_heartbeats_gauge_counts_the_fresh_heartbeats_of_live_workers(client, settings):
    with time_machine.travel(NOW, tick=False):
        assert value(scrape(client), "imagecache_worker_heartbeats") == 0
        interval = timedelta(seconds=settings.WORKER_HEARTBEAT_INTERVAL)
        dead = subprocess.Popen(["true"])
        dead.wait()
        WorkerHeartbeat.objects.bulk_create(
            [
                WorkerHeartbeat(name="worker-host-b:1", seen_at=NOW - interval),
                WorkerHeartbeat(name="worker-host-b:2", seen_at=NOW - 6 * interval),
                WorkerHeartbeat(name=f"{leases.HOST}:{os.getpid()}", seen_at=NOW),
                WorkerHeartbeat(name=f"{leases.HOST}:{dead.pid}", seen_at=NOW),
            ]
        )
        # Another host's fresh one and this process's: not the stale one, nor the dead one's.
        assert value(scrape(client), "imagecache_worker_heartbeats") == 2
