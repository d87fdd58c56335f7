"""Outages of what the service stands on, and crashes of the service itself,
with the real processes: what Kentik answered is kept and costs no second
Kentik call, and a restarted service says it is ready once it is."""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from imagecache.simulator.server import KentikSimulator
from tests import backends
from tests.harness.data import unique_query
from tests.harness.service import Service, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def pg_service(simulator: KentikSimulator, tmp_path: Path) -> Iterator[Service]:
    backends.require_production_profile()
    with Service(tmp_path, simulator.url, KENTIK_API_TIMEOUT=20) as service:
        yield service


@contextmanager
def database_outage(service: Service) -> Iterator[None]:
    """The service's database refuses every connection, and those it had are cut."""
    import psycopg

    assert service.own_database is not None
    name = urlsplit(service.own_database).path.lstrip("/")
    with psycopg.connect(backends.POSTGRES_URL.replace("postgres://", "postgresql://", 1)) as pg:
        pg.autocommit = True
        pg.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        pg.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name]
        )
        try:
            yield
        finally:
            pg.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def test_image_fetched_during_a_database_outage_is_recorded_after_it(pg_service, simulator):
    simulator.add_rule(delay=2)
    entry_id = pg_service.post(unique_query("database outage"))
    wait_for(lambda: simulator.calls()["in_flight"] == 1, timeout=30)

    with database_outage(pg_service):
        # Kentik answers while the database is down; the worker has the image
        # and tries to record it.
        wait_for(lambda: "the database did not answer" in pg_service.log(), timeout=30)

    # Each web worker's pool reconnects in its own time: a GET may be 503 until then.
    image = wait_for(
        lambda: (
            (answer := pg_service.get_image(entry_id, timeout=60)).status_code != 503 and answer
        ),
        timeout=90,
        interval=0.5,
    )
    assert image.status_code == 200, image.text
    assert image.headers["Content-Type"] == "image/png"
    assert simulator.calls()["total"] == 1


def test_post_during_a_database_outage_is_503_with_retry_after(pg_service):
    with database_outage(pg_service):
        # A web worker waits for its pool's connection up to 30 s, then gives up.
        response = requests.post(
            f"{pg_service.url}/requests",
            json={"api_query": unique_query("posted during an outage")},
            timeout=90,
        )
    assert response.status_code == 503, response.text
    assert response.json() == {
        "error": "The database does not answer; try again shortly.",
        "status": 503,
    }
    assert response.headers["Retry-After"] == "5"
    assert response.headers["Cache-Control"] == "no-store"
    # Once it answers again (each web worker's pool reconnects in its own
    # time), the same POST gets its id.
    body = {"api_query": unique_query("posted during an outage")}

    def posted() -> bool:
        answer = requests.post(f"{pg_service.url}/requests", json=body, timeout=90)
        assert answer.status_code in (200, 503), answer.text
        return answer.status_code == 200 and "id" in answer.json()

    wait_for(posted, timeout=90, interval=0.5)


def test_no_request_fails_after_postgresql_dropped_every_connection(pg_service):
    ready_id = pg_service.post(unique_query("before the restart"))
    wait_for(lambda: pg_service.get_image(ready_id).status_code == 200, timeout=60)
    # Every web worker has a pool with connections in it: requests that need
    # the database (a POST, a GET with a query string) went to each.
    for n in range(40):
        pg_service.post(unique_query(f"warming {n}"))
    assert pg_service.own_database is not None
    # What a restart of PostgreSQL does to the connections the service holds.
    ended = backends.connections_end(urlsplit(pg_service.own_database).path.lstrip("/"))
    assert ended

    statuses = []
    for n in range(20):
        posted = requests.post(
            f"{pg_service.url}/requests",
            json={"api_query": unique_query(f"after the restart {n}")},
            timeout=60,
        )
        got = requests.get(f"{pg_service.url}/image/{ready_id}?wait=0", timeout=60)
        statuses.append((posted.status_code, got.status_code))
    assert statuses == [(200, 200)] * 20, f"{statuses}\n{pg_service.problems()}"


def test_readyz_stays_ready_through_ten_kill_9_and_restarts(simulator, tmp_path):
    with Service(tmp_path, simulator.url) as service:
        for _ in range(10):
            service.kill()
            service.start()
            # Once a worker is up, every probe says so: the dead cluster's
            # report expiring meanwhile must not hide the new one.
            wait_for(
                lambda: requests.get(f"{service.url}/readyz", timeout=10).status_code == 200,
                timeout=60,
            )
            # Probe over the dead cluster's whole report lifetime (3 s) and more.
            statuses = set()
            window = time.monotonic() + 4
            while time.monotonic() < window:
                statuses.add(requests.get(f"{service.url}/readyz", timeout=10).status_code)
            assert statuses == {200}
