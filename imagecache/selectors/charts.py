"""Reads of saved charts: a chart and its images, what keep-warm watches,
what a chart's page and the admin's list show."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import F, OuterRef, Q, QuerySet, Subquery, Sum, Window
from django.db.models.functions import Coalesce, RowNumber

from imagecache.errors import ChartNotFound
from imagecache.models import IN_FLIGHT, Chart, ChartActivity, ChartImage, Fetch, FetchState


def chart_get(*, slug: str) -> Chart:
    """A saved chart by its slug; ChartNotFound if there is none."""
    chart = Chart.objects.filter(slug=slug).first()
    if chart is None:
        raise ChartNotFound()
    return chart


def chart_image_find(*, chart: Chart, query_key: str) -> ChartImage | None:
    """The image of a chart for one query (format and values), with its
    newest ready fetch."""
    return (
        ChartImage.objects.select_related("fetch").filter(chart=chart, query_hash=query_key).first()
    )


@dataclass(frozen=True)
class WarmImage:
    """A chart image that viewers watch, with what its refresh needs."""

    image_id: int
    chart_id: int
    query_hash: str
    image_type: str
    values_json: str
    finished_at: datetime
    max_age: int


def chart_images_watched(*, now: datetime) -> list[WarmImage]:
    """The rendered chart images viewed within CHART_KEEP_WARM, at most
    CHART_WARM_MAX per chart (the most recently viewed), oldest image first."""
    since = now - timedelta(seconds=settings.CHART_KEEP_WARM)
    ranked = (
        ChartImage.objects.filter(viewed_at__gte=since, fetch__state=FetchState.READY)
        .annotate(
            rank=Window(
                RowNumber(), partition_by=[F("chart_id")], order_by=[F("viewed_at").desc(), "pk"]
            )
        )
        .filter(rank__lte=settings.CHART_WARM_MAX)
        .order_by("fetch__finished_at")
        .values_list(
            "pk",
            "chart_id",
            "query_hash",
            "image_type",
            "values_json",
            "fetch__finished_at",
            "chart__max_age",
        )
    )
    return [
        WarmImage(pk, chart_id, key, image_type, values, finished, max_age)
        for pk, chart_id, key, image_type, values, finished, max_age in ranked
        if finished is not None  # a ready fetch has one
    ]


def fetch_refresh_due(*, query_key: str, since: datetime, failed_since: datetime) -> bool:
    """Whether a query may be refreshed now: none of its fetches is in flight,
    none finished ready after `since` (another worker refreshed it
    meanwhile), and Kentik did not refuse it (not a transient failure) after
    `failed_since`."""
    recent = Fetch.objects.filter(query_hash=query_key).filter(
        Q(state__in=IN_FLIGHT)
        | Q(state=FetchState.READY, finished_at__gt=since)
        | Q(state=FetchState.FAILED, error_transient=False, finished_at__gt=failed_since)
    )
    return not recent.exists()


def charts_list() -> list[Chart]:
    """Every saved chart, by slug."""
    return list(Chart.objects.order_by("slug"))


@dataclass(frozen=True)
class ChartRender:
    """A chart's last render in one format with one set of values, for its page."""

    image_type: str
    state: str  # of its newest fetch: pending, fetching, ready, failed; "never"
    rendered_at: datetime | None  # of its newest ready image
    size: int | None
    media_type: str | None


def chart_renders(*, chart: Chart, values_json: str, image_types: list[str]) -> list[ChartRender]:
    """Per format, the last render of a chart with these values (canonical JSON)."""
    images = {
        image.image_type: image
        for image in ChartImage.objects.select_related("fetch").filter(
            chart=chart, values_json=values_json, image_type__in=image_types
        )
    }
    # Oldest first: the newest fetch of each query is the one the dict keeps.
    newest = dict(
        Fetch.objects.filter(query_hash__in=[image.query_hash for image in images.values()])
        .order_by("created_at", "pk")
        .values_list("query_hash", "state")
    )
    renders = []
    for image_type in image_types:
        image = images.get(image_type)
        fetch = image.fetch if image is not None else None
        renders.append(
            ChartRender(
                image_type=image_type,
                state=newest.get(image.query_hash, "never") if image is not None else "never",
                rendered_at=fetch.finished_at if fetch is not None else None,
                size=fetch.size if fetch is not None else None,
                media_type=fetch.media_type if fetch is not None else None,
            )
        )
    return renders


def charts_with_activity(*, since: datetime) -> QuerySet[Chart]:
    """The charts with, for the admin's list: views and refreshes (Kentik
    calls) since `since`, the last render, and the state of the newest fetch
    of any of their images. Subqueries, not joins: two joined sums would
    multiply each other's rows."""
    activity = ChartActivity.objects.filter(chart=OuterRef("pk"), hour__gte=since).values("chart")
    images = ChartImage.objects.filter(chart=OuterRef(OuterRef("pk"))).values("query_hash")
    return Chart.objects.annotate(
        views_day=Coalesce(Subquery(activity.annotate(n=Sum("views")).values("n")), 0),
        refreshes_day=Coalesce(Subquery(activity.annotate(n=Sum("refreshes")).values("n")), 0),
        last_render=Subquery(
            ChartImage.objects.filter(chart=OuterRef("pk"), fetch__isnull=False)
            .order_by("-fetch__finished_at")
            .values("fetch__finished_at")[:1]
        ),
        newest_state=Subquery(
            Fetch.objects.filter(query_hash__in=Subquery(images))
            .order_by("-created_at", "-pk")
            .values("state")[:1]
        ),
    )
