"""Ready images answered before Django runs, the way whitenoise answers
static files; saved charts' fresh images too (`imagecache.api.chart_fastpath`).

`GET /image/{id}` for a ready, unexpired image needs no database: the expiry
is in the id, and `CACHE_PATH/by-id/<id>` (see `imagecache.files.links`) links to
the image file, whose name carries the content hash (the ETag) and whose
time is the image's Last-Modified. Anything else falls through to Django,
which knows the rest: a missing link, an id past its expiry (an operator may
have extended it), conditional requests, query strings, other methods.
Purging, pruning and eviction remove the link before anything else, so the
fast path answers 404 (through Django) at once.

Reads are recorded for eviction in memory, and written at most once per
READ_MARK_INTERVAL per image by a background thread.
"""

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.db import connection
from django.http.request import split_domain_port, validate_host
from django.utils.http import http_date

from imagecache.api.chart_fastpath import FastCharts
from imagecache.files import links
from imagecache.files.names import image_name_parse
from imagecache.ids import ENTRY_ID_PATTERN
from imagecache.media import BY_EXTENSION, IMAGE_CSP
from imagecache.ops import metrics, request_ids
from imagecache.services import entries
from imagecache.wire import CHARTS_PATH, IMAGE_PATH

logger = logging.getLogger("imagecache.requests")

PATH_RE = re.compile(f"^{re.escape(IMAGE_PATH)}({ENTRY_ID_PATTERN})$")

StartResponse = Callable[..., Any]


def security_headers() -> list[tuple[str, str]]:
    """What Django's SecurityMiddleware and XFrameOptionsMiddleware add to an
    image answer over plain HTTP, read from the same settings, so that both
    paths agree. (Over HTTPS, `_answer` adds HSTS as Django does; plain HTTP
    that Django would redirect goes to Django.)"""
    headers = []
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append(("X-Content-Type-Options", "nosniff"))
    if settings.SECURE_REFERRER_POLICY:
        policy = settings.SECURE_REFERRER_POLICY
        value = policy if isinstance(policy, str) else ",".join(policy)
        headers.append(("Referrer-Policy", value))
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers.append(("Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY))
    headers.append(("X-Frame-Options", settings.X_FRAME_OPTIONS.upper()))
    return headers


def hsts_header() -> tuple[str, str] | None:
    """The Strict-Transport-Security of Django's SecurityMiddleware, if any."""
    if not settings.SECURE_HSTS_SECONDS:
        return None
    value = f"max-age={settings.SECURE_HSTS_SECONDS}"
    if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
        value += "; includeSubDomains"
    if settings.SECURE_HSTS_PRELOAD:
        value += "; preload"
    return ("Strict-Transport-Security", value)


def request_is_secure(environ: dict[str, Any]) -> bool:
    """Django's HttpRequest.is_secure(), read from the WSGI environ."""
    if settings.SECURE_PROXY_SSL_HEADER:
        header, secure_value = settings.SECURE_PROXY_SSL_HEADER
        value = environ.get(header)
        if value is not None:
            return bool(value.split(",", 1)[0].strip() == secure_value)
    return bool(environ.get("wsgi.url_scheme") == "https")


class ReadMarks:
    """Fetch ids read since the last flush; flushed by one thread."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._lock = threading.Lock()
        self._read: set[int] = set()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def add(self, fetch_id: int) -> None:
        with self._lock:
            self._read.add(fetch_id)
            if self._thread is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="read-marks", daemon=True)
                self._thread.start()

    def flush(self) -> None:
        with self._lock:
            read, self._read = self._read, set()
        entries.fetches_mark_read(fetch_ids=read)

    def _run(self) -> None:
        while True:
            time.sleep(self._interval)
            try:
                self.flush()
            except Exception:  # the thread must outlive a database hiccup
                logger.exception("Reads of fast-path images were not recorded")
            finally:
                connection.close()


class FastImages:
    """WSGI middleware: ready images from their links, the rest to `app`."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.marks = ReadMarks(max(1.0, settings.READ_MARK_INTERVAL / 2))
        # Off with object storage, or when a fronting nginx sends the files.
        self.active = links.enabled() and not settings.X_ACCEL_REDIRECT_PREFIX
        self.links = str(links.directory()) if self.active else ""
        # Per link target and entry: the headers that never change (the file
        # is immutable: its name carries its content hash). Bounded by
        # clearing, which only costs recomputing them.
        self.headers: dict[tuple[str, str], tuple[int, list[tuple[str, str]]]] = {}
        self.security = security_headers()
        self.charts = FastCharts(self.security) if self.active else None
        self.hsts = hsts_header()
        self.ssl_redirect = settings.SECURE_SSL_REDIRECT
        # Django's own reading of ALLOWED_HOSTS (HttpRequest.get_host), and
        # what it made of each Host seen.
        self.allowed_hosts = settings.ALLOWED_HOSTS
        if settings.DEBUG and not self.allowed_hosts:
            self.allowed_hosts = [".localhost", "127.0.0.1", "[::1]"]
        self.hosts: dict[str, bool] = {}
        self.hit_get = metrics.REQUESTS.labels("image-get", "GET", "200")
        self.hit_head = metrics.REQUESTS.labels("image-get", "HEAD", "200")

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        answer = self.ready_image(environ, start_response)
        if answer is not None:
            return answer
        return self.app(environ, start_response)

    def ready_image(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes] | None:
        """The answer to a GET or HEAD of a ready image, or None: the request
        is the app's. The web worker asks it too, for the plain requests it
        answers without gunicorn's parser (config/web_worker.py)."""
        if self.active and environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
            return self._answer(environ, start_response)
        return None

    def _answer(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes] | None:
        path = environ.get("PATH_INFO", "")
        chart = path.startswith(CHARTS_PATH)
        match = None if chart else PATH_RE.match(path)
        if (
            (match is None and not chart)
            or (environ.get("QUERY_STRING") and not chart)
            or "HTTP_IF_NONE_MATCH" in environ
            or "HTTP_IF_MODIFIED_SINCE" in environ
            or not self._host_allowed(environ)
        ):
            return None
        secure = request_is_secure(environ)
        if self.ssl_redirect and not secure:
            return None  # Django redirects it to HTTPS
        extra = [self.hsts] if secure and self.hsts is not None else []
        # The proxy's request id, or a new one, as Django's answer would carry.
        request_id = request_ids.request_id_accept(environ.get(request_ids.ENVIRON_KEY))
        extra.append((request_ids.HEADER, request_id))
        if match is None:
            found = self.charts.answer(environ) if self.charts is not None else None
            if found is None:
                return None
            image, headers = found
            start_response("200 OK", [*headers, *extra])
            return _body(environ, image)
        entry_id, expiry_text = match.groups()
        expires = float(expiry_text)
        now = time.time()
        if expires <= now:
            return None
        link = os.path.join(self.links, entry_id)
        try:
            target = os.readlink(link)
            image = open(link, "rb")  # the server closes it
        except OSError:
            return None
        known = self.headers.get((target, entry_id))
        if known is None:
            known = self._fixed_headers(target, entry_id, expires, image)
            if known is None:
                image.close()
                return None
        fetch_id, fixed = known
        cache_control = ("Cache-Control", f"public, max-age={int(expires - now)}, immutable")
        start_response("200 OK", [*fixed, cache_control, *extra])
        self.marks.add(fetch_id)
        (self.hit_head if environ["REQUEST_METHOD"] == "HEAD" else self.hit_get).inc()
        metrics.CACHE_HITS.inc()
        return _body(environ, image)

    def _host_allowed(self, environ: dict[str, Any]) -> bool:
        """Whether Django would take the request's Host (ALLOWED_HOSTS). A Host
        it would refuse goes to Django, which answers it 400."""
        if settings.USE_X_FORWARDED_HOST and "HTTP_X_FORWARDED_HOST" in environ:
            host = environ["HTTP_X_FORWARDED_HOST"]
        elif "HTTP_HOST" in environ:
            host = environ["HTTP_HOST"]
        else:
            host = environ.get("SERVER_NAME", "")
            port = str(environ.get("SERVER_PORT", ""))
            if port != ("443" if environ.get("wsgi.url_scheme") == "https" else "80"):
                host = f"{host}:{port}"
        allowed = self.hosts.get(host)
        if allowed is None:
            domain, _ = split_domain_port(host)
            allowed = bool(domain) and validate_host(domain, self.allowed_hosts)
            if len(self.hosts) >= 1000:
                self.hosts.clear()
            self.hosts[host] = allowed
        return allowed

    def _fixed_headers(
        self, target: str, entry_id: str, expires: float, image: Any
    ) -> tuple[int, list[tuple[str, str]]] | None:
        named = image_name_parse(target)
        if named is None:
            return None
        fetch_id, content_hash, extension = named
        stat = os.fstat(image.fileno())
        fixed = [
            ("Content-Type", BY_EXTENSION[extension]),
            ("Content-Length", str(stat.st_size)),
            ("Content-Disposition", f'inline; filename="{entry_id}.{extension}"'),
            ("ETag", f'"{content_hash}"'),
            ("Last-Modified", http_date(stat.st_mtime)),
            ("Expires", http_date(expires)),
            ("Content-Security-Policy", IMAGE_CSP),
            *self.security,
        ]
        if len(self.headers) >= 10_000:
            self.headers.clear()
        self.headers[(target, entry_id)] = (fetch_id, fixed)
        return fetch_id, fixed


def _body(environ: dict[str, Any], image: Any) -> Iterable[bytes]:
    if environ["REQUEST_METHOD"] == "HEAD":
        image.close()
        return []
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is not None:
        return wrapper(image, 64 * 1024)
    return _chunks(image)


def _chunks(image: Any) -> Iterable[bytes]:
    with image:
        while chunk := image.read(64 * 1024):
            yield chunk
