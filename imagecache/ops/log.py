"""Logs: a line per request, JSON on demand (LOG_FORMAT=json), and never a
Kentik credential.

This module is imported while Django sets logging up (settings.LOGGING names
its formatter and filter), before the apps are loaded: it must not import
models.
"""

import json
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase

from imagecache.ops import metrics, request_ids

logger = logging.getLogger("imagecache.requests")

REDACTED = "***"
# The attributes every LogRecord has; anything else on a record came from
# `extra=` and goes into the JSON object as a field of its own.
_STANDARD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()
) | {"message", "asctime"}
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Probes and scrapes come every few seconds: their lines are DEBUG, so that
# they do not drown the requests of clients. They are counted all the same.
_QUIET_ENDPOINTS = frozenset({"healthz", "readyz", "metrics"})


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, process, the
    record's extra fields, and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_"):
                payload[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            payload["exception"] = record.exc_text
        if record.stack_info:
            payload["stack"] = self.formatStack(record.stack_info)
        return json.dumps(payload, default=str)


class RedactSecrets(logging.Filter):
    """Replaces KT_AUTH_TOKEN and KT_AUTH_EMAIL with *** in every record a
    handler writes: its message with its arguments, its traceback and its
    extra fields.

    The Kentik client never logs them; this is for what it cannot foresee,
    such as a library's exception that quotes a header.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = _secrets()
        if not secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record: its formatter reports it
            return True
        record.msg, record.args = _redact(message, secrets), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = _redact(record.exc_text, secrets)
        if record.stack_info:
            record.stack_info = _redact(record.stack_info, secrets)
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and isinstance(value, str):
                setattr(record, key, _redact(value, secrets))
        return True


def _secrets() -> list[str]:
    if not settings.configured:
        return []
    found = (getattr(settings, "KT_AUTH_TOKEN", ""), getattr(settings, "KT_AUTH_EMAIL", ""))
    # The longest first, should one contain the other.
    return sorted((s for s in found if s), key=len, reverse=True)


def redact(text: str) -> str:
    """The text with the Kentik credentials replaced by ***."""
    return _redact(text, _secrets())


def _redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


class AccessFields(logging.Filter):
    """gunicorn's access line as fields of its record (for the JSON
    formatter): gunicorn passes its access log atoms as the record's
    arguments, and the request id is the one the answer carries."""

    def filter(self, record: logging.LogRecord) -> bool:
        atoms = record.args
        if not isinstance(atoms, Mapping):
            return True
        status = str(atoms["s"])
        record.remote = atoms["h"]
        record.method = atoms["m"]
        record.path = atoms["U"]
        record.status = int(status) if status.isdigit() else status
        record.bytes = atoms["B"]
        record.duration_ms = atoms["M"]
        record.user_agent = atoms["a"]
        request_id = atoms[f"{{{request_ids.HEADER.lower()}}}o"]
        if request_id != "-":
            record.request_id = request_id
        return True


class RequestLogMiddleware:
    """One log line and one count per request: method, path, status, duration,
    and the entry id for /image/{id}. Outermost, so that the duration covers
    the other middleware too, and so that every line the request logs
    carries its id (X-Request-ID, also on the answer)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        request_id = request_ids.request_id_accept(request.META.get(request_ids.ENVIRON_KEY))
        with request_ids.request_id_bound(request_id):
            response = self._answer(request)
        response[request_ids.HEADER] = request_id
        return response

    def _answer(self, request: HttpRequest) -> HttpResponseBase:
        started = time.monotonic()
        response = self.get_response(request)
        duration_ms = (time.monotonic() - started) * 1000
        match = request.resolver_match
        # The URL's name, not its path: one series per endpoint, whatever the ids.
        endpoint = match.view_name if match else "unmatched"
        method = request.method if request.method in _METHODS else "other"
        status = response.status_code
        metrics.REQUESTS.labels(endpoint, method, str(status)).inc()
        fields: dict[str, Any] = {
            "method": request.method,
            "path": request.path,
            "status": status,
            "duration_ms": round(duration_ms, 1),
        }
        if match and "entry_id" in match.kwargs:
            fields["entry_id"] = match.kwargs["entry_id"]
        if status >= 500:
            level = logging.WARNING
        elif endpoint in _QUIET_ENDPOINTS:
            level = logging.DEBUG
        else:
            level = logging.INFO
        logger.log(
            level,
            "%s %s %s %.1f ms",
            request.method,
            request.path,
            status,
            duration_ms,
            extra=fields,
        )
        return response
