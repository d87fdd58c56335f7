"""A JSON parser that refuses what could hurt the service before parsing it."""

import json
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

# Far below Python's recursion limit, far above any real Kentik query.
MAX_DEPTH = 64


class PayloadTooLarge(ParseError):
    status_code = 413
    default_detail = "The request body is too large."
    default_code = "payload_too_large"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def json_depth(value: Any) -> int:
    """How deeply arrays and objects nest in a parsed JSON value."""
    depth = 0
    level = [value]
    while level:
        containers = [item for item in level if isinstance(item, dict | list)]
        if not containers:
            break
        depth += 1
        level = [
            child
            for item in containers
            for child in (item.values() if isinstance(item, dict) else item)
        ]
    return depth


class StrictJSONParser(JSONParser):
    """JSON only, at most DATA_UPLOAD_MAX_MEMORY_SIZE bytes, MAX_DEPTH levels, no NaN."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        # DRF hands over Django's request.body, which is already capped at
        # DATA_UPLOAD_MAX_MEMORY_SIZE (RequestDataTooBig, answered 413); the
        # check here covers a stream given by anything else.
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
        try:
            data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except RecursionError:
            raise ParseError(f"JSON nested deeper than {MAX_DEPTH} levels.") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise ParseError(f"The request body is not valid JSON: {exc}") from None
        if json_depth(data) > MAX_DEPTH:
            raise ParseError(f"JSON nested deeper than {MAX_DEPTH} levels.")
        return data


class AnyTypeJSONParser(StrictJSONParser):
    """Reads the body as JSON whatever its Content-Type says (curl's -d sends
    form-encoded), as the service this one replaces did."""

    media_type = "*/*"
