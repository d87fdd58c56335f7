"""Saved charts in a real browser (Debian's Chromium driven by Playwright)
against the real service and the simulator: a viewer opens a chart page and
its image loads; an operator sees the chart's thumbnail in the admin's list.
The screenshots are the docs' (copy them to docs/chart-page.png and
docs/admin-charts.png when the pages' look changes)."""

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagecache.simulator.server import KentikSimulator
from tests.browser.test_admin_browser import (
    PASSWORD,
    TOOLS_PYTHON,
    USER,
    browser_tools,
    operator_service,
)
from tests.harness.data import unique_query
from tests.harness.service import ROOT, Service

pytestmark = pytest.mark.e2e

__all__ = ["browser_tools"]  # the fixture, shared
PAGE_SHOT = ROOT / "test-artifacts" / "chart-page.png"
ADMIN_SHOT = ROOT / "test-artifacts" / "admin-charts.png"
CHARTS = """\
charts:
  - slug: edge-traffic
    title: Edge traffic by site
    max_age: 300
    query: {query}
    params:
      - {{name: site, kind: choice, choices: [ams, fra, nyc], default: ams}}
  - slug: top-talkers
    title: Top talkers
    query: {other}
"""


@pytest.fixture(scope="module")
def service(
    browser_tools: None, simulator: KentikSimulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    service = operator_service(tmp_path_factory.mktemp("charts-browser"), simulator.url)
    service.env["PUBLIC_URL"] = service.url
    yield service.start()
    service.drop()


def test_a_viewer_opens_a_chart_page_and_an_operator_the_chart_list(
    service: Service, tmp_path: Path
) -> None:
    service.manage("createsuperuser", "--noinput")
    query = unique_query("Edge traffic {{site}}")
    query.pop("imageType")
    other = unique_query("Top talkers", metric="packets")
    other.pop("imageType")
    charts = tmp_path / "charts.yaml"
    # JSON is YAML: the queries go in as written.
    charts.write_text(CHARTS.format(query=json.dumps(query), other=json.dumps(other)))
    assert "2 created" in service.manage("charts_load", str(charts))

    result = subprocess.run(
        [
            str(TOOLS_PYTHON),
            "-m",
            "tests.browser.charts_flow",
            service.url,
            USER,
            PASSWORD,
            "edge-traffic",
            str(PAGE_SHOT),
            str(ADMIN_SHOT),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr + service.log()
    assert "page: Edge traffic by site" in result.stdout.splitlines()
    assert "admin: 2 charts" in result.stdout.splitlines()
    for shot in (PAGE_SHOT, ADMIN_SHOT):
        assert shot.read_bytes().startswith(b"\x89PNG")
