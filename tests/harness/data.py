"""The sample query, image and credentials the tests share."""

from datetime import UTC, datetime
from typing import Any

from imagecache.api import examples

# The moment unit tests freeze the clock at.
NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)

# The credentials of end-to-end services and their simulator.
E2E_EMAIL = "e2e@example.com"
E2E_TOKEN = "e2e-token"
PNG = b"\x89PNG\r\n\x1a\n" + b"chart-bytes" * 10
QUERY: dict[str, Any] = {
    "queries": [{"bucket": "Left +Y Axis", "query": {"metric": "bytes", "filters_obj": None}}],
    "imageType": "png",
}


def unique_query(name: str, image_type: str = "png", **query: object) -> dict[str, object]:
    """A realistic query whose title makes it unique to one test."""
    return examples.chart_query(name, image_type, **query)
