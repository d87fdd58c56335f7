"""The admin's building blocks: read-only rows the service makes, rows with
an image, and the lists' filters."""

from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.db.models import F, Model, OuterRef, QuerySet, Subquery
from django.db.models.functions import Substr
from django.http import FileResponse, Http404, HttpRequest
from django.urls import NoReverseMatch, URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html

from imagecache.admin.display import image_response
from imagecache.labels import query_label_text
from imagecache.media import EXTENSIONS
from imagecache.models import Chart, ChartImage

# How much of a query's JSON a list reads for its label: enough for any real
# query, and a bound on what a page of long queries costs.
LABEL_SOURCE_MAX = 16 * 1024


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows the service makes: viewed, never added, edited or deleted by hand.

    Changes go through the actions, which call services and are allowed by
    the user's model permissions (see `has_purge_permission`)."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


class ImageRowAdmin(ReadOnlyAdmin):
    """A row with an image: `<id>/image/` serves it to staff (admin_view),
    expired or not, named `imagecache_<model>_image`."""

    def image_fetch_id(self, obj: Any) -> int:
        raise NotImplementedError

    def get_urls(self) -> list[URLPattern]:
        # Before the stock URLs: their "<path:object_id>/" would take this one.
        return [
            path(
                "<path:object_id>/image/",
                self.admin_site.admin_view(self.image_view),
                name=f"imagecache_{self.opts.model_name}_image",
            ),
            *super().get_urls(),
        ]

    def image_view(self, request: HttpRequest, object_id: str) -> FileResponse:
        obj = self.get_object(request, unquote(object_id))
        if obj is None or not self.has_view_permission(request, obj):
            raise Http404(f"No such {self.opts.verbose_name}")
        return image_response(self.image_fetch_id(obj))


class MediaTypeFilter(admin.SimpleListFilter):
    title = "media type"
    parameter_name = "media_type"
    field = "media_type"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(media_type, media_type) for media_type in EXTENSIONS]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value():
            return queryset.filter(**{self.field: self.value()})
        return queryset


class EntryMediaTypeFilter(MediaTypeFilter):
    field = "fetch__media_type"


class ExpiredFilter(admin.SimpleListFilter):
    title = "expired"
    parameter_name = "expired"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("no", "Live"), ("yes", "Expired (until pruned)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        now = timezone.now()
        if self.value() == "yes":
            return queryset.filter(expires_at__lte=now)
        if self.value() == "no":
            return queryset.filter(expires_at__gt=now)
        return queryset


class QueryLabelAdmin(admin.ModelAdmin):
    """Rows of a query (`query_path` leads from the row to its fetch) shown
    with its human label and the saved chart it belongs to (the chart image
    of the same query hash), read in the list's own query: no query per row."""

    query_path = ""

    def label_annotate(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        images = ChartImage.objects.filter(
            query_hash=OuterRef(f"{self.query_path}query_hash")
        ).order_by(F("viewed_at").desc(nulls_last=True), "pk")
        return queryset.annotate(
            label_source=Substr(f"{self.query_path}query_json", 1, LABEL_SOURCE_MAX),
            chart_slug=Subquery(images.values("chart__slug")[:1]),
            chart_pk=Subquery(images.values("chart_id")[:1]),
        )

    @admin.display(description="query")
    def query_label(self, obj: Any) -> str:
        return format_html("{}", query_label_text(getattr(obj, "label_source", None) or ""))

    @admin.display(description="chart")
    def chart(self, obj: Any) -> str | None:
        slug, pk = getattr(obj, "chart_slug", None), getattr(obj, "chart_pk", None)
        if slug is None:
            return None
        if self.admin_site.is_registered(Chart):
            try:
                url = reverse(
                    "admin:imagecache_chart_change", args=[pk], current_app=self.admin_site.name
                )
            except NoReverseMatch:
                return format_html("{}", slug)
            return format_html('<a href="{}">{}</a>', url, slug)
        return format_html("{}", slug)
