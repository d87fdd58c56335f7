"""The fetch pipeline when what comes after Kentik fails: a full disk (a real
one: a small tmpfs mounted over the images' directory) and an image stored
but never recorded. Each costs one Kentik call, never a second."""

import errno
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import time_machine

from imagecache import kentik
from imagecache.models import Fetch, FetchState
from imagecache.ops import health
from imagecache.services import claims, fetching, storing
from imagecache.services.entries import entry_create
from tests.harness.data import PNG, QUERY

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
DISK = 256 * 1024


@pytest.fixture
def small_disk(settings) -> Iterator[Path]:
    """The images' directory on a tmpfs of DISK bytes (root only; CI is root)."""
    images = Path(settings.CACHE_PATH) / "images"
    images.mkdir(parents=True, exist_ok=True)
    mounted = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(images)],
            capture_output=True,
        ).returncode
        == 0
    )
    if not mounted:
        if os.environ.get("CI"):
            pytest.fail("a tmpfs could not be mounted for the full-disk tests")
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield images
    finally:
        subprocess.run(["umount", str(images)], check=True)


def fill(directory: Path) -> None:
    """Fill the disk under `directory` to the last byte, as another tenant would."""
    with (directory / "filler").open("wb", buffering=0) as filler:
        try:
            while True:
                filler.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def chart(size: int, mark: int = 0) -> kentik.Chart:
    return kentik.Chart(media_type="image/png", data=PNG + bytes([mark]) * size)


def test_full_disk_fails_the_fetch_at_once_with_507_after_one_kentik_call(small_disk, fetch_chart):
    fill(small_disk)
    entry = entry_create(api_query=QUERY, ttl=3600)

    fetching.fetch_run(fetch_id=entry.fetch_id)
    fetching.fetch_run(fetch_id=entry.fetch_id)  # the task again: nothing to do

    fetch = Fetch.objects.get(pk=entry.fetch_id)
    assert (fetch.state, fetch.error_status, fetch.error_message) == (
        FetchState.FAILED,
        507,
        "The cache's disk is full: the image could not be stored",
    )
    assert fetch_chart.call_count == 1


def test_full_disk_with_cache_max_bytes_evicts_to_make_room(small_disk, settings, fetch_chart):
    # The bound is larger than the disk: the disk fills first.
    settings.CACHE_MAX_BYTES = 100 * DISK
    old = entry_create(api_query={**QUERY, "n": "old"}, ttl=3600)
    fetch_chart.return_value = chart(DISK // 2, mark=1)
    fetching.fetch_run(fetch_id=old.fetch_id)
    assert Fetch.objects.get(pk=old.fetch_id).state == FetchState.READY
    fill(small_disk)
    new = entry_create(api_query={**QUERY, "n": "new"}, ttl=3600)
    fetch_chart.return_value = chart(16 * 1024, mark=2)

    fetching.fetch_run(fetch_id=new.fetch_id)

    assert Fetch.objects.get(pk=new.fetch_id).state == FetchState.READY
    assert not Fetch.objects.filter(pk=old.fetch_id).exists()
    assert fetch_chart.call_count == 2


def test_readyz_storage_check_fails_when_no_byte_can_be_written(small_disk, settings):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            **settings.STORAGES["default"],
            "OPTIONS": {"location": str(small_disk), "base_url": None},
        },
    }
    assert health.check_storage()["location"] == str(small_disk)
    fill(small_disk)
    with pytest.raises(OSError) as raised:
        health.check_storage()
    assert raised.value.errno == errno.ENOSPC


def test_an_image_stored_but_never_recorded_is_recorded_without_kentik(settings, fetch_chart):
    entry = entry_create(api_query=QUERY, ttl=3600)
    # A worker stored the image, then died (or lost the database) before
    # recording it: the fetch stays `fetching`, its file on disk.
    with time_machine.travel(NOW, tick=False):
        fetch = claims.fetch_claim(fetch_id=entry.fetch_id).fetch
        assert fetch is not None
        storing.file_save(fetch=fetch, chart=chart(100, mark=7))
    fetch_chart.reset_mock()

    with time_machine.travel(NOW.timestamp() + settings.FETCH_LEASE + 1, tick=False):
        fetching.fetch_run(fetch_id=entry.fetch_id)

    fetch = Fetch.objects.get(pk=entry.fetch_id)
    assert (fetch.state, fetch.attempts, fetch.size) == (FetchState.READY, 2, len(PNG) + 100)
    assert fetch_chart.call_count == 0
