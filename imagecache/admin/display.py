"""What the admin shows: times, sizes and counts in words, queries and images
in HTML, and images streamed to staff."""

import json
from datetime import datetime, timedelta

from django.http import FileResponse, Http404
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html

from imagecache.errors import EntryNotFound
from imagecache.media import IMAGE_CSP, INLINE_MEDIA_TYPES, MEDIA_TYPES
from imagecache.models import Fetch
from imagecache.selectors.images import fetch_image_open

THUMBNAIL_STYLE = "max-height: 60px; max-width: 160px"
PREVIEW_STYLE = "max-width: 100%; border: 1px solid var(--hairline-color)"

HOUR = 3600
DAY = 24 * HOUR


def time_left(expires_at: datetime, now: datetime) -> str:
    """'in 45 s', 'in 4 min', 'in 3 h', 'in 2 days', or 'expired'."""
    seconds = int((expires_at - now).total_seconds())
    if seconds <= 0:
        return "expired"
    if seconds < 60:
        return f"in {seconds} s"
    if seconds < HOUR:
        return f"in {seconds // 60} min"
    if seconds < 2 * DAY:
        return f"in {seconds // HOUR} h"
    return f"in {seconds // DAY} days"


def when(moment: datetime) -> str:
    """A compact local date and time for the lists: '2026-11-28 12:04:05'."""
    return date_format(timezone.localtime(moment), "Y-m-d H:i:s")


def duration(age: timedelta) -> str:
    """A short, rounded age: '42 s', '3 min 5 s', '2 h 10 min', '3 days 4 h'."""
    seconds = max(0, int(age.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < HOUR:
        return f"{seconds // 60} min {seconds % 60} s"
    if seconds < DAY:
        return f"{seconds // HOUR} h {seconds % HOUR // 60} min"
    return f"{seconds // DAY} days {seconds % DAY // HOUR} h"


def plural(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count} {singular if count == 1 else (plural or singular + 's')}"


def pretty_json(text: str) -> str:
    """HTML: the query as the client sent it, indented, escaped, in <pre>."""
    try:
        pretty = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        pretty = text
    return format_html(
        '<pre style="white-space: pre-wrap; max-height: 40em; overflow: auto">{}</pre>', pretty
    )


def image_response(fetch_id: int) -> FileResponse:
    """A ready fetch's image, streamed from storage; 404 if it is not there."""
    try:
        image, media_type = fetch_image_open(fetch_id=fetch_id)
    except EntryNotFound:
        raise Http404("No stored image") from None
    response = FileResponse(image, content_type=media_type)
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-cache"
    if media_type != MEDIA_TYPES["pdf"]:
        # Chromium's PDF viewer does not run in a sandboxed document.
        response["Content-Security-Policy"] = IMAGE_CSP
    return response


def image_html(url: str, fetch: Fetch, *, style: str, lazy: bool = False) -> str:
    """HTML: the image of a ready fetch at `url`, or a link for what <img> cannot show."""
    # PDFs get a link instead.
    if fetch.media_type not in INLINE_MEDIA_TYPES:
        return format_html('<a href="{}">open ({})</a>', url, fetch.media_type)
    return format_html(
        '<a href="{}"><img src="{}" alt="{} chart" style="{}" loading="{}"></a>',
        url,
        url,
        fetch.media_type,
        style,
        "lazy" if lazy else "eager",
    )
