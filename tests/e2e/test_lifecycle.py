"""Crashes, restarts, pruning and the disk bound, with the real processes."""

import os
import signal
import time
from pathlib import Path

import pytest
import requests

from imagecache.hashing import query_hash
from imagecache.simulator.server import KentikSimulator
from tests.harness.data import unique_query
from tests.harness.service import Service, wait_for

pytestmark = pytest.mark.e2e


def images(service: Service) -> list[Path]:
    """The image files (not the fast path's links to them)."""
    return sorted(p for p in (service.workdir / "cache" / "images").rglob("*") if p.is_file())


def fetch_row(service: Service, api_query: dict) -> tuple:
    rows = service.sql(
        "SELECT state, lease_owner, attempts FROM imagecache_fetch WHERE query_hash = ?"
        " ORDER BY id DESC",
        (query_hash(api_query),),
    )
    return rows[0] if rows else (None, None, None)


@pytest.fixture
def fresh(simulator: KentikSimulator, tmp_path: Path):
    """A service of the test's own, stopped at the end whatever happened."""
    started: list[Service] = []

    def make(**env) -> Service:
        service = Service(tmp_path, simulator.url, KENTIK_API_TIMEOUT=10, **env)
        started.append(service)
        return service

    yield make
    for service in started:
        service.drop()


def test_kill_9_of_everything_mid_fetch_then_restart_delivers_the_image(simulator, fresh):
    api_query = unique_query("crash")
    simulator.add_rule(match="crash", delay=3)
    service = fresh().start()
    entry_id = service.post(api_query)
    wait_for(lambda: simulator.calls()["in_flight"] == 1)
    service.kill()
    restarted = time.monotonic()
    service.start()
    response = service.get_image(entry_id)
    recovery = time.monotonic() - restarted
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/png"
    # The fetch is taken up at once (its worker is seen dead), then Kentik's 3 s.
    assert recovery < 30 + 3
    assert simulator.calls()["by_query"][query_hash(api_query)] == 2


def test_kill_9_of_the_fetching_worker_is_taken_over(simulator, fresh):
    api_query = unique_query("worker-dies")
    simulator.add_rule(match="worker-dies", delay=2, times=1)
    service = fresh().start()
    entry_id = service.post(api_query)
    _, owner, _ = wait_for(lambda: (row := fetch_row(service, api_query))[0] == "fetching" and row)
    # Killed mid-call, not between its claim and its call.
    wait_for(lambda: simulator.calls()["by_query"].get(query_hash(api_query)) == 1)
    os.kill(int(owner.rsplit(":", 1)[1]), signal.SIGKILL)
    started = time.monotonic()
    response = service.get_image(entry_id)
    assert response.status_code == 200
    assert time.monotonic() - started < 20
    assert fetch_row(service, api_query)[2] == 2  # claimed twice
    assert simulator.calls()["by_query"][query_hash(api_query)] == 2


def test_poisoned_pending_fetches_do_not_stop_a_restart(simulator, fresh):
    service = fresh(FETCH_MAX_ATTEMPTS=2).start()
    broken = service.post(unique_query("to-be-broken"))
    worn_out = service.post(unique_query("to-be-worn-out"))
    service.get_image(broken)
    service.get_image(worn_out)
    service.stop()
    # Back to in flight, as a fetch that never finished would be: no fast-path
    # links, and no image file (one would be recorded, not fetched again).
    for entry_id in (broken, worn_out):
        (service.workdir / "cache" / "by-id" / entry_id).unlink()
        for image in images(service):
            if image.name.startswith(entry_id.split("_")[0]):
                image.unlink()
    service.sql(
        "UPDATE imagecache_fetch SET state = 'pending', query_json = '{not json'"
        " WHERE query_hash = ?",
        (broken.split("_")[0],),
    )
    service.sql(
        "UPDATE imagecache_fetch SET state = 'fetching', attempts = 2,"
        " lease_owner = 'gone-host:1', lease_until = '2000-01-01 00:00:00+00'"
        " WHERE query_hash = ?",
        (worn_out.split("_")[0],),
    )
    service.start()
    assert service.get_image(broken).status_code == 502
    response = service.get_image(worn_out)
    assert response.status_code == 502
    assert "Gave up after 2 attempts" in response.json()["error"]
    healthy = service.post(unique_query("healthy-after-poison"))
    assert service.get_image(healthy).status_code == 200


def test_prune_cache_removes_expired_rows_and_files(simulator, fresh):
    # Else the last image of a query stays for STALE_IF_ERROR (tests/test_shield.py).
    service = fresh(STALE_IF_ERROR=0).start()
    # Long enough to be fetched and read on a busy machine; then it expires.
    short = service.post(unique_query("short-lived"), ttl=10)
    kept = service.post(unique_query("long-lived"), ttl=3600)
    assert service.get_image(short).status_code == 200
    assert service.get_image(kept).status_code == 200
    assert len(images(service)) == 2
    wait_for(lambda: service.get_image(short).status_code == 404, timeout=30, interval=0.5)
    output = service.manage("prune_cache")
    assert output.startswith("Pruned 1 entries, 1 fetches, 1 files")
    assert [p.name.rsplit("-", 1)[0] for p in images(service)] == [f"{kept.split('_')[0]}-2"]
    assert service.sql("SELECT id FROM imagecache_entry") == [(kept,)]


def test_scheduled_maintenance_prunes_without_anyone_asking(simulator, fresh):
    service = fresh(CACHE_MAINTENANCE_PERIOD=60, STALE_IF_ERROR=0).start()
    # Long enough to be fetched and read on a busy machine; then it expires.
    entry_id = service.post(unique_query("scheduled-prune"), ttl=10)
    assert service.get_image(entry_id).status_code == 200
    assert len(images(service)) == 1
    # django-q2's scheduler looks every 30 s; the schedule is due at once,
    # then every 60 s: the run after the expiry comes within 100 s.
    wait_for(lambda: not images(service), timeout=150, interval=1)
    assert service.sql("SELECT count(*) FROM imagecache_entry") == [(0,)]


def test_disk_stays_under_cache_max_bytes(simulator, fresh):
    bound = 100_000
    service = fresh(CACHE_MAX_BYTES=bound).start()
    ids, sizes = [], []
    for n in range(10):
        ids.append(service.post(unique_query(f"evict-{n}"), ttl=3600))
        assert service.get_image(ids[-1]).status_code == 200
        sizes.append(sum(p.stat().st_size for p in images(service)))
    assert max(sizes) <= bound
    assert sum(p.stat().st_size for p in images(service)) <= bound
    # The newest images stay; the least recently read ones answer 404.
    assert service.get_image(ids[-1]).status_code == 200
    assert service.get_image(ids[0]).status_code == 404
    info = requests.get(f"{service.url}/info", timeout=5).json()
    assert info["stored_bytes"] <= bound


def test_recover_pending_is_safe_to_run_at_any_time(simulator, fresh):
    simulator.add_rule(match="recover-any-time", delay=1)
    service = fresh().start()
    entry_id = service.post(unique_query("recover-any-time"))
    for _ in range(3):
        assert "pending fetches" in service.manage("recover_pending")
    assert service.get_image(entry_id).status_code == 200
    assert simulator.calls()["total"] == 1
