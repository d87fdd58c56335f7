"""Saved charts' fresh images answered before Django runs
(`GET|HEAD /charts/{slug}.{ext}`), beside the ready images of
`imagecache.api.fastpath`.

A chart URL becomes a Kentik query only through the chart's definition, which
lives in the database. The fast path never reads it: it learns, from each
answer Django gives in this process (`LEARNT.learn`), which query a URL
(slug, extension, parameter values) stands for, the chart's id and its
max_age. `CACHE_PATH/charts.stamp` changes with every write of a chart
(`imagecache.apps`), and what was learnt before a change is never used after
it: one stat per request. The query's link, `CACHE_PATH/by-chart/<query
hash>`, leads to its newest ready image, whose name carries the fetch and the
content hash, and whose time is when it was rendered.

Only an image younger than its chart's max_age is answered here; anything
else goes to Django, which answers as it always does: a URL not learnt yet
(each chart's first view in a process), an image at or past its max_age (a
refresh is Django's to start), a wrong or missing signature (403), `wait=`,
a parameter given twice, conditional requests.
"""

import logging
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.http import QueryDict
from django.utils import timezone
from django.utils.http import http_date

from imagecache.chart_params import RESERVED, query_values
from imagecache.errors import ChartInvalid, SignatureRefused
from imagecache.files import links
from imagecache.files.names import image_name_parse
from imagecache.ids import CHART_SLUG_PATTERN
from imagecache.media import BY_EXTENSION, EXTENSIONS, IMAGE_CSP
from imagecache.ops import metrics
from imagecache.services import charts
from imagecache.services.charts import ChartAnswer
from imagecache.signing import url_verify
from imagecache.wire import CHARTS_PATH, STALE_HEADER

logger = logging.getLogger(__name__)

PATH_RE = re.compile(
    f"^{re.escape(CHARTS_PATH)}({CHART_SLUG_PATTERN})\\.({'|'.join(BY_EXTENSION)})$"
)

# A chart URL as the fast path knows it: slug, extension, and the chart's own
# parameters as given (sorted), without the signature.
UrlKey = tuple[str, str, tuple[tuple[str, str], ...]]
Stamp = tuple[int, int, int] | None


def url_key(slug: str, ext: str, given: Mapping[str, str]) -> UrlKey:
    return (slug, ext, tuple(sorted((k, v) for k, v in given.items() if k not in RESERVED)))


# How long after Django answered an image at or past its chart's max_age (and
# saw to its refresh) the fast path answers that image too, as Django did:
# until the refresh lands, more visits to Django would only find it in flight,
# and a wallboard's viewers all come back at once as a chart's image ages.
STALE_RECHECK = 10.0


@dataclass(frozen=True)
class Known:
    chart_id: int
    max_age: int
    query_key: str
    # The image of Django's answer, and until when (a unix time) the fast
    # path may answer it at or past max_age, or with Django's X-Image-Stale.
    fetch_id: int = 0
    stale: str = ""
    stale_until: float = 0.0


class Learnt:
    """What this process learnt of chart URLs from Django's answers, for one
    version of the saved charts. Bounded by clearing, which only sends the
    next requests through Django."""

    LIMIT = 10_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[UrlKey, Known] = {}
        self._stamp: Stamp | bool = False  # nothing learnt yet

    def learn(
        self, *, stamp: Stamp, url: tuple[str, str, Mapping[str, str]], answer: ChartAnswer
    ) -> None:
        """What Django answered to `url` (slug, extension, query parameters);
        `stamp` is the charts' version read before the chart was."""
        key = url_key(*url)
        aged = answer.fresh_for(timezone.now()) == 0
        known = Known(
            answer.chart.pk,
            answer.chart.max_age,
            answer.image.query_hash,
            fetch_id=answer.fetch.pk,
            stale=answer.stale,
            stale_until=time.time() + STALE_RECHECK if answer.stale or aged else 0.0,
        )
        with self._lock:
            if stamp != self._stamp or len(self._known) >= self.LIMIT:
                self._known, self._stamp = {}, stamp
            self._known[key] = known

    def find(self, *, stamp: Stamp, key: UrlKey) -> Known | None:
        """What `key` stands for, if learnt at the charts' version `stamp`."""
        if stamp != self._stamp:
            with self._lock:
                if stamp != self._stamp:
                    self._known, self._stamp = {}, stamp
            return None
        return self._known.get(key)


LEARNT = Learnt()


class FastCharts:
    """The answers to chart URLs that the fast path can be sure of."""

    def __init__(self, security: list[tuple[str, str]]) -> None:
        self.links = str(links.chart_directory())
        self.stamp = str(links.stamp_path())
        self.security = security
        self.keys = list(settings.CHART_URL_KEYS)
        self.stale_if_error = settings.STALE_IF_ERROR
        # Per image file and slug: its fetch, its time, and the headers that
        # never change (the file's name carries its content hash). Bounded by
        # clearing, which only costs working them out again.
        self.fixed: dict[tuple[str, str], tuple[int, float, list[tuple[str, str]]]] = {}
        self.hit_get = metrics.REQUESTS.labels("chart-image-get", "GET", "200")
        self.hit_head = metrics.REQUESTS.labels("chart-image-get", "HEAD", "200")

    def answer(self, environ: dict[str, Any]) -> tuple[Any, list[tuple[str, str]]] | None:
        """The open image and the headers that answer a GET or HEAD of a chart
        URL (its views counted), or None: the request is Django's."""
        match = PATH_RE.match(environ.get("PATH_INFO", ""))
        if match is None:
            return None
        slug, ext = match.groups()
        query = environ.get("QUERY_STRING", "")
        try:
            given = query_values(QueryDict(query).lists()) if query else {}
            if self.keys:
                url_verify(keys=self.keys, path=environ["PATH_INFO"], params=given, now=time.time())
        except (ChartInvalid, SignatureRefused):
            return None  # Django answers 400 or 403
        if "wait" in given:
            return None  # Django checks its value
        known = LEARNT.find(stamp=links.stamp_read(self.stamp), key=url_key(slug, ext, given))
        if known is None:
            return None
        link = os.path.join(self.links, known.query_key)
        try:
            target = os.readlink(link)
            image = open(link, "rb")  # the server closes it
        except OSError:
            return None
        fixed = self.fixed.get((target, slug)) or self._fixed(target, slug, image)
        if fixed is None:
            image.close()
            return None
        fetch_id, rendered_at, headers = fixed
        now = time.time()
        age = now - rendered_at
        if (age >= known.max_age or known.stale) and not (
            fetch_id == known.fetch_id
            and now < known.stale_until
            and age < known.max_age + self.stale_if_error
        ):
            image.close()
            return None  # Django answers, and sees to the refresh
        seconds = int(max(0, age))
        if known.stale:
            caching = [("Cache-Control", "no-cache"), (STALE_HEADER, known.stale)]
        else:
            cache_control = (
                f"public, max-age={max(0, known.max_age - seconds)},"
                f" stale-while-revalidate={known.max_age}, stale-if-error={self.stale_if_error}"
            )
            caching = [("Cache-Control", cache_control)]
        head = environ["REQUEST_METHOD"] == "HEAD"
        # Django's HEAD answer has no file, hence no Content-Disposition (the last).
        headers = [("Age", str(seconds)), *caching, *(headers[:-1] if head else headers)]
        charts.VIEWS.add(chart_id=known.chart_id, query_key=known.query_key, fetch_id=fetch_id)
        (self.hit_head if head else self.hit_get).inc()
        metrics.CHART_VIEWS.inc()
        return image, headers

    def _fixed(
        self, target: str, slug: str, image: Any
    ) -> tuple[int, float, list[tuple[str, str]]] | None:
        # As views._chart_caching_headers and views._image_response make them.
        named = image_name_parse(target)
        if named is None:
            return None
        fetch_id, content_hash, extension = named
        stat = os.fstat(image.fileno())
        media_type = BY_EXTENSION[extension]
        headers = [
            ("Content-Type", media_type),
            ("Content-Length", str(stat.st_size)),
            ("ETag", f'"{content_hash}"'),
            ("Last-Modified", http_date(stat.st_mtime)),
            ("Content-Security-Policy", IMAGE_CSP),
            *self.security,
            ("Content-Disposition", f'inline; filename="{slug}{EXTENSIONS[media_type]}"'),
        ]
        if len(self.fixed) >= 10_000:
            self.fixed.clear()
        self.fixed[(target, slug)] = (fetch_id, stat.st_mtime, headers)
        return fetch_id, stat.st_mtime, headers
