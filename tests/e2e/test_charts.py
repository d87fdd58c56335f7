"""A saved chart's URL against the real processes: gunicorn answers it, the
qcluster renders it, and the worker role keeps it warm while it is watched."""

import json
from collections.abc import Iterator

import pytest
import requests

from imagecache.simulator.server import KentikSimulator
from tests.harness.data import unique_query
from tests.harness.service import Service, wait_for

pytestmark = pytest.mark.e2e

MAX_AGE = 4


@pytest.fixture(scope="module")
def service(
    simulator: KentikSimulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    with Service(
        tmp_path_factory.mktemp("charts"), simulator.url, ENTRY_WAIT_TIMEOUT=20
    ) as service:
        query = unique_query("e2e-chart")
        del query["imageType"]
        service.manage(
            "shell",
            "-c",
            "import json; from imagecache.models import Chart;"
            f" Chart.objects.create(slug='e2e-edge', title='Edge', max_age={MAX_AGE},"
            f" query=json.loads({json.dumps(query)!r}))",
        )
        yield service


def image_fetch(service: Service) -> int:
    rows = service.sql("SELECT fetch_id FROM imagecache_chartimage")
    assert len(rows) == 1
    return int(rows[0][0])


def test_a_saved_charts_url_renders_then_answers_at_once_and_is_kept_warm(
    service: Service, simulator: KentikSimulator
):
    url = f"{service.url}/charts/e2e-edge.png"
    first = requests.get(url, timeout=30)
    assert first.status_code == 200, f"{first.text}\n{service.problems()}"
    assert first.headers["Content-Type"] == "image/png"
    calls = simulator.calls()["total"]
    assert calls == 1

    again = requests.get(url, timeout=10)
    assert again.status_code == 200
    assert again.headers["ETag"] == first.headers["ETag"]
    assert again.headers["Cache-Control"].startswith("public, max-age=")
    rendered = image_fetch(service)

    # Watched (viewed just now), it is refreshed by the worker as it reaches
    # max_age, with no viewer asking.
    refreshed = wait_for(lambda: image_fetch(service) != rendered, timeout=MAX_AGE + 20)
    assert refreshed
    assert simulator.calls()["total"] >= calls + 1
