import shutil
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from django.conf import settings

from imagecache import kentik

PNG = b"\x89PNG\r\n\x1a\n" + b"chart-bytes" * 10
QUERY: dict[str, Any] = {
    "queries": [{"bucket": "Left +Y Axis", "query": {"metric": "bytes", "filters_obj": None}}],
    "imageType": "png",
}


@pytest.fixture(autouse=True)
def _clean_cache_path() -> Iterator[None]:
    yield
    shutil.rmtree(settings.CACHE_PATH, ignore_errors=True)
    settings.CACHE_PATH.mkdir(parents=True, exist_ok=True)


@pytest.fixture
def fetch_chart() -> Iterator[mock.MagicMock]:
    """The Kentik seam, patched: unit tests only."""
    with mock.patch.object(kentik, "fetch_chart", autospec=True) as patched:
        patched.return_value = kentik.Chart(media_type="image/png", data=PNG)
        yield patched
