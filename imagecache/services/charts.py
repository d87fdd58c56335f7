"""Saved charts served by URL (`GET /charts/{slug}.{ext}`): the newest image
at once, refreshed in the background past the chart's max_age
(stale-while-revalidate), kept warm by the workers while someone watches.

Each (chart, format, parameter values) is a `ChartImage`: its own Kentik
query, whose newest ready fetch it points at. Only an image never rendered
waits, as `GET /image/{id}` waits: through an entry of its query and
`imagecache.waiting.ready`, so that `?wait=`, the 202 of `wait=0`,
stale-if-error and negative caching are the same code.

Views are counted in memory per process and written in batches by a thread
(`ViewCounts`): a wallboard's poll costs no write.
"""

import functools
import json
import logging
import math
import operator
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, Q, Value, When
from django.utils import timezone

from imagecache import chart_params
from imagecache.errors import ChartInvalid
from imagecache.files import links
from imagecache.hashing import canonical_json, query_hash
from imagecache.media import IMAGE_TYPES
from imagecache.models import (
    Chart,
    ChartActivity,
    ChartImage,
    Entry,
    Fetch,
    FetchPriority,
    FetchState,
)
from imagecache.ops import metrics
from imagecache.selectors.charts import (
    chart_get,
    chart_image_find,
    chart_images_watched,
    fetch_refresh_due,
)
from imagecache.services import entries, queue
from imagecache.services.housekeeping import (
    RemovalResult,
    fetch_files,
    fetches_delete_unused,
    files_delete,
)
from imagecache.waiting import ready

logger = logging.getLogger(__name__)

# The URL's extension -> Kentik's imageType.
KENTIK_TYPES = {image.extension: image.kentik for image in IMAGE_TYPES}
# How long before an image reaches its max_age the workers start its refresh
# (at most a tenth of max_age): about one render, so that the new image lands
# near max_age, neither later (a viewer would see an older one) nor much
# earlier (more calls than one per max_age).
KEEP_WARM_LEAD = 2.0
# How often the workers look for watched images to refresh (worker.py).
KEEP_WARM_INTERVAL = 2.0
# How often a process writes the views it counted.
VIEWS_FLUSH_INTERVAL = 5.0


@dataclass(frozen=True)
class ChartAnswer:
    """What answers a chart URL: the image's fetch, and, when an older image
    stands in because Kentik fails, why (as `ready.Answer.stale`)."""

    chart: Chart
    image: ChartImage
    fetch: Fetch
    stale: str = ""

    def age(self, now: datetime) -> int:
        finished = self.fetch.finished_at or now
        return max(0, int((now - finished).total_seconds()))

    def fresh_for(self, now: datetime) -> int:
        """Seconds left before the image reaches its chart's max_age."""
        return max(0, self.chart.max_age - self.age(now))


def chart_query(*, chart: Chart, image_type: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The query sent to Kentik for one format and set of values."""
    query = chart_params.query_fill(chart.query, values)
    if not isinstance(query, dict):
        raise ChartInvalid("query", "must be a JSON object")
    return {**query, "imageType": KENTIK_TYPES[image_type]}


def chart_image_get(
    *, slug: str, image_type: str, given: Mapping[str, str], wait: float | None = None
) -> ChartAnswer:
    """The newest image of a chart in a format with the given parameter values.

    Ready: answered at once whatever its age, and past the chart's max_age one
    refresh starts (last in line, within the shield). Never rendered (or older
    than max_age + STALE_IF_ERROR): waits as `GET /image/{id}` does, and
    raises as it does (FetchStillPending for `wait=0`, FetchFailed,
    FetchPending). ChartNotFound, or ChartInvalid naming the parameter, before
    anything costs a Kentik call.
    """
    if image_type not in KENTIK_TYPES:
        raise ChartInvalid("format", f"must be one of {', '.join(KENTIK_TYPES)}")
    chart = chart_get(slug=slug)
    values = chart_params.values_check(chart_params.params_parse(chart.params), given)
    query = chart_query(chart=chart, image_type=image_type, values=values)
    key = query_hash(query)
    now = timezone.now()
    image = chart_image_find(chart=chart, query_key=key) or _image_make(
        chart=chart, image_type=image_type, values=values, key=key, now=now
    )
    metrics.CHART_VIEWS.inc()
    fetch = image.fetch
    if fetch is not None and fetch.state == FetchState.READY and fetch.finished_at is not None:
        age = (now - fetch.finished_at).total_seconds()
        if age < chart.max_age + settings.STALE_IF_ERROR:
            VIEWS.add(chart_id=chart.pk, query_key=key, fetch_id=fetch.pk)
            stale = ""
            if age >= chart.max_age:
                _refresh(query=query, key=key, now=now, chart_id=chart.pk, viewer=True)
                if ready.held(fetch):
                    stale = "paused"
            entries.fetch_refresh_used(fetch=fetch, counter=metrics.CHART_REFRESHES_USED)
            return ChartAnswer(chart, image, fetch, stale)
    VIEWS.add(chart_id=chart.pk, query_key=key, fetch_id=None)
    return _first_render(chart=chart, image=image, query=query, wait=wait)


def _image_make(
    *, chart: Chart, image_type: str, values: Mapping[str, Any], key: str, now: datetime
) -> ChartImage:
    made = ChartImage(
        chart=chart,
        image_type=image_type,
        values_json=canonical_json(values).decode(),
        query_hash=key,
        viewed_at=now,
        created_at=now,
    )
    try:
        with transaction.atomic():
            made.save(force_insert=True)
        return made
    except IntegrityError:
        # Another view of the same image made it first.
        found = chart_image_find(chart=chart, query_key=key)
        assert found is not None
        return found


def _entry_ttl() -> int:
    # The entry only carries the first render's wait, and must outlive it.
    return max(60, math.ceil(settings.ENTRY_WAIT_TIMEOUT) + 5)


def _first_render(
    *, chart: Chart, image: ChartImage, query: dict[str, Any], wait: float | None
) -> ChartAnswer:
    entry = entries.entry_create(api_query=query, ttl=_entry_ttl())
    answer = ready.entry_get_ready(entry_id=entry.pk, wait=wait)
    if not answer.stale:
        _image_point(image=image, fetch=answer.fetch)
    return ChartAnswer(chart, image, answer.fetch, answer.stale)


def _image_point(*, image: ChartImage, fetch: Fetch) -> None:
    """Point the image at a ready fetch, unless it points at a newer one."""
    newer = Q(fetch__finished_at__gte=fetch.finished_at)
    if ChartImage.objects.filter(pk=image.pk).exclude(newer).update(fetch=fetch):
        # A query first asked for by a client may have been ready before its
        # chart image existed: the worker's `chart_images_point` never saw it.
        links.chart_images_link(query_key=image.query_hash, file_name=fetch.file_name)
    image.fetch = fetch


def _refresh(
    *, query: dict[str, Any], key: str, now: datetime, chart_id: int, viewer: bool
) -> bool:
    refresh = entries.fetch_refresh(query_key=key, query_json=json.dumps(query), now=now)
    if refresh is None:
        return False
    metrics.CHART_REFRESHES.labels("viewer" if viewer else "keep-warm").inc()
    logger.info(
        "fetch %s: refresh of chart %s (%s)",
        refresh.pk,
        chart_id,
        "viewer" if viewer else "keep-warm",
        extra={"fetch_id": refresh.pk, "chart_id": chart_id},
    )
    return True


def chart_images_point(*, fetch: Fetch) -> int:
    """A fetch became ready: the chart images of its query point at it, and
    their charts count a refresh. Called by the worker (services.storing)."""
    pointed = ChartImage.objects.filter(query_hash=fetch.query_hash)
    chart_ids = list(pointed.values_list("chart_id", flat=True))
    if not chart_ids:
        return 0
    count = pointed.update(fetch_id=fetch.pk)
    links.chart_images_link(query_key=fetch.query_hash, file_name=fetch.file_name)
    activity_add(counts=dict.fromkeys(chart_ids, 1), column="refreshes", now=timezone.now())
    return count


def chart_images_keep_warm() -> int:
    """Refresh the watched chart images (viewed within CHART_KEEP_WARM, at most
    CHART_WARM_MAX per chart) whose image reaches its max_age; how many
    refreshes started. Run every KEEP_WARM_INTERVAL by each worker: several
    workers start one refresh between them (`selectors.charts.fetch_refresh_due` and
    the one fetch in flight per query)."""
    if not settings.CHART_KEEP_WARM:
        return 0
    now = timezone.now()
    started = 0
    charts: dict[int, Chart] = {}
    for watched in chart_images_watched(now=now):
        lead = min(KEEP_WARM_LEAD, watched.max_age / 10)
        due_at = watched.finished_at + timedelta(seconds=watched.max_age - lead)
        if due_at > now:
            break  # oldest first: the rest are younger
        # A query Kentik refused is asked again after a max_age (or
        # NEGATIVE_TTL), not at every look.
        failed_since = now - timedelta(seconds=max(watched.max_age, settings.NEGATIVE_TTL))
        if not fetch_refresh_due(
            query_key=watched.query_hash, since=watched.finished_at, failed_since=failed_since
        ):
            continue
        chart = charts.get(watched.chart_id) or Chart.objects.filter(pk=watched.chart_id).first()
        if chart is None:
            continue
        charts[chart.pk] = chart
        query = chart_query(
            chart=chart, image_type=watched.image_type, values=json.loads(watched.values_json)
        )
        if query_hash(query) != watched.query_hash:
            continue  # the chart was edited: its viewers ask for the new query
        started += _refresh(
            query=query, key=watched.query_hash, now=now, chart_id=chart.pk, viewer=False
        )
    return started


def chart_refresh(
    *, chart: Chart, image_type: str = "png", given: Mapping[str, str] | None = None
) -> Fetch:
    """Render a chart now (the admin's refresh and preview): a fetch of its
    query in one format with the given values (else the defaults), ahead of
    refreshes; the one in flight if there is one. ChartInvalid when a value
    does not fit."""
    if image_type not in KENTIK_TYPES:
        raise ChartInvalid("format", f"must be one of {', '.join(KENTIK_TYPES)}")
    values = chart_params.values_check(chart_params.params_parse(chart.params), given or {})
    query = chart_query(chart=chart, image_type=image_type, values=values)
    key = query_hash(query)
    now = timezone.now()
    if chart_image_find(chart=chart, query_key=key) is None:
        _image_make(chart=chart, image_type=image_type, values=values, key=key, now=now)
    with transaction.atomic():
        fetch, created = entries.fetch_share(
            query_key=key, query_json=json.dumps(query), now=now, ready_too=False
        )
        if created:
            transaction.on_commit(lambda: queue.task_enqueue(fetch_id=fetch.pk))
    if created:
        metrics.CHART_REFRESHES.labels("operator").inc()
    return fetch


def chart_purge(*, chart: Chart) -> RemovalResult:
    """Drop a chart's images: its ChartImage rows, the entries of their queries
    (those of first renders, and any client's of the same query), and their
    fetches with their files. The next view renders anew."""
    with transaction.atomic():
        images = ChartImage.objects.filter(chart=chart)
        keys = set(images.values_list("query_hash", flat=True))
        images.delete()  # with their fast-path links (a post_delete receiver)
        fetch_ids = set(Fetch.objects.filter(query_hash__in=keys).values_list("pk", flat=True))
        entry_ids = list(Entry.objects.filter(fetch_id__in=fetch_ids).values_list("pk", flat=True))
        links.entries_unlink(entry_ids=entry_ids)
        entry_count, _ = Entry.objects.filter(pk__in=entry_ids).delete()
        orphans = fetches_delete_unused(fetch_ids=fetch_ids)
    files = fetch_files(orphans)
    transaction.on_commit(lambda: files_delete(files))
    logger.info("chart %s: purged %d images, %d fetches", chart.slug, len(keys), len(orphans))
    return RemovalResult.of(entries=entry_count, fetches=len(orphans), files=files)


def activity_add(
    *, counts: Mapping[int, int], column: Literal["views", "refreshes"], now: datetime
) -> None:
    """Add counts per chart to the hour's ChartActivity rows, in one statement."""
    if not counts:
        return
    table = ChartActivity._meta.db_table
    hour = connection.ops.adapt_datetimefield_value(now.replace(minute=0, second=0, microsecond=0))
    rows = ", ".join(["(%s, %s, %s, %s)"] * len(counts))
    params: list[Any] = []
    for chart_id, count in counts.items():
        params += [
            chart_id,
            hour,
            count if column == "views" else 0,
            count if column == "refreshes" else 0,
        ]
    sql = (
        f"INSERT INTO {table} (chart_id, hour, views, refreshes) VALUES {rows}"
        f" ON CONFLICT (chart_id, hour)"
        f" DO UPDATE SET {column} = {table}.{column} + excluded.{column}"
    )
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, params)
    except IntegrityError:
        # A chart deleted meanwhile: its counts go with it.
        logger.info("chart activity not recorded: a chart was deleted meanwhile")


class ViewCounts:
    """The views of this process since its last write: per chart (activity),
    the images viewed (what keeps them warm) and their fetches (eviction's
    clock, and the refreshes a viewer used). Written every `interval` by a
    thread of each process's own, so that no request waits for the database
    (with an infinite interval, only when `flush` is called: the tests)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._views: dict[int, int] = {}
        # Per image (chart and query hash), its last view here (a unix
        # time: cheaper than a datetime on the fast path's every answer).
        self._images: dict[tuple[int, str], float] = {}
        self._fetches: set[int] = set()
        # The process whose writer runs: a forked web worker starts its own.
        self._writer_pid = 0

    def add(self, *, chart_id: int, query_key: str, fetch_id: int | None) -> None:
        with self._lock:
            self._views[chart_id] = self._views.get(chart_id, 0) + 1
            self._images[(chart_id, query_key)] = time.time()
            if fetch_id is not None:
                self._fetches.add(fetch_id)
            start = self._writer_pid != os.getpid() and math.isfinite(self.interval)
            if start:
                self._writer_pid = os.getpid()
        if start:
            threading.Thread(target=self._write, name="chart-views", daemon=True).start()

    def _write(self) -> None:
        while True:
            time.sleep(self.interval)
            try:
                self.flush()
            except Exception:  # the writer must outlive a database hiccup
                # Counts are worth less than the answers: dropped, and said.
                logger.warning("Chart views were not recorded", exc_info=True)
            finally:
                connection.close()

    def flush(self) -> None:
        with self._lock:
            views, self._views = self._views, {}
            images, self._images = self._images, {}
            fetches, self._fetches = self._fetches, set()
        now = timezone.now()
        if images:
            which = [Q(chart_id=chart_id, query_hash=key) for chart_id, key in images]
            last = Case(
                *(
                    When(q, then=Value(datetime.fromtimestamp(at, UTC)))
                    for q, at in zip(which, images.values(), strict=True)
                )
            )
            ChartImage.objects.filter(functools.reduce(operator.or_, which)).update(viewed_at=last)
        entries.fetches_mark_read(fetch_ids=fetches)
        # Views the fast path answered cannot see a fetch's priority: a
        # keep-warm refresh they showed is counted as used here.
        used = Fetch.objects.filter(pk__in=fetches, priority=FetchPriority.REFRESH).update(
            priority=FetchPriority.NORMAL
        )
        metrics.CHART_REFRESHES_USED.inc(used)
        activity_add(counts=views, column="views", now=now)


VIEWS = ViewCounts(VIEWS_FLUSH_INTERVAL)
