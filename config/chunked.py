"""WSGI middleware: a request body sent with `Transfer-Encoding: chunked` is
read here, whole, so that Django sees it.

A chunked request has no Content-Length. gunicorn decodes its chunks, but
Django reads `wsgi.input` only as far as CONTENT_LENGTH says (0 here), so the
API would see no body. At most DATA_UPLOAD_MAX_MEMORY_SIZE + 1 bytes are read:
a larger body then reaches Django with that length, and is refused there
with 413 like any other body too large.
"""

import io
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class ChunkedBodies:
    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower() and not environ.get(
            "CONTENT_LENGTH"
        ):
            body = environ["wsgi.input"].read(settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
        return self.app(environ, start_response)
