"""What the simulator answers a topXchart body with: its checks, and the
chart drawn in the image type asked for."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Mapping
from typing import Any, Final

from imagecache.media import REQUESTED_MEDIA_TYPES
from imagecache.simulator.chart import build_chart
from imagecache.simulator.drawing import layout, to_pillow, to_svg

# Kentik's image types, and "jpg", which it takes for "jpeg" too.
MIME_TYPES: Final[Mapping[str, str]] = REQUESTED_MEDIA_TYPES
# Pillow's PDF writer stamps the current time into the document, which would make
# two answers to the same query differ; a fixed date keeps them byte-identical.
_PDF_DATE: Final = time.gmtime(946684800)


def validate_request(body: Any) -> str | None:
    """Why Kentik would reject this topXchart body, or None if it is acceptable."""
    invalid = validate_queries(body)
    if invalid is not None:
        return invalid
    allowed = ", ".join(MIME_TYPES)
    if "imageType" not in body:
        return f"Request body has no 'imageType'; use one of {allowed}"
    image_type = body["imageType"]
    if not isinstance(image_type, str) or image_type not in MIME_TYPES:
        shown = json.dumps(image_type)[:40]
        return f"Unsupported imageType {shown}; use one of {allowed}"
    return None


def validate_queries(body: Any) -> str | None:
    """Why Kentik would reject this body's queries (topXchart's or query/url's), or None."""
    if not isinstance(body, dict):
        return f"Request body must be a JSON object, not {_json_type(body)}"
    if "queries" not in body:
        return "Request body has no 'queries' list"
    queries = body["queries"]
    if not isinstance(queries, list):
        return f"'queries' must be a list, not {_json_type(queries)}"
    if not queries:
        return "'queries' must not be empty"
    for index, item in enumerate(queries):
        if not isinstance(item, dict):
            return f"queries[{index}] must be an object, not {_json_type(item)}"
        if not isinstance(item.get("query"), dict):
            return f"queries[{index}] has no 'query' object"
    return None


def _json_type(value: Any) -> str:
    names: dict[type, str] = {dict: "an object", list: "a list", str: "a string"}
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return names.get(type(value), type(value).__name__)


def render_chart(body: Mapping[str, Any]) -> tuple[str, bytes]:
    """Draw the chart a valid topXchart body asks for: its mime type and its bytes."""
    image_type = str(body["imageType"])
    chart = build_chart(body["queries"])
    canvas = layout(chart)
    if image_type == "svg":
        return MIME_TYPES[image_type], to_svg(canvas, chart.title)
    image = to_pillow(canvas)
    buffer = io.BytesIO()
    if image_type == "png":
        image.save(buffer, "PNG")
    elif image_type in ("jpg", "jpeg"):
        image.save(buffer, "JPEG", quality=90)
    else:
        image.save(buffer, "PDF", title=chart.title, creationDate=_PDF_DATE, modDate=_PDF_DATE)
    return MIME_TYPES[image_type], buffer.getvalue()
