"""The one seam between the cache and Kentik: every Kentik call goes through here.

Built from kentik-api's own parts (its connector, query_chart, query_url,
QueryChartResponse and its error classes), through the connector of
`imagecache.kentik_transport`, which avoids the package's 1.x traps.
`QueryAPI.chart()` and `.url()` drop null-valued keys, so the client's dict
goes to the connector as is.

Two of Kentik's methods go through it: `fetch_chart` (topXchart, an image)
and `fetch_portal_link` (query/url, the link that opens a query in Kentik's
portal), with the same connector, retries, deadline and errors.
"""

import base64
import json
import logging
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import requests
from django.conf import settings
from kentik_api.api_calls.query_methods import query_chart, query_url
from kentik_api.public.errors import KentikAPIError, ProtocolError, TimedOutError
from kentik_api.requests_payload.queries_payload import QueryChartResponse
from urllib3.exceptions import ConnectTimeoutError, ReadTimeoutError

from imagecache.kentik_transport import AnswerTooLarge, SlowDown
from imagecache.kentik_transport import CallWithheld as CallWithheld
from imagecache.kentik_transport import RetryGate as RetryGate
from imagecache.kentik_transport import connector as _connector
from imagecache.media import MEDIA_TYPES, REQUESTED_MEDIA_TYPES
from imagecache.ops.log import redact

logger = logging.getLogger(__name__)

# Kentik's failures on the query it took, not on every query (KentikError.deployment).
QUERY_FAILURE_STATUSES = frozenset({500, 504})
MESSAGE_LIMIT = 1000
# A portal link is rendered as a link: only these schemes, and not longer than this.
LINK_SCHEMES = frozenset({"http", "https"})
LINK_MAX_LENGTH = 2048


@dataclass(frozen=True)
class Chart:
    media_type: str
    data: bytes


class KentikError(Exception):
    """A fetch that failed, with the HTTP status the cache answers it with.

    `transient`: Kentik was overloaded or failing (its 5xx, a timeout, not
    reachable), not refusing this query; asking again later may succeed.

    `deployment`: the failure speaks of Kentik as a whole, not of this query,
    so every fetch of the deployment holds back (see services.shield). A
    429, a 502 or 503, a refused or reset connection and a connect timeout
    do: Kentik's gateway refused, or found no backend, or could not be
    reached, whatever was asked. A read timeout, a 504 and a 500 do not:
    Kentik took the query and failed on it or on its time, which is what a
    heavy query (a long lookback over many devices) does while the others
    render. The shield tells those from an outage by whether other queries
    fail so too. Defaults to `transient`.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        transient: bool = False,
        deployment: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.transient = transient
        self.deployment = transient if deployment is None else deployment


class RateLimited(KentikError):
    """Kentik said "slow down": a 429, or a 503 with Retry-After. Not retried
    here: the caller pauses every fetch of the deployment (`retry_after`
    seconds, None when Kentik gave none or gave one unreadable)."""

    def __init__(self, status: int, message: str, *, retry_after: float | None) -> None:
        super().__init__(status, message, transient=True)
        self.retry_after = retry_after


def _ask(api_call: Any, payload: Any, gate: RetryGate | None, retries: int | None) -> bytes:
    """One Kentik method's answer, its failures mapped to KentikError."""
    connector = _connector(
        settings.KENTIK_API_URL,
        settings.KT_AUTH_EMAIL,
        settings.KT_AUTH_TOKEN,
        settings.KENTIK_API_RETRIES if retries is None else retries,
        settings.KENTIK_API_TIMEOUT,
        settings.KENTIK_API_BACKOFF,
    )
    try:
        return connector.answer(api_call, payload, gate=gate)
    except SlowDown as exc:
        message = _kentik_message(exc.text, exc.status)
        raise RateLimited(exc.status, message, retry_after=exc.retry_after) from exc
    except AnswerTooLarge as exc:
        raise KentikError(
            502, f"{exc}: larger than KENTIK_MAX_BYTES ({settings.KENTIK_MAX_BYTES} bytes)"
        ) from exc
    except ProtocolError as exc:
        raise _protocol_error(exc) from exc
    except KentikAPIError as exc:
        raise _transport_error(exc) from exc


def fetch_portal_link(
    query: Any, *, gate: RetryGate | None = None, retries: int | None = None
) -> str:
    """The portal link of a query (a topXchart body without `imageType`, sent
    as given, nulls kept): Kentik's `query/url` answers it as a JSON string.

    It will be shown as a link, so anything but an http(s) URL (another
    scheme, such as `javascript:`, control characters, not a JSON string) is
    a KentikError (502), as are Kentik's own errors, mapped as `fetch_chart`'s.
    """
    body = _ask(query_url(), query, gate, retries)
    try:
        link = json.loads(body)
    except ValueError:
        link = None
    if not isinstance(link, str) or not _is_web_link(link):
        shown = _shorten(body[:200].decode("utf-8", errors="replace"))
        raise KentikError(502, f"Kentik's portal link is not an http(s) URL: {shown!r}")
    return link


def _is_web_link(link: str) -> bool:
    if not 0 < len(link) <= LINK_MAX_LENGTH or not link.isprintable() or " " in link:
        return False
    try:
        parts = urllib.parse.urlsplit(link)
    except ValueError:
        return False
    return parts.scheme in LINK_SCHEMES and bool(parts.hostname)


def fetch_chart(
    query_json: str, *, gate: RetryGate | None = None, retries: int | None = None
) -> Chart:
    """Ask Kentik to render the chart of a query given as JSON text.

    `gate` is called before each retry (KENTIK_API_RETRIES, or `retries`);
    it may block, or raise CallWithheld to stop.

    Raises RateLimited when Kentik says to slow down; KentikError with the
    status to answer clients with: Kentik's own for an error answer, 504 when
    it timed out, 502 when it could not be reached, redirected, or answered
    something unreadable.
    """
    payload = json.loads(query_json)
    body = _ask(query_chart(), payload, gate, retries)
    try:
        chart = QueryChartResponse.from_json(body)
        del body
        # The package's own reading of the media type and the encoding; the
        # payload is decoded here, once and strictly: kentik-api decodes
        # leniently ("!!!!" would become an empty image), and a second copy
        # of a large image would double the worker's memory.
        image_type = chart._get_image_type()
        chart._get_image_data_base64()
        data = base64.b64decode(chart.dataUri.partition(",")[2], validate=True)
        if not data:
            raise ValueError("the image is empty")
    except Exception as exc:  # anything unreadable is a bad gateway
        raise KentikError(502, f"Kentik's answer could not be read: {_shorten(str(exc))}") from exc
    media_type = MEDIA_TYPES[image_type.value]
    asked = payload.get("imageType") if isinstance(payload, dict) else None
    expected = REQUESTED_MEDIA_TYPES.get(asked) if isinstance(asked, str) else None
    if expected is not None and media_type != expected:
        # Stored, it would be served as what it is, not as what was asked
        # for: an SVG (which may carry script) in place of a PNG.
        raise KentikError(
            502,
            f"Kentik answered {media_type} to a query whose imageType {asked!r} is {expected}",
        )
    return Chart(media_type=media_type, data=data)


def _protocol_error(exc: ProtocolError) -> KentikError:
    if 300 <= exc.status_code < 400:
        return KentikError(
            502,
            _shorten(f"Kentik answered {exc.status_code} with a {exc}; redirects are not followed"),
        )
    if exc.status_code in (401, 403):
        logger.error(
            "Kentik refused the credentials (status %s): check KT_AUTH_EMAIL and KT_AUTH_TOKEN",
            exc.status_code,
        )
    return KentikError(
        exc.status_code,
        _kentik_message(str(exc), exc.status_code),
        transient=exc.status_code >= 500,
        deployment=exc.status_code >= 500 and exc.status_code not in QUERY_FAILURE_STATUSES,
    )


def _transport_error(exc: KentikAPIError) -> KentikError:
    if _timed_out(exc):
        # Connected, and no answer in time: maybe this query alone.
        return KentikError(
            504,
            f"Kentik did not answer within {settings.KENTIK_API_TIMEOUT:g} s",
            transient=True,
            deployment=False,
        )
    return KentikError(
        502, f"Kentik API could not be reached: {_shorten(_root_cause(exc))}", transient=True
    )


def _timed_out(exc: BaseException) -> bool:
    """A read timeout; a connect timeout is Kentik not reachable."""
    chain = list(_causes(exc))
    # requests wraps urllib3's MaxRetryError, whose reason is the last error.
    reasons = [getattr(arg, "reason", None) for seen in chain for arg in getattr(seen, "args", ())]
    if any(
        isinstance(seen, (requests.ConnectTimeout, ConnectTimeoutError))
        for seen in [*chain, *reasons]
    ):
        return False
    args = [arg for seen in chain for arg in getattr(seen, "args", ())]
    return any(
        isinstance(seen, (TimedOutError, requests.Timeout, ReadTimeoutError)) for seen in chain
    ) or any(isinstance(seen, ReadTimeoutError) for seen in [*args, *reasons])


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return str(reason or exc)


def _kentik_message(body: str, status: int) -> str:
    """Kentik's own message from an error body that is JSON or text."""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        for key in ("error", "message", "msg", "detail"):
            if isinstance(parsed.get(key), str) and parsed[key]:
                return _shorten(parsed[key])
    text = re.sub(r"\s+", " ", body).strip()
    return _shorten(text) if text else f"Kentik answered {status} with no message"


def _shorten(text: str) -> str:
    """At most MESSAGE_LIMIT characters, and never a credential Kentik echoed."""
    text = redact(text)
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"
