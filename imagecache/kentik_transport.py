"""The Kentik seam's HTTP (imported by imagecache/kentik.py alone): kentik-api's
connector with its 1.x traps avoided.

- `KentikAPI(email, token, host)` forces `https://{host}/api/v5`, so the
  connector is built from KENTIK_API_URL directly;
- when urllib3's retries run out on a forced status, requests raises a bare
  RetryError and the status is lost, so the retry policy returns the last
  answer (`raise_on_status=False`) and its status is reported;
- redirects are never followed: the auth headers must not go to another host.

Each attempt has one deadline, KENTIK_API_TIMEOUT, for its whole answer
(connect, headers and body): requests' timeouts bound each read, so a Kentik
that trickles its answer would otherwise hold a worker for as long as it
trickles. The answer is read in chunks up to KENTIK_MAX_BYTES and no further.
"""

import functools
import http.client
import io
import logging
import socket
import threading
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import requests
from django.conf import settings
from kentik_api.api_connection.api_connector import PROTOCOL_HTTP, APIConnector
from kentik_api.public.errors import KentikAPIError, ProtocolError, TimedOutError
from requests.adapters import HTTPAdapter
from urllib3 import exceptions as urllib3_exceptions
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ReadTimeoutError
from urllib3.util.retry import Retry

from imagecache.ops import metrics
from imagecache.ops.log import redact

logger = logging.getLogger(__name__)

RETRIED_STATUSES = frozenset({429, 502, 503, 504})


class SlowDown(Exception):
    """Kentik said "slow down": a 429, or a 503 with Retry-After (seconds, or
    None when it gave none or one unreadable); `text` is its answer's body."""

    def __init__(self, status: int, text: str, retry_after: float | None) -> None:
        super().__init__(status)
        self.status = status
        self.text = text
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


class Connector(APIConnector):
    def __init__(self, *args: Any, retry_strategy: Retry, **kwargs: Any) -> None:
        super().__init__(*args, retry_strategy=retry_strategy, **kwargs)
        adapter = _Adapter(max_retries=retry_strategy)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)

    def _do_request(self, api_call: Any, payload: Any = None) -> Any:
        url = self._get_api_query_url(api_call.url_path)
        response = self._session.post(
            url, json=payload, timeout=self._timeout, allow_redirects=False, stream=True
        )
        try:
            response._content = _read_answer(response)
        finally:
            response.close()
        return response

    def answer(self, api_call: Any, payload: Any, *, gate: RetryGate | None = None) -> bytes:
        """APIConnector.send, less its copy of the whole body as text; `gate`
        is called before each retry (it may block, or raise CallWithheld)."""
        _call.gate, _call.attempts = gate, 0
        try:
            response = self._do_request(api_call, payload)
        except requests.Timeout as exc:
            raise TimedOutError(str(exc)) from exc
        except requests.RequestException as exc:
            raise KentikAPIError(str(exc)) from exc
        finally:
            _call.gate = None
        _throttling_log(response.headers)
        retry_after = response.headers.get("Retry-After")
        if _rate_limited(response.status_code, retry_after is not None):
            raise SlowDown(response.status_code, response.text, _retry_after_seconds(retry_after))
        self._raise_on_error(response)
        return bytes(response.content)

    @staticmethod
    def _raise_on_error(response: requests.Response) -> None:
        if 300 <= response.status_code < 400:
            location = response.headers.get("Location", "nowhere")
            raise ProtocolError(PROTOCOL_HTTP, response.status_code, f"redirect to {location}")
        APIConnector._raise_on_error(response)


@lru_cache(maxsize=4)
def connector(
    api_url: str, email: str, token: str, retries: int, timeout: float, backoff: float
) -> Connector:
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
    return Connector(
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


def _throttling_log(headers: Any) -> None:
    """Kentik's gateway slows answers down rather than refuse them, and says so
    in x-ratelimit-* headers: a slow answer with them is throttling, not a slow render."""
    found = {k.lower(): v for k, v in headers.items() if k.lower().startswith("x-ratelimit-")}
    if found:
        shown = ", ".join(f"{k}={redact(str(v))[:200]}" for k, v in sorted(found.items()))
        logger.warning("Kentik throttles: %s", shown, extra={"kentik_ratelimit": shown})
