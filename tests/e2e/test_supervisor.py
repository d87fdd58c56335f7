"""`manage.py serve` stopping with a request in flight."""

import os
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from imagecache.simulator.server import KentikSimulator
from tests.harness.data import unique_query
from tests.harness.prometheus import parse, value
from tests.harness.service import Service, wait_for

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
