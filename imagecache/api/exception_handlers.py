"""Every error leaves the service as JSON: `{"error": "<message>", ...}`.

Every answer made here (errors, and the 202 of an image still being fetched)
carries `Cache-Control: no-store`: it says nothing a cache should keep, and
the next request may well be answered differently.
"""

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError
from django.http import HttpRequest, JsonResponse
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler

from imagecache.errors import ImageCacheError
from imagecache.wire import error_body

logger = logging.getLogger("imagecache.requests")
# Seconds a client is told to wait when the database does not answer.
DATABASE_RETRY_AFTER = 5

NO_STORE = {"Cache-Control": "no-store"}


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    response = _api_response(exc, context)
    if response is not None:
        response["Cache-Control"] = NO_STORE["Cache-Control"]
    return response


def _api_response(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ImageCacheError):
        chosen = Response(exc.body(), status=exc.status, headers=exc.headers())
        # An answer the service chose (an unknown id, Kentik's error, a fetch
        # still pending), logged once by the request log, at WARNING from 500
        # on: not again as an error of the code by `django.request`.
        chosen._has_been_logged = True  # type: ignore[attr-defined] # Django's own flag
        return chosen
    if isinstance(exc, RequestDataTooBig):
        # DRF reads the body through Django, which refuses it past the limit.
        return Response(error_body(413, _too_large()), status=413)
    if isinstance(exc, DatabaseError):
        # An outage (or a failover) the client can wait out: nothing was
        # stored, and the same POST later gets its id.
        logger.error("The database did not answer: %s: %s", type(exc).__name__, exc)
        unavailable = Response(
            error_body(503, "The database does not answer; try again shortly."),
            status=503,
            headers={"Retry-After": str(DATABASE_RETRY_AFTER)},
        )
        unavailable._has_been_logged = True  # type: ignore[attr-defined] # Django's own flag
        return unavailable
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        fields = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        message = _validation_message(exc.detail)
        response.data = error_body(response.status_code, message, fields=fields)
    elif isinstance(exc, exceptions.APIException):
        response.data = error_body(response.status_code, str(exc.detail))
    else:
        response.data["status"] = response.status_code
    return response


def _validation_message(detail: Any) -> str:
    if isinstance(detail, dict):
        parts = []
        for field, errors in detail.items():
            text = "; ".join(str(e) for e in errors) if isinstance(errors, list) else str(errors)
            parts.append(text if field == "non_field_errors" else f"{field}: {text}")
        return " ".join(parts)
    if isinstance(detail, list):
        return "; ".join(str(e) for e in detail)
    return str(detail)


def _json_error(status: int, message: str) -> JsonResponse:
    return JsonResponse(error_body(status, message), status=status, headers=NO_STORE)


def _too_large() -> str:
    return f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes."


def bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    if isinstance(exception, RequestDataTooBig):
        return _json_error(413, _too_large())
    return _json_error(400, "Bad request.")


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return _json_error(403, "Forbidden.")


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return _json_error(404, f"Not found: {request.path}")


def server_error(request: HttpRequest) -> JsonResponse:
    return _json_error(500, "Internal server error.")
