"""Rules that steer the simulator's answers (errors, Retry-After, delays,
hangs, broken bodies)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

# Kentik's methods the simulator answers, as rules and counters name them.
CHART: Final = "topXchart"
LINK: Final = "url"
_RULE_FIELDS: Final = frozenset(
    {
        "match",
        "delay",
        "status",
        "message",
        "retry_after",
        "hang",
        "body",
        "content_type",
        "times",
        "method",
    }
)


class RuleError(ValueError):
    """A rule or a mode that cannot be applied; the message says which field is wrong."""


@dataclass
class Rule:
    """How to answer the calls of ``method`` (topXchart unless it says "url")
    whose raw body contains ``match``."""

    match: str | None = None
    delay: float | None = None
    status: int | None = None
    message: str | None = None
    retry_after: str | None = None
    hang: bool = False
    body: str | None = None
    content_type: str = "application/json"
    times: int | None = None
    method: str = CHART

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Rule:
        """Check a rule as given over HTTP or as keyword arguments; RuleError if bad."""
        unknown = sorted(set(data) - _RULE_FIELDS)
        if unknown:
            raise RuleError(f"Unknown rule field(s): {', '.join(unknown)}")
        rule = cls()
        match = data.get("match")
        if match is not None and not isinstance(match, str):
            raise RuleError("'match' must be a string or null")
        rule.match = match
        delay = data.get("delay")
        if delay is not None:
            if (
                isinstance(delay, bool)
                or not isinstance(delay, int | float)
                or not math.isfinite(delay)
                or delay < 0
            ):
                raise RuleError("'delay' must be a number of seconds >= 0")
            rule.delay = float(delay)
        status = data.get("status")
        if status is not None:
            if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
                raise RuleError("'status' must be an HTTP status code between 100 and 599")
            rule.status = status
        message = data.get("message")
        if message is not None and not isinstance(message, str):
            raise RuleError("'message' must be a string or null")
        rule.message = message
        retry_after = data.get("retry_after")
        if retry_after is not None:
            if isinstance(retry_after, bool) or not isinstance(retry_after, str | int | float):
                raise RuleError("'retry_after' must be a string, a number or null")
            rule.retry_after = header_value("retry_after", str(retry_after))
        hang = data.get("hang", False)
        if not isinstance(hang, bool):
            raise RuleError("'hang' must be true or false")
        rule.hang = hang
        body = data.get("body")
        if body is not None and not isinstance(body, str):
            raise RuleError("'body' must be a string or null")
        rule.body = body
        content_type = data.get("content_type")
        if content_type is not None:
            if not isinstance(content_type, str) or not content_type:
                raise RuleError("'content_type' must be a non-empty string")
            rule.content_type = header_value("content_type", content_type)
        times = data.get("times")
        if times is not None:
            if isinstance(times, bool) or not isinstance(times, int) or times < 0:
                raise RuleError("'times' must be an integer >= 0 or null")
            rule.times = times
        method = data.get("method", CHART)
        if method not in (CHART, LINK):
            raise RuleError(f"'method' must be {CHART!r} or {LINK!r}")
        rule.method = method
        return rule

    def to_dict(self) -> dict[str, Any]:
        """The rule as JSON-ready data."""
        return {name: getattr(self, name) for name in sorted(_RULE_FIELDS)}


def header_value(name: str, value: str) -> str:
    """`value`, checked to be safe to send as a header; RuleError naming `name` if not."""
    # A header value with a line break would let a rule forge extra headers, and
    # http.server can only send Latin-1.
    if "\r" in value or "\n" in value:
        raise RuleError(f"'{name}' must not contain line breaks")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise RuleError(f"'{name}' must be Latin-1 text") from None
    return value
