"""The one seam between the cache and Kentik: every Kentik call goes through here.

Built from kentik-api's own parts (APIConnector, query_chart, QueryChartResponse
and its error classes) with its 1.x traps avoided:

- `KentikAPI(email, token, host)` forces `https://{host}/api/v5`, so the
  connector is built from KENTIK_API_URL directly;
- `QueryAPI.chart()` drops null-valued keys, so the client's dict goes to the
  connector as is;
- when urllib3's retries run out on a forced status, requests raises a bare
  RetryError and the status is lost, so the retry policy returns the last
  answer (`raise_on_status=False`) and its status is reported;
- redirects are never followed: the auth headers must not go to another host.

Each attempt has one deadline, KENTIK_API_TIMEOUT, for its whole answer
(connect, headers and body): requests' timeouts bound each read, so a Kentik
that trickles its answer would otherwise hold a worker for as long as it
trickles. The answer is read in chunks up to KENTIK_MAX_BYTES and no further.
"""

import base64
import functools
import http.client
import io
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import requests
from django.conf import settings
from kentik_api.api_calls.query_methods import query_chart
from kentik_api.api_connection.api_connector import PROTOCOL_HTTP, APIConnector
from kentik_api.public.errors import KentikAPIError, ProtocolError, TimedOutError
from kentik_api.requests_payload.queries_payload import QueryChartResponse
from requests.adapters import HTTPAdapter
from urllib3 import exceptions as urllib3_exceptions
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ReadTimeoutError
from urllib3.util.retry import Retry

from imagecache.media import MEDIA_TYPES, REQUESTED_MEDIA_TYPES
from imagecache.ops import metrics
from imagecache.ops.log import redact

logger = logging.getLogger(__name__)

RETRIED_STATUSES = frozenset({429, 502, 503, 504})
# Kentik's failures on the query it took, not on every query (KentikError.deployment).
QUERY_FAILURE_STATUSES = frozenset({500, 504})
MESSAGE_LIMIT = 1000


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


class CallWithheld(Exception):
    """The caller's gate refused a retry (the deployment paused meanwhile):
    the fetch is not failed, it waits its turn again."""


# Called before each attempt after a fetch's first (the first was admitted
# with its claim); raises CallWithheld to stop, may block for the budget.
RetryGate = Callable[[], None]


class _Call(threading.local):
    gate: RetryGate | None = None
    attempts = 0


_call = _Call()


class _Retry(Retry):
    """urllib3's Retry, with Retry-After capped and a first backoff that is not 0."""

    def parse_retry_after(self, retry_after: str) -> float:
        try:
            seconds = float(super().parse_retry_after(retry_after))
        except (ValueError, OverflowError, urllib3_exceptions.InvalidHeader):
            # A garbled header must not fail the fetch.
            return max(self.backoff_factor, 0.0)
        return min(seconds, settings.KENTIK_RETRY_AFTER_MAX)

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        # Kentik's "slow down" is the deployment's to wait out, not this fetch's.
        if _rate_limited(status_code, has_retry_after):
            return False
        return bool(super().is_retry(method, status_code, has_retry_after))

    def get_backoff_time(self) -> float:
        if not self.history:
            return 0.0
        return float(max(super().get_backoff_time(), self.backoff_factor))


class AnswerTooLarge(Exception):
    """Kentik's answer is larger than KENTIK_MAX_BYTES."""


class _DeadlineReader(io.RawIOBase):
    """A socket's reader that gives each read no more than what is left of the
    attempt's deadline (and no more than the read timeout)."""

    def __init__(self, raw: io.RawIOBase, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._raw = raw
        self._sock = sock
        self._deadline = deadline
        self._step = sock.gettimeout()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        left = self._deadline - time.monotonic()
        if left <= 0:
            # What a socket raises on its own timeout: urllib3 makes it a ReadTimeoutError.
            raise TimeoutError("the attempt's deadline passed")
        self._sock.settimeout(left if self._step is None else min(left, self._step))
        return self._raw.readinto(buffer)

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class _DeadlineResponse(http.client.HTTPResponse):
    """http.client's response, reading its status, headers and body under a deadline."""

    def __init__(self, sock: socket.socket, *args: Any, deadline: float, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        raw = self.fp.detach()
        self.fp = io.BufferedReader(_DeadlineReader(raw, sock, deadline))


def _attempt_under_deadline(make_request: Any) -> Any:
    @functools.wraps(make_request)
    def wrapper(self: HTTPConnectionPool, conn: Any, *args: Any, **kwargs: Any) -> Any:
        # One deadline per attempt: urllib3 calls _make_request once for each.
        if _call.attempts and _call.gate is not None:
            _call.gate()
        _call.attempts += 1
        deadline = time.monotonic() + settings.KENTIK_API_TIMEOUT
        conn.response_class = functools.partial(_DeadlineResponse, deadline=deadline)
        try:
            response = make_request(self, conn, *args, **kwargs)
        except (TimeoutError, urllib3_exceptions.TimeoutError):
            metrics.KENTIK_ATTEMPTS.labels("timeout").inc()
            raise
        except Exception:
            metrics.KENTIK_ATTEMPTS.labels("unreachable").inc()
            raise
        metrics.KENTIK_ATTEMPTS.labels(str(response.status)).inc()
        return response

    return wrapper


class _HTTPPool(HTTPConnectionPool):
    _make_request = _attempt_under_deadline(HTTPConnectionPool._make_request)


class _HTTPSPool(HTTPSConnectionPool):
    _make_request = _attempt_under_deadline(HTTPSConnectionPool._make_request)


class _Adapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


def _read_answer(response: requests.Response) -> bytes:
    """The body, read in chunks under the attempt's deadline, up to KENTIK_MAX_BYTES."""
    limit = settings.KENTIK_MAX_BYTES
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise AnswerTooLarge(f"Kentik's answer is {int(declared)} bytes")
    body = bytearray()
    try:
        for chunk in response.raw.stream(64 * 1024, decode_content=True):
            body += chunk
            if len(body) > limit:
                raise AnswerTooLarge(f"Kentik's answer is over {limit} bytes")
    except ReadTimeoutError as exc:
        raise requests.Timeout(exc) from exc
    except urllib3_exceptions.HTTPError as exc:
        raise requests.ConnectionError(exc) from exc
    return bytes(body)


class _Connector(APIConnector):
    def __init__(self, *args: Any, retry_strategy: Retry, **kwargs: Any) -> None:
        super().__init__(*args, retry_strategy=retry_strategy, **kwargs)
        adapter = _Adapter(max_retries=retry_strategy)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)

    def _do_request(self, api_call: Any, payload: dict[str, Any] | None = None) -> Any:
        url = self._get_api_query_url(api_call.url_path)
        response = self._session.post(
            url, json=payload, timeout=self._timeout, allow_redirects=False, stream=True
        )
        try:
            response._content = _read_answer(response)
        finally:
            response.close()
        return response

    def answer(self, api_call: Any, payload: dict[str, Any]) -> bytes:
        """APIConnector.send, less its copy of the whole body as text."""
        try:
            response = self._do_request(api_call, payload)
        except requests.Timeout as exc:
            raise TimedOutError(str(exc)) from exc
        except requests.RequestException as exc:
            raise KentikAPIError(str(exc)) from exc
        retry_after = response.headers.get("Retry-After")
        if _rate_limited(response.status_code, retry_after is not None):
            raise RateLimited(
                response.status_code,
                _kentik_message(response.text, response.status_code),
                retry_after=_retry_after_seconds(retry_after),
            )
        self._raise_on_error(response)
        return bytes(response.content)

    @staticmethod
    def _raise_on_error(response: requests.Response) -> None:
        if 300 <= response.status_code < 400:
            location = response.headers.get("Location", "nowhere")
            raise ProtocolError(PROTOCOL_HTTP, response.status_code, f"redirect to {location}")
        APIConnector._raise_on_error(response)


@lru_cache(maxsize=4)
def _connector(
    api_url: str, email: str, token: str, retries: int, timeout: float, backoff: float
) -> _Connector:
    retry = _Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        redirect=0,
        backoff_factor=backoff,
        status_forcelist=RETRIED_STATUSES,
        allowed_methods=frozenset({"POST"}),
        respect_retry_after_header=True,
        raise_on_status=False,
        raise_on_redirect=False,
    )
    return _Connector(
        api_url, email, token, timeout=(min(10.0, timeout), timeout), retry_strategy=retry
    )


def _rate_limited(status: int, has_retry_after: bool) -> bool:
    return status == 429 or (status == 503 and has_retry_after)


def _retry_after_seconds(value: str | None) -> float | None:
    """Retry-After in seconds (a number or an HTTP date), None if absent or garbled."""
    if value is None:
        return None
    try:
        return float(Retry().parse_retry_after(value))
    except (ValueError, OverflowError, urllib3_exceptions.InvalidHeader):
        return None


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
    connector = _connector(
        settings.KENTIK_API_URL,
        settings.KT_AUTH_EMAIL,
        settings.KT_AUTH_TOKEN,
        settings.KENTIK_API_RETRIES if retries is None else retries,
        settings.KENTIK_API_TIMEOUT,
        settings.KENTIK_API_BACKOFF,
    )
    payload = json.loads(query_json)
    _call.gate, _call.attempts = gate, 0
    try:
        body = connector.answer(query_chart(), payload)
    except AnswerTooLarge as exc:
        raise KentikError(
            502, f"{exc}: larger than KENTIK_MAX_BYTES ({settings.KENTIK_MAX_BYTES} bytes)"
        ) from exc
    except ProtocolError as exc:
        raise _protocol_error(exc) from exc
    except KentikAPIError as exc:
        raise _transport_error(exc) from exc
    finally:
        _call.gate = None
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
        isinstance(seen, (requests.ConnectTimeout, urllib3_exceptions.ConnectTimeoutError))
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
