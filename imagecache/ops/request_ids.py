"""Request ids: the proxy's X-Request-ID when it is one that can be repeated
safely, else a new one. The id of the request (or of the fetch) being served
is held in a context variable, and every log line written meanwhile carries it.

A leaf: gunicorn's worker, the fast path, the logging setup and the fetch
pipeline all import it.
"""

import logging
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Final

HEADER: Final = "X-Request-ID"
# The header as WSGI names it.
ENVIRON_KEY: Final = "HTTP_X_REQUEST_ID"
# Also the length of Fetch.request_id.
MAX_LENGTH: Final = 128
# What proxies make (UUIDs, hex, base64, "host:counter"): nothing that could
# end a header or a log line, or be read as markup or a quote.
_SAFE = re.compile(r"[A-Za-z0-9._:+/=@-]+")

current: ContextVar[str] = ContextVar("request_id", default="")


def request_id_new() -> str:
    return uuid.uuid4().hex


def request_id_accept(offered: str | None) -> str:
    """The proxy's id if it is short and of safe characters; else a new one."""
    if offered and len(offered) <= MAX_LENGTH and _SAFE.fullmatch(offered):
        return offered
    return request_id_new()


@contextmanager
def request_id_bound(request_id: str) -> Iterator[None]:
    """Log lines written inside carry `request_id` (none if it is empty)."""
    token = current.set(request_id)
    try:
        yield
    finally:
        current.reset(token)


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to a record written while a request or a fetch is
    served, unless the record has one already."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = current.get()
        if request_id and not hasattr(record, "request_id"):
            record.request_id = request_id
        return True
