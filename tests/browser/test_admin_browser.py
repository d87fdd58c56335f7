"""The admin in a real browser: headless Chromium (Debian's), driven by
Playwright (from the same venv), against the real service (gunicorn + qcluster)
and the Kentik simulator. An operator logs in, sees the picture of the last
24 hours and a ready image's thumbnail, and purges the entry; the API then
answers 404 for it."""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagecache.simulator.server import KentikSimulator
from tests.harness.data import unique_query
from tests.harness.service import ROOT, Service

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
TOOLS_PYTHON = Path(sys.executable)
FLOW = Path(__file__).with_name("admin_flow.py")
SCREENSHOT = ROOT / "test-artifacts" / "admin.png"
USER = "operator"
PASSWORD = "a browser test's password"


@pytest.fixture(scope="module")
def browser_tools() -> None:
    """Chromium and Playwright, or a skip; under CI, a failure."""
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if (
        not TOOLS_PYTHON.exists()
        or subprocess.run(
            [str(TOOLS_PYTHON), "-c", "import playwright.sync_api"], capture_output=True
        ).returncode
    ):
        missing.append(f"Playwright in {TOOLS_PYTHON.parent.parent} (make install-dev)")
    if missing:
        message = "missing: " + ", ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run the browser test")
        pytest.skip(message)


@pytest.fixture(scope="module")
def service(
    browser_tools: None, simulator: KentikSimulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    service = operator_service(tmp_path_factory.mktemp("admin-browser"), simulator.url).start()
    yield service
    service.drop()


def operator_service(workdir: Path, kentik_url: str) -> Service:
    """A node (not started) whose `createsuperuser --noinput` makes the
    operator the browser signs in as."""
    return Service(
        workdir,
        kentik_url,
        KENTIK_API_TIMEOUT=5,
        KENTIK_API_RETRIES=0,
        ENTRY_WAIT_TIMEOUT=30,
        DJANGO_SUPERUSER_USERNAME=USER,
        DJANGO_SUPERUSER_PASSWORD=PASSWORD,
        DJANGO_SUPERUSER_EMAIL="operator@example.com",
    )


def test_operator_purges_an_entry_in_a_real_browser(service: Service) -> None:
    service.manage("createsuperuser", "--noinput")
    # A few entries, so that the list (and the docs' screenshot, docs/admin.png) shows
    # ready images of two types and a query Kentik rejects.
    entry_id = service.post(unique_query("Total traffic"), ttl=3600)
    others = [
        service.post(unique_query("Traffic by site", metric="packets"), ttl=600),
        service.post(unique_query("Top talkers", "svg"), ttl=86400),
        service.post(unique_query("Rejected", "gif"), ttl=300),
    ]
    statuses = [service.get_image(i).status_code for i in [entry_id, *others]]
    assert statuses == [200, 200, 200, 400]
    [(file_name,)] = service.sql(
        "SELECT f.file_name FROM imagecache_fetch f JOIN imagecache_entry e"
        " ON e.fetch_id = f.id WHERE e.id = ?",
        (entry_id,),
    )
    image_file = service.workdir / "cache" / file_name
    assert image_file.is_file()

    result = subprocess.run(
        [str(TOOLS_PYTHON), str(FLOW), service.url, USER, PASSWORD, entry_id, str(SCREENSHOT)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr + service.log()
    # The chart counts the four fetches, the rejected one failed.
    assert "chart: 4 Kentik calls, 1 failed, in the last 24 hours" in result.stdout.splitlines()

    assert SCREENSHOT.read_bytes().startswith(b"\x89PNG")
    assert service.get_image(entry_id).status_code == 404
    assert not image_file.exists()
    assert [service.get_image(i).status_code for i in others] == [200, 200, 400]
