"""The Kentik shield with the real processes (gunicorn, django-q2's workers)
against the simulator: the budget shared by every worker, the pause after a
429, stale-if-error, negative caching and refresh-ahead. Each waits for a
condition with a deadline, never for a time."""

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from imagecache.hashing import query_hash
from imagecache.simulator.server import KentikSimulator
from tests.harness.data import unique_query
from tests.harness.prometheus import parse, value
from tests.harness.service import Service, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def fresh(simulator: KentikSimulator, tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """A service of the test's own (the pause and the budget are the
    deployment's), stopped at the end whatever happened."""
    started: list[Service] = []

    def make(**env: Any) -> Service:
        service = Service(
            tmp_path / f"service-{len(started)}",
            simulator.url,
            KENTIK_API_TIMEOUT=5,
            KENTIK_API_RETRIES=1,
            ENTRY_WAIT_TIMEOUT=30,
            **env,
        ).start()
        started.append(service)
        return service

    yield make
    for service in started:
        service.drop()


def info(service: Service) -> dict[str, Any]:
    return dict(requests.get(f"{service.url}/info", timeout=10).json())


def metric(service: Service, name: str, **labels: str) -> float:
    text = requests.get(f"{service.url}/metrics", timeout=10).text
    return value(parse(text), name, **labels)


def calls(simulator: KentikSimulator, api_query: dict[str, Any]) -> int:
    return int(simulator.calls()["by_query"].get(query_hash(api_query), 0))


def test_the_budget_holds_across_every_worker(simulator, fresh):
    # Kentik allows 3 calls a minute, and the service knows it.
    simulator.set_rate_limit(3)
    service = fresh(KENTIK_RATE_LIMIT=3, Q_WORKERS=3, KENTIK_MAX_CONCURRENCY=4)
    queries = [unique_query(f"budget-{n}") for n in range(5)]
    ids = [service.post(api_query, ttl=600) for api_query in queries]
    wait_for(lambda: info(service)["active_count"] == 3, timeout=60, interval=0.2)
    # The other two wait for the first call to leave the 60 s window.
    assert info(service)["pending_count"] == 2
    assert sum(calls(simulator, api_query) for api_query in queries) == 3
    kentik = info(service)["kentik"]
    assert (kentik["calls_last_minute"], kentik["rate_limit"]) == (3, 3)
    assert metric(service, "imagecache_kentik_budget_calls") == 3
    waiting = [i for i in ids if requests.get(f"{service.url}/image/{i}?wait=0").status_code == 202]
    assert len(waiting) == 2
    assert simulator.calls()["rate_limited"] == 0


def test_a_429_pauses_every_fetch_and_a_waiting_client_gets_its_image_after_it(simulator, fresh):
    service = fresh(KENTIK_RETRY_AFTER_MAX=30)
    limited, other = unique_query("paused-first"), unique_query("paused-second")
    simulator.add_rule(
        match="paused-first", status=429, message="Slow down", retry_after="2", times=1
    )
    first = service.post(limited)
    wait_for(lambda: info(service)["kentik"]["paused"], timeout=30, interval=0.1)
    second = service.post(other)
    # Both wait out the pause, then the probe goes, then the other.
    assert service.get_image(first).status_code == 200
    assert service.get_image(second).status_code == 200
    assert (calls(simulator, limited), calls(simulator, other)) == (2, 1)
    assert metric(service, "imagecache_kentik_pauses_total") == 1
    assert metric(service, "imagecache_kentik_attempts_total", status="429") == 1
    assert not info(service)["kentik"]["paused"]


def test_charts_queued_during_a_stretch_of_429s_all_arrive_one_429_per_pause(simulator, fresh):
    service = fresh(KENTIK_RETRY_AFTER_MAX=30)
    queries = [unique_query(f"429-stretch-{n}") for n in range(8)]
    # Kentik answers every call 429 (Retry-After: 2) for 10 s: five pauses or
    # so, each ended by one call, which a fetch's one retry would not outlast.
    simulator.set_outage(10, status=429, retry_after="2", message="Too Many Requests")
    try:
        ids = [service.post(queries[0])]
        wait_for(lambda: info(service)["kentik"]["paused"], timeout=30, interval=0.1)
        ids += [service.post(api_query) for api_query in queries[1:]]
        statuses = [service.get_image(entry_id).status_code for entry_id in ids]
    finally:
        simulator.clear_outage()
    assert statuses == [200] * 8
    assert [calls(simulator, api_query) >= 1 for api_query in queries] == [True] * 8
    rate_limited = metric(service, "imagecache_kentik_attempts_total", status="429")
    assert rate_limited >= 3
    assert rate_limited == metric(service, "imagecache_kentik_pauses_total")


def test_a_kentik_failure_is_answered_with_the_last_good_image(simulator, fresh):
    service = fresh(REUSE_MAX_AGE=0, KENTIK_API_BACKOFF=0.1)
    api_query = unique_query("stale-if-error")
    good = service.get_image(service.post(api_query, ttl=600))
    assert good.status_code == 200
    simulator.set_outage(600, status=503)
    again = service.post(api_query, ttl=601)
    response = service.get_image(again)
    assert response.status_code == 200, response.text
    assert response.content == good.content
    assert response.headers["ETag"] == good.headers["ETag"]
    assert response.headers["X-Image-Stale"] == "error=503"
    assert int(response.headers["Age"]) >= 0
    assert metric(service, "imagecache_stale_answers_total") == 1
    assert info(service)["stale_count"] == 1
    # The deployment is paused now: a new fetch of the query waits in line,
    # and its client gets the last good image at once.
    paused = service.get_image(service.post(api_query, ttl=602))
    assert (paused.status_code, paused.content) == (200, good.content)
    assert paused.headers["X-Image-Stale"] in ("paused", "pending")
    # Kentik is back: the next probe succeeds, and the fetch in line brings a new image.
    simulator.clear_outage()
    ttl = iter(range(603, 10_000))
    wait_for(
        lambda: (
            "X-Image-Stale" not in service.get_image(service.post(api_query, ttl=next(ttl))).headers
        ),
        timeout=60,
        interval=0.2,
    )


def test_a_query_kentik_refused_is_not_asked_again_within_negative_ttl(simulator, fresh):
    service = fresh(NEGATIVE_TTL=600)
    api_query = unique_query("refused-once")
    simulator.add_rule(match="refused-once", status=400, message="Unknown metric")
    assert service.get_image(service.post(api_query, ttl=600)).status_code == 400
    again = service.get_image(service.post(api_query, ttl=601))
    assert (again.status_code, again.json()["error"]) == (400, "Unknown metric")
    assert calls(simulator, api_query) == 1
    assert metric(service, "imagecache_negative_hits_total") == 1


def test_refresh_ahead_has_a_fresh_image_ready_before_the_old_one_ages_out(simulator, fresh):
    service = fresh(REUSE_MAX_AGE=3, REFRESH_AHEAD=0.34)
    api_query = unique_query("refresh-ahead")
    first = service.post(api_query, ttl=600)
    assert service.get_image(first).status_code == 200
    ttl = iter(range(601, 10_000))

    def post_until(name: str) -> None:
        """POST the query (each time a new entry) until the counter is 1."""
        wait_for(
            lambda: service.post(api_query, ttl=next(ttl)) and metric(service, name) == 1,
            timeout=30,
            interval=0.2,
        )

    # Past 1 s of the image's 3, a request that reuses it starts a refresh.
    post_until("imagecache_refreshes_started_total")
    wait_for(lambda: calls(simulator, api_query) == 2, timeout=30, interval=0.1)
    # Requests take the refreshed image up as soon as it is ready.
    post_until("imagecache_refreshes_used_total")
    latest = service.post(api_query, ttl=next(ttl))
    assert requests.get(f"{service.url}/image/{latest}?wait=0", timeout=10).status_code == 200
