"""Kentik's two methods as the simulator answers them, apart from the HTTP
around them: `query/topXchart` (a chart drawn from the query) and
`query/url` (a stable portal link per query). Both go through the same
modes, rules and credentials check, in that order.
"""

from __future__ import annotations

import base64
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from http import HTTPStatus
from typing import Any, Final

from imagecache.hashing import query_hash
from imagecache.simulator.render import render_chart, validate_queries, validate_request
from imagecache.simulator.rules import CHART, LINK
from imagecache.simulator.state import State

HANG_SECONDS: Final = 600.0
TOKEN_HEADER: Final = "X-CH-Auth-API-Token"
EMAIL_HEADER: Final = "X-CH-Auth-Email"
# Where the simulator's portal links point: Kentik's own form of them.
PORTAL_LINK: Final = "https://portal.kentik.com/portal/#Charts/shortUrl/{}"

__all__ = ["CHART", "LINK", "Answer", "answer", "portal_link"]


@dataclass
class Answer:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


def _json(status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> Answer:
    return Answer(status, json.dumps(payload).encode("utf-8"), headers=headers or [])


def portal_link(parsed: Any) -> str:
    """The link the simulator answers for a query: the same for equal queries."""
    return PORTAL_LINK.format(query_hash(parsed)[:32])


def answer(
    method: str,
    state: State,
    headers: Message,
    raw: bytes,
    parsed: Any,
    problem: str | None,
    log: Callable[..., None],
) -> Answer | None:
    """What `method` (CHART or LINK) answers to a call; None to close without answer."""
    # The modes stand in front of Kentik's renderer: they answer at once,
    # before any rule or delay.
    refusal = state.admit((headers.get(EMAIL_HEADER, ""), headers.get(TOKEN_HEADER, "")))
    if refusal is not None:
        waits = [] if refusal.retry_after is None else [("Retry-After", refusal.retry_after)]
        return _json(refusal.status, {"error": refusal.message}, waits)
    rule = state.take_rule(raw.decode("utf-8", errors="replace"), method=method)
    delay = rule.delay if rule is not None and rule.delay is not None else state.delay
    if delay > 0 and state.stopping.wait(delay):
        # Shutting down: answering early would break the promise of the delay.
        return None
    if rule is not None and rule.hang:
        state.stopping.wait(HANG_SECONDS)
        return None
    extra: list[tuple[str, str]] = []
    if rule is not None and rule.retry_after is not None:
        extra.append(("Retry-After", rule.retry_after))
    if rule is not None and rule.body is not None:
        return Answer(rule.status or 200, rule.body.encode("utf-8"), rule.content_type, extra)
    if rule is not None and rule.status is not None:
        message = rule.message or f"Simulated error {rule.status}"
        payload = json.dumps({"error": message}).encode("utf-8")
        return Answer(rule.status, payload, rule.content_type, extra)
    auth_problem = _auth_problem(state, headers)
    if auth_problem is not None:
        return _json(HTTPStatus.UNAUTHORIZED, {"error": f"Authentication failed: {auth_problem}"})
    if problem is not None:
        return _json(HTTPStatus.BAD_REQUEST, {"error": problem})
    if method == LINK:
        # Kentik takes the topXchart body here, and has no use for an imageType.
        invalid = validate_queries(parsed)
        if invalid is not None:
            return _json(HTTPStatus.BAD_REQUEST, {"error": invalid})
        return _json(HTTPStatus.OK, portal_link(parsed), extra)
    status, chart = _chart(parsed, state, log)
    return _json(status, chart, extra)


def _chart(parsed: Any, state: State, log: Callable[..., None]) -> tuple[int, dict[str, Any]]:
    invalid = validate_request(parsed)
    if invalid is not None:
        return HTTPStatus.BAD_REQUEST, {"error": invalid}
    try:
        mime, data = render_chart(parsed)
    except Exception as exc:  # noqa: BLE001 - a drawing bug must still get an answer
        if state.verbose:
            log("Drawing failed: %r", exc)
        return HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"Simulator could not draw: {exc}"}
    encoded = base64.b64encode(data).decode("ascii")
    return HTTPStatus.OK, {"dataUri": f"data:{mime};base64,{encoded}"}


def _auth_problem(state: State, headers: Message) -> str | None:
    email = headers.get(EMAIL_HEADER, "")
    token = headers.get(TOKEN_HEADER, "")
    if not email:
        return f"missing {EMAIL_HEADER} header"
    if not token:
        return f"missing {TOKEN_HEADER} header"
    if state.email is not None and not hmac.compare_digest(
        email.encode("utf-8", "surrogateescape"), state.email.encode("utf-8")
    ):
        return "unknown user or wrong API token"
    if state.token is not None and not hmac.compare_digest(
        token.encode("utf-8", "surrogateescape"), state.token.encode("utf-8")
    ):
        return "unknown user or wrong API token"
    return None
