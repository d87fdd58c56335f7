"""Errors sent to Sentry, when SENTRY_DSN is set: the settings call
`sentry_init`, so the web processes and the queue workers both report (a
worker's failures reach Sentry through the error lines it logs).

Nothing secret leaves: sentry's scrubber drops the values of the fields
named in DENYLIST wherever they are (headers, local variables, extra), and
`before_send` replaces each secret's value wherever else it appears
(an exception's message, a breadcrumb, a URL), whatever field carries it.
"""

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

import sentry_sdk
from sentry_sdk.integrations.django import DjangoIntegration
from sentry_sdk.scrubber import DEFAULT_DENYLIST, EventScrubber
from sentry_sdk.types import Event, Hint

from imagecache.ops import request_ids

FILTERED = "[Filtered]"
# Field names whose values are never sent, compared in lower case.
DENYLIST = [
    *DEFAULT_DENYLIST,
    "kt_auth_token",
    "kt_auth_email",
    "x-ch-auth-api-token",
    "http_x_ch_auth_api_token",
    "x-ch-auth-email",
    "http_x_ch_auth_email",
    "secret_key",
    "database_url",
    "redis_url",
    "dsn",
]


def url_secrets(url: str) -> list[str]:
    """The password (and the whole URL) of a database or Redis URL."""
    if not url:
        return []
    password = urlsplit(url).password
    return [url, *([password, unquote(password)] if password else [])]


def sentry_init(*, dsn: str, secrets: Iterable[str], environment: str | None = None) -> None:
    """Report errors to `dsn`, with every value of `secrets` replaced in what
    is sent."""
    hidden = sorted({secret for secret in secrets if secret}, key=len, reverse=True)

    def before_send(event: Event, hint: Hint) -> Event:
        return event_scrub(event, secrets=hidden)

    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        integrations=[DjangoIntegration()],
        send_default_pii=False,
        event_scrubber=EventScrubber(denylist=DENYLIST, recursive=True),
        # The event holds its breadcrumbs: they are scrubbed with it.
        before_send=before_send,
    )


def event_scrub(event: Event, *, secrets: list[str]) -> Event:
    """The event with each secret replaced wherever a string holds it, and the
    request id it happened in as a tag."""
    request_id = request_ids.current.get()
    if request_id:
        event.setdefault("tags", {})["request_id"] = request_id
    if not secrets:
        return event
    pattern = re.compile("|".join(re.escape(secret) for secret in secrets))
    scrubbed: Event = _scrub(event, pattern)
    return scrubbed


def _scrub(value: Any, pattern: re.Pattern[str]) -> Any:
    if isinstance(value, str):
        return pattern.sub(FILTERED, value)
    if isinstance(value, dict):
        return {_scrub(key, pattern): _scrub(item, pattern) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(item, pattern) for item in value]
    return value
